"""A whole SQLAlchemy database of sessions, for store-wide maintenance and the command."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from encmem.errors import NotASessionStoreError

from ._identifiers import check_table_name
from .sqlalchemy import SQLAlchemySession


class SQLAlchemySessionStore:
    """Every session in the session tables of one database URL."""

    def __init__(
        self,
        url: str,
        *,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
    ) -> None:
        self.sessions_table = check_table_name(sessions_table, "sessions_table")
        self.messages_table = check_table_name(messages_table, "messages_table")
        self.engine = create_async_engine(url)
        self._sessions: list[SQLAlchemySession] = []
        self._tables: list[str] = []

    async def check(self) -> SQLAlchemySessionStore:
        """Fail with a clear error unless the database holds the session tables."""

        def tables(conn: Connection) -> list[str]:
            return list(inspect(conn).get_table_names())

        try:
            async with self.engine.connect() as conn:
                names = await conn.run_sync(tables)
        except (SQLAlchemyError, OSError) as exc:
            await self.engine.dispose()
            raise NotASessionStoreError(
                f"cannot open the database ({type(exc).__name__}); check the URL and that the "
                "server is running"
            ) from None
        missing = {self.sessions_table, self.messages_table} - set(names)
        if missing:
            await self.engine.dispose()
            raise NotASessionStoreError(
                f"the database has no {', '.join(sorted(missing))} table; it is not a session "
                "store (or pass --sessions-table / --messages-table)"
            )
        self._tables = names
        return self

    async def _session_tables(self) -> list[str]:
        def with_session_id(conn: Connection) -> list[str]:
            inspector = inspect(conn)
            return [
                name
                for name in inspector.get_table_names()
                if any(col["name"] == "session_id" for col in inspector.get_columns(name))
            ]

        async with self.engine.connect() as conn:
            return await conn.run_sync(with_session_id)

    async def session_ids(self) -> list[str]:
        s, m = self.sessions_table, self.messages_table
        query = text(
            f"SELECT session_id FROM {s} UNION SELECT DISTINCT session_id FROM {m} ORDER BY 1"
        )
        async with self.engine.connect() as conn:
            return [row[0] for row in await conn.execute(query)]

    async def count_items(self) -> int:
        async with self.engine.connect() as conn:
            result = await conn.execute(text(f"SELECT COUNT(*) FROM {self.messages_table}"))
            return int(result.scalar_one())

    def session(self, session_id: str) -> Any:
        session = SQLAlchemySession(
            session_id,
            engine=self.engine,
            create_tables=False,
            sessions_table=self.sessions_table,
            messages_table=self.messages_table,
        )
        self._sessions.append(session)
        return session

    async def erase_session(self, session_id: str) -> int:
        tables = await self._session_tables()
        ordered = sorted(tables, key=lambda name: name == self.sessions_table)
        removed = 0
        async with self.engine.begin() as conn:
            for table in ordered:
                check_table_name(table, "table")
                result = await conn.execute(
                    text(f"DELETE FROM {table} WHERE session_id = :sid"), {"sid": session_id}
                )
                removed += max(result.rowcount or 0, 0)
        return removed

    async def aclose(self) -> None:
        for session in self._sessions:
            await session.close()
        self._sessions.clear()
        await self.engine.dispose()
