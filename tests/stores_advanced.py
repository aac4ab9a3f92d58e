"""AdvancedSQLiteSession as a store of the shared contract suite (plain and encrypted)."""

from __future__ import annotations

import sqlite3
from typing import Any

from encmem.backends import AdvancedSQLiteSession

from .stores import SQLiteStore


class AdvancedStore(SQLiteStore):
    name = "advanced"

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        return AdvancedSQLiteSession(
            session_id=session_id, db_path=self.path, create_tables=True, **kwargs
        )


STORES = {"advanced": AdvancedStore}


_TABLES = ("agent_sessions", "agent_messages", "message_structure", "turn_usage",
           "session_branches")

_CHECKS = {
    "structure row without its message": """SELECT COUNT(*) FROM {p}message_structure s
        WHERE NOT EXISTS (SELECT 1 FROM {p}agent_messages m WHERE m.id = s.message_id)""",
    "message without a structure row": """SELECT COUNT(*) FROM {p}agent_messages m
        WHERE NOT EXISTS (SELECT 1 FROM {p}message_structure s WHERE s.message_id = m.id)""",
    "usage row of a turn without messages": """SELECT COUNT(*) FROM {p}turn_usage u
        WHERE NOT EXISTS (SELECT 1 FROM {p}message_structure s
            WHERE s.session_id = u.session_id AND s.branch_id = u.branch_id
            AND s.user_turn_number = u.user_turn_number)""",
    "structure row of a branch that does not exist": """SELECT COUNT(*)
        FROM {p}message_structure s WHERE NOT EXISTS (SELECT 1 FROM {p}session_branches b
            WHERE b.session_id = s.session_id AND b.branch_id = s.branch_id
            AND b.deleted_at IS NULL)""",
    "row of a session that does not exist": """SELECT
        (SELECT COUNT(*) FROM {p}message_structure WHERE session_id NOT IN
            (SELECT session_id FROM {p}agent_sessions))
        + (SELECT COUNT(*) FROM {p}turn_usage WHERE session_id NOT IN
            (SELECT session_id FROM {p}agent_sessions))
        + (SELECT COUNT(*) FROM {p}session_branches WHERE session_id NOT IN
            (SELECT session_id FROM {p}agent_sessions))""",
}


def structure_problems(db: Any) -> list[str]:
    """Every inconsistency between the advanced tables and the base tables of a database:
    a SQLite file's path, or a server database with ``query(sql, params)`` and ``prefix``."""
    problems: list[str] = []
    if hasattr(db, "query"):
        for name, query in _CHECKS.items():
            count = db.query(query.format(p=db.prefix))[0][0]
            if count:
                problems.append(f"{count} x {name}")
        return problems  # a server enforces its foreign keys itself
    with sqlite3.connect(db) as conn:
        for name, query in _CHECKS.items():
            count = conn.execute(query.format(p="")).fetchone()[0]
            if count:
                problems.append(f"{count} x {name}")
        if conn.execute("PRAGMA foreign_key_check").fetchall():
            problems.append("foreign key violations")
    return problems


def table_counts(db: Any, session_id: str) -> dict[str, int]:
    """Rows of ``session_id`` in each table (of a SQLite file, or a server database)."""
    if hasattr(db, "query"):
        return {
            table: int(db.query(
                f"SELECT COUNT(*) FROM {db.prefix}{table} WHERE session_id = :sid",
                {"sid": session_id},
            )[0][0])
            for table in _TABLES
        }  # fmt: skip
    with sqlite3.connect(db) as conn:
        return {
            table: conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            for table in _TABLES
        }
