"""SQLAlchemy async engines as sessions use them: made from a URL, configured, shared safely.

Everything sessions on one engine have in common lives in its :class:`EngineState`: the
schemas already known to be ready, the asyncio locks, and whether reads or writes must take
turns in-process. A SQLite engine gets its connections configured as the embedded backends
configure theirs: enforced foreign keys, wiped deletes, WAL and a patient busy wait.

Engines made by ``from_url`` are shared: one per (URL, engine options, event loop) in a
process, counted by the sessions using it and disposed when the last of them closes, so a
thousand sessions on one database hold one pool, not a thousand.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Hashable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
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
        self.ready: set[tuple[str, ...]] = set()
        #: objects sessions on this engine can share, by what they depend on; reusing one
        #: Table object lets SQLAlchemy reuse the compiled SQL of every session's statements
        self.shared: dict[Hashable, object] = {}
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


# -- engines shared by from_url -----------------------------------------------------------------


def _frozen(value: Any) -> Hashable:
    """A hashable stand-in for an engine option; unhashable objects count by identity."""
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((repr(k), _frozen(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_frozen(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(_frozen(v)) for v in value)))
    if isinstance(value, Hashable):
        try:
            hash(value)
            return value
        except TypeError:  # a tuple-like holding something unhashable
            pass
    return ("id", id(value))  # the entry keeps the options, so the id stays unique


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _SharedEngine:
    """One shared engine, the loop its connections belong to, and how many sessions use it."""

    def __init__(
        self, engine: AsyncEngine, loop: asyncio.AbstractEventLoop | None, options: object
    ) -> None:
        self.engine = engine
        self.loop = None if loop is None else weakref.ref(loop)
        self.options = options
        self.users = 0

    def serves(self, loop: asyncio.AbstractEventLoop | None) -> bool:
        return (None if self.loop is None else self.loop()) is loop


_SHARED: dict[Hashable, _SharedEngine] = {}
_SHARED_BY_ENGINE: dict[int, Hashable] = {}
_SHARED_LOCK = threading.Lock()  # sessions may be made from several threads' loops


def _bounded(url: URL, options: dict[str, Any]) -> dict[str, Any]:
    """A server database's shared pool holds ``pool_size`` connections and never more.

    One pool serves every session of a process, so a fixed size is what lets an operator
    budget ``max_connections`` (processes x pool_size): SQLAlchemy's default overflow of 10
    would take 8 processes to 120 connections. Options the caller gives win.
    """
    if url.get_backend_name() != "postgresql" or {"max_overflow", "poolclass"} & set(options):
        return options
    return {**options, "max_overflow": 0}


def acquire_engine(url: str | URL, engine_kwargs: Mapping[str, Any] | None = None) -> AsyncEngine:
    """The process's engine for ``url`` and these options on this event loop, one more user.

    Connections belong to the event loop that opened them, so each loop gets its own engine.
    """
    options = dict(engine_kwargs or {})
    loop = _running_loop()
    parsed = make_url(url)
    rendered = parsed.render_as_string(hide_password=False)
    key = (rendered, _frozen(options), id(loop))
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None or not entry.serves(loop):
            # New, or left by a loop that is gone (its id reused): start afresh.
            made = open_engine(rendered, _bounded(parsed, options))
            entry = _SharedEngine(made, loop, options)
            _SHARED[key] = entry
            _SHARED_BY_ENGINE[id(entry.engine)] = key
        entry.users += 1
        return entry.engine


def _release(engine: AsyncEngine) -> bool:
    """One user fewer; True when that was the last one (the engine is then unshared)."""
    with _SHARED_LOCK:
        key = _SHARED_BY_ENGINE.get(id(engine))
        entry = None if key is None else _SHARED.get(key)
        if entry is None or entry.engine is not engine:
            return True  # not shared (or already released): its owner disposes it
        entry.users -= 1
        if entry.users > 0:
            return False
        del _SHARED[key], _SHARED_BY_ENGINE[id(engine)]
        return True


async def release_engine(engine: AsyncEngine) -> None:
    """Give back an engine from :func:`acquire_engine`; the last user disposes it."""
    if _release(engine):
        await engine.dispose()


def release_unused_engine(engine: AsyncEngine) -> None:
    """Give back an engine no connection was opened through (a constructor failed)."""
    if _release(engine):
        engine.sync_engine.dispose(close=False)


def shared_engine_users(engine: AsyncEngine) -> int:
    """How many sessions share ``engine`` through ``from_url`` (0 when it is not shared)."""
    with _SHARED_LOCK:
        key = _SHARED_BY_ENGINE.get(id(engine))
        entry = None if key is None else _SHARED.get(key)
        return entry.users if entry is not None and entry.engine is engine else 0
