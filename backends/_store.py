"""Whole session databases, for store-wide maintenance: list sessions, open them, erase one.

``open_store(target)`` takes a SQLite file path or a SQLAlchemy URL. A SQLite file that has
the advanced tables is opened with AdvancedSQLiteSession, so maintenance keeps branches and
turn structure consistent.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from encmem._protocol import SessionStore
from encmem.errors import NotASessionStoreError

from . import _sqlite_connection as connections
from ._identifiers import check_table_name, quote_identifier
from ._sqlite import SQLiteSession

_URL_SCHEMES = ("sqlite+", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def _session_tables(conn: sqlite3.Connection) -> list[str]:
    """Tables with a session_id column, the ones an erase must reach."""
    names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [
        name
        for name in names
        if conn.execute(
            "SELECT 1 FROM pragma_table_info(?) WHERE name = 'session_id'", (name,)
        ).fetchone()
    ]


class SQLiteSessionStore:
    """Every session in one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        busy_timeout: float = connections.BUSY_TIMEOUT_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.sessions_table = check_table_name(sessions_table, "sessions_table")
        self.messages_table = check_table_name(messages_table, "messages_table")
        self.advanced = False
        self._shared = connections.acquire(self.path, busy_timeout)
        self._sessions: list[SQLiteSession] = []
        self._released = False

    async def check(self) -> SQLiteSessionStore:
        """Fail with a clear error unless the file holds the session tables."""
        if not self.path.is_file():
            raise NotASessionStoreError(
                f"{str(self.path)!r} is not a file; give a SQLite database path"
            )
        try:
            await self._shared.start()
        except sqlite3.DatabaseError as exc:
            raise NotASessionStoreError(
                f"{str(self.path)!r} is not a SQLite database ({exc})"
            ) from None

        def inspect(conn: sqlite3.Connection) -> set[str]:
            try:
                return {
                    r[0]
                    for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                }
            except sqlite3.DatabaseError as exc:
                raise NotASessionStoreError(
                    f"{str(self.path)!r} is not a SQLite database ({exc})"
                ) from None

        tables = await self._shared.run(inspect)
        missing = {self.sessions_table, self.messages_table} - tables
        if missing:
            raise NotASessionStoreError(
                f"{str(self.path)!r} has no {', '.join(sorted(missing))} table; it is not a "
                "session store (or pass --sessions-table / --messages-table)"
            )
        self.advanced = "message_structure" in tables
        return self

    async def session_ids(self) -> list[str]:
        s, m = self.sessions_table, self.messages_table
        rows = await self._shared.run(
            lambda conn: conn.execute(
                f"SELECT session_id FROM {s} UNION SELECT DISTINCT session_id FROM {m} ORDER BY 1"
            ).fetchall()
        )
        return [row[0] for row in rows]

    async def count_items(self) -> int:
        m = self.messages_table
        row = await self._shared.run(
            lambda conn: conn.execute(f"SELECT COUNT(*) FROM {m}").fetchone()
        )
        return int(row[0])

    def session(self, session_id: str) -> SQLiteSession:
        if self.advanced:
            from ._advanced_sqlite import AdvancedSQLiteSession

            session: SQLiteSession = AdvancedSQLiteSession(
                session_id=session_id,
                db_path=self.path,
                create_tables=False,
                sessions_table=self.sessions_table,
                messages_table=self.messages_table,
            )
        else:
            session = SQLiteSession(
                session_id,
                self.path,
                sessions_table=self.sessions_table,
                messages_table=self.messages_table,
            )
        self._sessions.append(session)
        return session

    async def erase_session(self, session_id: str) -> int:
        def delete_rows(conn: sqlite3.Connection) -> int:
            removed = 0
            tables = _session_tables(conn)
            # Children first, so foreign keys never see a dangling parent.
            for table in sorted(tables, key=lambda t: t == self.sessions_table):
                cursor = conn.execute(
                    f"DELETE FROM {quote_identifier(table)} WHERE session_id = ?",
                    (session_id,),
                )
                removed += max(cursor.rowcount, 0)
            return removed

        def erase(conn: sqlite3.Connection) -> int:
            removed = connections.immediate(conn, delete_rows)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return removed

        await self._shared.start()
        result: int = await self._shared.run(erase)
        return result

    async def aclose(self) -> None:
        """Close every session opened through the store, then the store's connection."""
        if self._released:
            return
        self._released = True
        for session in self._sessions:
            await session.close()
        self._sessions.clear()
        closing = connections.release(self._shared)
        if closing is not None:
            await closing

    async def close(self) -> None:
        """The same as :meth:`aclose`."""
        await self.aclose()

    async def __aenter__(self) -> SQLiteSessionStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _is_url(target: str) -> bool:
    return "://" in target and target.split("://", 1)[0].startswith(_URL_SCHEMES)


async def open_store(
    target: str | Path,
    *,
    sessions_table: str = "agent_sessions",
    messages_table: str = "agent_messages",
    busy_timeout: float = connections.BUSY_TIMEOUT_SECONDS,
) -> SessionStore:
    """Open a session database by SQLite path or SQLAlchemy URL, checking it holds sessions."""
    text = str(target)
    if _is_url(text):
        from ._sqlalchemy_store import SQLAlchemySessionStore

        return await SQLAlchemySessionStore(
            text, sessions_table=sessions_table, messages_table=messages_table
        ).check()
    store = SQLiteSessionStore(
        text,
        sessions_table=sessions_table,
        messages_table=messages_table,
        busy_timeout=busy_timeout,
    )
    try:
        return await store.check()
    except BaseException:
        await store.aclose()
        raise
