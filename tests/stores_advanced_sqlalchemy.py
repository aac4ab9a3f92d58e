"""AdvancedSQLAlchemySession as stores of the shared contract suite: SQLite files and PostgreSQL.

The advanced tables have fixed names (``message_structure``, ...), so each PostgreSQL store
lives in a schema of its own (the connections' ``search_path``), dropped when it closes.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from encmem.backends import AdvancedSQLAlchemySession

from .pg import pg_url, run_sync
from .stores import Store, sqlite_raw_messages


class PgSchema:
    """A fresh PostgreSQL schema on the test server, for one test's tables."""

    def __init__(self) -> None:
        self.url = pg_url()  # skips (or fails under CI=true) without a server
        self.name = f"t{uuid.uuid4().hex[:12]}"
        run_sync(self.url, f"CREATE SCHEMA {self.name}")

    def engine_kwargs(self, **extra: Any) -> dict[str, Any]:
        """Options that put every connection in this schema."""
        settings = {"search_path": self.name}
        return {"connect_args": {"server_settings": settings}, **extra}

    @property
    def prefix(self) -> str:
        """What goes before a table name to name it in this schema."""
        return f"{self.name}."

    def query(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one statement (tables named with :attr:`prefix`) on a connection of its own."""
        return run_sync(self.url, statement, params)

    def drop(self) -> None:
        run_sync(self.url, f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


class AdvancedSQLAlchemySQLiteStore(Store):
    """sqlite+aiosqlite on a file; sessions share the engine from_url keeps for the URL."""

    name = "advanced-sqlalchemy-sqlite"
    has_raw = True

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.path = tmp / "advanced-sqlalchemy.db"
        self.url = f"sqlite+aiosqlite:///{self.path}"

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        return AdvancedSQLAlchemySession.from_url(
            session_id, url=self.url, create_tables=True, **kwargs
        )

    def raw_messages(self, session_id: str) -> list[str]:
        return sqlite_raw_messages(self.path, session_id)


class AdvancedSQLAlchemyPostgresStore(Store):
    """postgresql+asyncpg on the test server, in a schema of its own."""

    name = "advanced-sqlalchemy-pg"
    has_raw = True

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.schema = PgSchema()

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        return AdvancedSQLAlchemySession.from_url(
            session_id,
            url=self.schema.url,
            engine_kwargs=self.schema.engine_kwargs(),
            create_tables=True,
            **kwargs,
        )

    def raw_messages(self, session_id: str) -> list[str]:
        rows = self.schema.query(
            f"SELECT message_data FROM {self.schema.prefix}agent_messages "
            "WHERE session_id = :sid ORDER BY id",
            {"sid": session_id},
        )
        return [row[0] for row in rows]

    async def aclose(self) -> None:
        await super().aclose()
        self.schema.drop()


STORES = {
    "advanced-sqlalchemy-sqlite": AdvancedSQLAlchemySQLiteStore,
    "advanced-sqlalchemy-pg": AdvancedSQLAlchemyPostgresStore,
}
