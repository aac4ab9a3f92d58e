"""AdvancedSQLAlchemySession as stores of the shared contract suite: SQLite files and PostgreSQL.

The advanced tables have fixed names (``message_structure``, ...), so each PostgreSQL store
lives in a schema of its own (the connections' ``search_path``), dropped when it closes.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from encmem.backends import AdvancedSQLAlchemySession, AdvancedSQLiteSession

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

class Place:
    """Where advanced sessions live: a SQLite file (through aiosqlite, or AdvancedSQLiteSession's
    own connection with kind ``native``), or a schema on the test PostgreSQL server."""

    def __init__(self, kind: str, tmp: Path, name: str = "advanced") -> None:
        self.kind = kind
        if kind == "pg":
            self.schema: PgSchema | None = PgSchema()
            self.path: Any = self.schema
            self.url = self.schema.url
            self.engine_kwargs: dict[str, Any] = self.schema.engine_kwargs()
        else:
            self.schema = None
            self.path = tmp / f"{name}.db"
            self.url = f"sqlite+aiosqlite:///{self.path}"
            self.engine_kwargs = {}

    def backend(self, session_id: str, **kwargs: Any) -> Any:
        kwargs.setdefault("create_tables", True)
        if self.kind == "native":
            return AdvancedSQLiteSession(session_id=session_id, db_path=self.path, **kwargs)
        return AdvancedSQLAlchemySession.from_url(
            session_id, url=self.url, engine_kwargs=self.engine_kwargs, **kwargs
        )

    def drop(self) -> None:
        if self.schema is not None:
            self.schema.drop()


PLACES = [("advanced-sqlalchemy-sqlite", "sqlite"), ("advanced-sqlalchemy-pg", "pg")]
"""AdvancedSQLAlchemySession's places, each as (store kind, place kind)."""

ADVANCED_PLACES = [("advanced-sqlite", "native"), *PLACES]
"""Every advanced backend's places: AdvancedSQLiteSession's first."""


STORES = {
    "advanced-sqlalchemy-sqlite": AdvancedSQLAlchemySQLiteStore,
    "advanced-sqlalchemy-pg": AdvancedSQLAlchemyPostgresStore,
}
