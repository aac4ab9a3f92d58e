"""One aiosqlite connection per database file, shared by every session of the process.

Each operation is one job on the connection's thread (a whole transaction, never split across
awaits), so sessions that share a file never interleave statements, the event loop is never
blocked, and a thousand sessions on one file cost one thread rather than a thousand. An
in-memory database is private to the session that opened it, as in the Agents SDK.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from encmem.errors import SessionClosedError

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a write waits for another process's lock before 'database is locked' is raised."""


class _DaemonConnection(aiosqlite.Connection):
    """An aiosqlite connection whose worker thread never keeps the interpreter alive.

    aiosqlite's worker thread is not a daemon, so a connection nobody closed would hang the
    process at exit; sessions are often dropped without ``close()`` (the Agents SDK's own
    sessions need none), so ours must not.
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=256)
        self._thread.daemon = True

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job(sqlite3_connection)`` on the connection thread as one unit."""
        result: T = await self._execute(lambda: job(self._conn))  # type: ignore[no-untyped-call]
        return result


def _configure(conn: sqlite3.Connection, is_file: bool, busy_timeout: float) -> None:
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA secure_delete=ON")
    if not is_file:
        return
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _connector(
    database: str, is_file: bool, busy_timeout: float
) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(
            database,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        _configure(conn, is_file, busy_timeout)
        return conn

    return connect


class SharedConnection:
    """A started connection plus the set of schemas already created through it."""

    def __init__(
        self, key: str, database: str, is_file: bool, busy_timeout: float = BUSY_TIMEOUT_SECONDS
    ) -> None:
        self.key = key
        self.is_file = is_file
        self.users = 0
        self.schemas: set[tuple[str, ...]] = set()
        self._connector = _connector(database, is_file, busy_timeout)
        self._conn = _DaemonConnection(self._connector)
        self._started: asyncio.Future[Any] | None = None
        self._closed = False

    async def start(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self._open())
        await self._started

    async def _open(self) -> None:
        try:
            await self._conn
        except BaseException:
            # aiosqlite has already stopped the failed connection's thread; the next start
            # gets a fresh one (the failure may be passing, e.g. a lock held elsewhere).
            self._conn = _DaemonConnection(self._connector)
            self._started = None
            raise

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise SessionClosedError("the session is closed; open a new one")
        return await self._conn.run(job)

    def stop(self) -> asyncio.Future[Any] | None:
        self._closed = True
        if self._started is None:
            return None
        return self._conn.stop()


_registry: dict[str, SharedConnection] = {}
_registry_lock = threading.Lock()


def _key_for(db_path: str | Path) -> tuple[str, bool]:
    path = str(db_path)
    if path == ":memory:" or path.startswith("file::memory:") or path == "":
        return "", False
    return os.path.realpath(os.path.expanduser(path)), True


def acquire(db_path: str | Path, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> SharedConnection:
    """Take a reference to the shared connection of ``db_path`` (a new one for ``:memory:``).

    ``busy_timeout`` applies when this call opens the connection; a connection already shared
    keeps the timeout it was opened with.
    """
    key, is_file = _key_for(db_path)
    if not is_file:
        shared = SharedConnection("", ":memory:", False)
        shared.users = 1
        return shared
    with _registry_lock:
        existing = _registry.get(key)
        if existing is None:
            existing = _registry[key] = SharedConnection(key, key, True, busy_timeout)
        existing.users += 1
        return existing


def release(shared: SharedConnection) -> asyncio.Future[Any] | None:
    """Drop a reference; the last one closes the connection. Returns the close's future."""
    with _registry_lock:
        shared.users -= 1
        if shared.users > 0:
            return None
        if shared.is_file and _registry.get(shared.key) is shared:
            del _registry[shared.key]
    return shared.stop()
