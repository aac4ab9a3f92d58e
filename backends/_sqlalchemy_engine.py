"""SQLAlchemy async engines as sessions use them: made from a URL, configured, shared safely.

Everything sessions on one engine have in common lives in its :class:`EngineState`: the
schemas already known to be ready, the asyncio locks, and whether reads or writes must take
turns in-process. A SQLite engine gets its connections configured as the embedded backends
configure theirs: enforced foreign keys, wiped deletes, WAL and a patient busy wait.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, SingletonThreadPool, StaticPool

from ._sqlite_connection import BUSY_TIMEOUT_SECONDS, switch_to_wal


def check_async_engine(engine: object) -> None:
    """Refuse anything but an AsyncEngine, pointing at the two ways of getting one."""
    if not isinstance(engine, AsyncEngine):
        raise TypeError(
            f"engine must be a sqlalchemy AsyncEngine (create_async_engine(...)), "
            f"not {type(engine).__name__}; or use SQLAlchemySession.from_url(...)"
        )


def open_engine(url: str, engine_kwargs: Mapping[str, Any] | None = None) -> AsyncEngine:
    """A new async engine for ``url``, its SQLite connections configured from the first one."""
    engine = create_async_engine(url, **(engine_kwargs or {}))
    engine_state(engine)
    return engine


def configure_sqlite_connection(
    dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry
) -> None:
    """Per SQLite connection: enforced foreign keys, wiped deletes, a patient busy wait, WAL."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        switch_to_wal(cursor, BUSY_TIMEOUT_SECONDS)
    finally:
        cursor.close()


class EngineState:
    """What sessions sharing one engine share: schemas known ready, locks, locking policy."""

    def __init__(self, engine: AsyncEngine) -> None:
        is_sqlite = engine.dialect.name == "sqlite"
        self.ready: set[tuple[str, str]] = set()
        # SQLite has one writer at a time anyway: queueing in-process beats its busy-wait.
        self.serialise_writes = is_sqlite
        # A single shared connection (in-memory databases) must not interleave at all.
        self.serialise_reads = isinstance(
            engine.sync_engine.pool, (StaticPool, SingletonThreadPool)
        )
        self._locks: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}
        if is_sqlite:
            event.listen(engine.sync_engine, "connect", configure_sqlite_connection)

    def lock(self, name: str) -> asyncio.Lock:
        """The lock ``name`` for the running loop (an asyncio.Lock belongs to one loop)."""
        loop = asyncio.get_running_loop()
        entry = self._locks.get(name)
        if entry is None or entry[0] is not loop:
            entry = (loop, asyncio.Lock())
            self._locks[name] = entry
        return entry[1]

    @asynccontextmanager
    async def transaction(
        self, engine: AsyncEngine, *, write: bool
    ) -> AsyncIterator[AsyncConnection]:
        """A connection of ``engine`` in a transaction: writes commit on success, else roll back."""
        serialised = self.serialise_writes if write else self.serialise_reads
        lock = self.lock("io") if serialised else None
        if lock is not None:
            await lock.acquire()
        try:
            if write:
                async with engine.begin() as conn:
                    yield conn
            else:
                async with engine.connect() as conn:
                    yield conn
        finally:
            if lock is not None:
                lock.release()


# Keyed by the sync engine, so the state goes when the engine does (it holds no reference back).
_STATES: weakref.WeakKeyDictionary[Engine, EngineState] = weakref.WeakKeyDictionary()


def engine_state(engine: AsyncEngine) -> EngineState:
    """The state of ``engine``, made (and its SQLite connections configured) on first use."""
    state = _STATES.get(engine.sync_engine)
    if state is None:
        state = EngineState(engine)
        _STATES[engine.sync_engine] = state
    return state
