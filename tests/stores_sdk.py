"""Sessions users already run in production, as stores of the shared contract suite.

Each is the Agents SDK's own class (or a user's own minimal ``SessionABC`` subclass) exactly
as its users construct it. They run the contract only wrapped in encmem's
``EncryptedSession`` (``encrypted_only``): unwrapped, they keep the SDK's own behaviour
(negative limits accepted, no item validation), which is not encmem's contract; wrapped,
encmem supplies what they lack. ``known_limits`` names contract tests a wrapped class
cannot pass because of the class itself (none at present).

The PostgreSQL and Redis stores need real servers: ``make test`` starts them and exports
ENCMEM_TEST_PG_URL and ENCMEM_TEST_REDIS_URL. Without a URL those stores are skipped,
except under CI=true, where a missing server fails the run.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any, ClassVar

import agents
import pytest
from agents.extensions.memory import AdvancedSQLiteSession
from agents.extensions.memory.async_sqlite_session import AsyncSQLiteSession
from agents.memory.session import SessionABC
from agents.memory.session_settings import SessionSettings

from .pg import NO_SERVERS_ENV, drop_tables, pg_url, unique_tables
from .stores import SQLiteStore, Store


def server_url(variable: str, what: str) -> str:
    """The URL of a test server from the environment; skip without it (fail under CI)."""
    url = os.environ.get(variable, "")
    if url:
        return url
    message = f"{variable} is not set: no {what} server to test against (make test starts one)"
    if os.environ.get(NO_SERVERS_ENV):
        pytest.fail(f"this test needs {what} but is not marked for it, so make test-fast ran it")
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; under CI=true that fails the run", pytrace=False)
    pytest.skip(message)


class SDKStore(Store):
    """A store whose sessions are SDK classes: contract only under EncryptedSession."""

    encrypted_only: ClassVar[bool] = True
    known_limits: ClassVar[frozenset[str]] = frozenset()


class SDKSQLiteStore(SDKStore, SQLiteStore):
    """``agents.SQLiteSession`` on a file."""

    name = "sdk-sqlite"

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        return agents.SQLiteSession(session_id, str(self.path), **kwargs)


class SDKAsyncSQLiteStore(SDKStore, SQLiteStore):
    """``agents.extensions.memory.AsyncSQLiteSession`` on a file."""

    name = "sdk-async-sqlite"

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        return AsyncSQLiteSession(session_id, str(self.path), **kwargs)


class SDKAdvancedStore(SDKStore, SQLiteStore):
    """``agents.extensions.memory.AdvancedSQLiteSession`` on a file."""

    name = "sdk-advanced"

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        return AdvancedSQLiteSession(
            session_id=session_id, db_path=str(self.path), create_tables=True, **kwargs
        )


class SDKSQLAlchemyStore(SDKStore):
    """``agents.extensions.memory.SQLAlchemySession`` on one engine per store.

    The SDK class has no ``close()``: the engine is the user's to dispose of, so the store
    owns it and disposes of it at the end, as an application would.
    """

    name = "sdk-sqlalchemy"
    has_raw = True
    sessions_table = "agent_sessions"
    messages_table = "agent_messages"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.url = self.database_url()
        self.engine: Any = None

    def database_url(self) -> str:
        raise NotImplementedError

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        from agents.extensions.memory import SQLAlchemySession
        from sqlalchemy.ext.asyncio import create_async_engine

        if self.engine is None:
            self.engine = create_async_engine(self.url)
        return SQLAlchemySession(
            session_id,
            engine=self.engine,
            create_tables=True,
            sessions_table=self.sessions_table,
            messages_table=self.messages_table,
            **kwargs,
        )

    def raw_messages(self, session_id: str) -> list[str]:
        raise NotImplementedError

    async def raw_rows(self, session_id: str) -> list[str]:
        """The stored message_data of a session, oldest first, read past the SDK class."""
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    f"SELECT message_data FROM {self.messages_table} "
                    "WHERE session_id = :sid ORDER BY id"
                ),
                {"sid": session_id},
            )
            return [row[0] for row in rows]

    async def aclose(self) -> None:
        await super().aclose()
        if self.engine is not None:
            await self.engine.dispose()


class SDKSQLAlchemySQLiteStore(SDKSQLAlchemyStore):
    """SQLAlchemySession on ``sqlite+aiosqlite``."""

    name = "sdk-sqlalchemy-sqlite"

    def database_url(self) -> str:
        self.path = self.tmp / "sqlalchemy.db"
        return f"sqlite+aiosqlite:///{self.path}"

    def raw_messages(self, session_id: str) -> list[str]:
        with sqlite3.connect(self.path) as conn:
            rows = conn.execute(
                f"SELECT message_data FROM {self.messages_table} WHERE session_id = ? ORDER BY id",
                (session_id,),
            ).fetchall()
        return [row[0] for row in rows]


class SDKSQLAlchemyPostgresStore(SDKSQLAlchemyStore):
    """SQLAlchemySession on the test PostgreSQL (``postgresql+asyncpg``).

    Tables of its own (fresh names per store, dropped at the end), so it never meets the
    tables of encmem's SQLAlchemy backend or of another test in the same database.
    """

    name = "sdk-sqlalchemy-pg"
    has_raw = False

    def database_url(self) -> str:
        url = pg_url()
        tables = unique_tables()
        self.sessions_table = tables["sessions_table"]
        self.messages_table = tables["messages_table"]
        return url

    async def aclose(self) -> None:
        await super().aclose()
        if self.engine is not None:
            drop_tables(self.url, [self.messages_table, self.sessions_table])


class SDKRedisStore(SDKStore):
    """``agents.extensions.memory.RedisSession.from_url`` on the test Redis server.

    Every store gets its own key prefix and deletes its keys at the end.
    """

    name = "sdk-redis"

    def __init__(self, tmp: Path, **session_kwargs: Any) -> None:
        super().__init__(tmp)
        self.url = server_url("ENCMEM_TEST_REDIS_URL", "Redis")
        self.key_prefix = f"encmem-test:{uuid.uuid4().hex[:12]}"
        self.session_kwargs = session_kwargs

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        from agents.extensions.memory import RedisSession

        return RedisSession.from_url(
            session_id,
            url=self.url,
            key_prefix=self.key_prefix,
            **self.session_kwargs,
            **kwargs,
        )

    async def aclose(self) -> None:
        await super().aclose()
        import redis.asyncio as redis

        client = redis.from_url(self.url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.key_prefix}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


class MyCustomSession(SessionABC):
    """A user's own session, written the way the Sessions guide shows: a dict in memory.

    ``database`` stands for wherever the user keeps history (shared by every session object
    of a store, so reopening finds it). It does no validation of its own.
    """

    def __init__(self, session_id: str, database: dict[str, list[Any]]) -> None:
        self.session_id = session_id
        self._database = database

    async def get_items(self, limit: int | None = None) -> list[Any]:
        items = self._database.get(self.session_id, [])
        if limit is None:
            return list(items)
        return items[-limit:] if limit > 0 else []

    async def add_items(self, items: list[Any]) -> None:
        self._database.setdefault(self.session_id, []).extend(items)

    async def pop_item(self) -> Any | None:
        items = self._database.get(self.session_id)
        return items.pop() if items else None

    async def clear_session(self) -> None:
        self._database.pop(self.session_id, None)


class UserSessionStore(SDKStore):
    """The user's own minimal ``SessionABC`` subclass (it takes no session_settings: the
    store assigns them as an attribute, which is all the Runner and encmem read)."""

    name = "user-session"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.database: dict[str, list[Any]] = {}

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        settings = kwargs.pop("session_settings", None)
        session = MyCustomSession(session_id, self.database, **kwargs)
        if settings is not None:
            session.session_settings = (
                SessionSettings(**settings) if isinstance(settings, dict) else settings
            )
        return session


STORES = {
    "sdk-sqlite": SDKSQLiteStore,
    "sdk-async-sqlite": SDKAsyncSQLiteStore,
    "sdk-advanced": SDKAdvancedStore,
    "sdk-sqlalchemy-sqlite": SDKSQLAlchemySQLiteStore,
    "sdk-sqlalchemy-pg": SDKSQLAlchemyPostgresStore,
    "sdk-redis": SDKRedisStore,
    "user-session": UserSessionStore,
}
