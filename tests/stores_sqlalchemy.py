"""SQLAlchemySession as stores of the shared contract suite: over SQLite files and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from encmem.backends._sqlalchemy import SQLAlchemySession

from .pg import drop_tables, pg_url, run_sync, unique_tables
from .stores import Store, sqlite_raw_messages


class SQLAlchemySQLiteStore(Store):
    """sqlite+aiosqlite on a file; every open makes its own engine, so reopen is real."""

    name = "sqlalchemy-sqlite"
    has_raw = True

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.path = tmp / "sqlalchemy.db"
        self.url = f"sqlite+aiosqlite:///{self.path}"

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        return SQLAlchemySession.from_url(session_id, url=self.url, create_tables=True, **kwargs)

    def raw_messages(self, session_id: str) -> list[str]:
        return sqlite_raw_messages(self.path, session_id)


class SQLAlchemyPostgresStore(Store):
    """postgresql+asyncpg on the test server, in tables of its own; one engine for the store."""

    name = "sqlalchemy-pg"
    has_raw = True

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.url = pg_url()  # skips (or fails under CI=true) without a server
        self.tables = unique_tables()
        self.engine: Any = None

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        from sqlalchemy.ext.asyncio import create_async_engine

        if self.engine is None:
            self.engine = create_async_engine(self.url)
        options = {**self.tables, "create_tables": True, **kwargs}
        return SQLAlchemySession(session_id, engine=self.engine, **options)

    def raw_messages(self, session_id: str) -> list[str]:
        rows = run_sync(
            self.url,
            f"SELECT message_data FROM {self.tables['messages_table']} "
            "WHERE session_id = :sid ORDER BY id",
            {"sid": session_id},
        )
        return [row[0] for row in rows]

    async def aclose(self) -> None:
        await super().aclose()
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
            drop_tables(self.url, [self.tables["messages_table"], self.tables["sessions_table"]])


STORES = {"sqlalchemy-sqlite": SQLAlchemySQLiteStore, "sqlalchemy-pg": SQLAlchemyPostgresStore}
