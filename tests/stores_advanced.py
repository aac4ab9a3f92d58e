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


def structure_problems(db_path: Any) -> list[str]:
    """Every inconsistency between the advanced tables and the base tables of a database file."""
    checks = {
        "structure row without its message": """SELECT COUNT(*) FROM message_structure s
            WHERE NOT EXISTS (SELECT 1 FROM agent_messages m WHERE m.id = s.message_id)""",
        "message without a structure row": """SELECT COUNT(*) FROM agent_messages m
            WHERE NOT EXISTS (SELECT 1 FROM message_structure s WHERE s.message_id = m.id)""",
        "usage row of a turn without messages": """SELECT COUNT(*) FROM turn_usage u
            WHERE NOT EXISTS (SELECT 1 FROM message_structure s WHERE s.session_id = u.session_id
                AND s.branch_id = u.branch_id AND s.user_turn_number = u.user_turn_number)""",
        "structure row of a branch that does not exist": """SELECT COUNT(*)
            FROM message_structure s WHERE NOT EXISTS (SELECT 1 FROM session_branches b
                WHERE b.session_id = s.session_id AND b.branch_id = s.branch_id
                AND b.deleted_at IS NULL)""",
        "row of a session that does not exist": """SELECT
            (SELECT COUNT(*) FROM message_structure WHERE session_id NOT IN
                (SELECT session_id FROM agent_sessions))
            + (SELECT COUNT(*) FROM turn_usage WHERE session_id NOT IN
                (SELECT session_id FROM agent_sessions))
            + (SELECT COUNT(*) FROM session_branches WHERE session_id NOT IN
                (SELECT session_id FROM agent_sessions))""",
    }
    problems: list[str] = []
    with sqlite3.connect(db_path) as conn:
        for name, query in checks.items():
            count = conn.execute(query).fetchone()[0]
            if count:
                problems.append(f"{count} x {name}")
        if conn.execute("PRAGMA foreign_key_check").fetchall():
            problems.append("foreign key violations")
    return problems


def table_counts(db_path: Any, session_id: str) -> dict[str, int]:
    """Rows of ``session_id`` in each table."""
    tables = ("agent_sessions", "agent_messages", "message_structure", "turn_usage",
              "session_branches")
    with sqlite3.connect(db_path) as conn:
        return {
            table: conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            for table in tables
        }
