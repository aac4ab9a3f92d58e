"""One SQLite connection per database file, on a worker thread of its own, shared by every session.

Each operation is one job on the connection's thread (a whole transaction, never split across
awaits), so sessions that share a file never interleave statements, the event loop is never
blocked, and a thousand sessions on one file cost one thread rather than a thousand. The thread
is a daemon, so a session nobody closed never holds up interpreter exit. A process forked from
ours opens its own connection instead of using the parent's thread. An in-memory database is
private to the session that opened it, as in the Agents SDK.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from encmem.errors import SessionClosedError, StoreError

from ._sqlite_worker import CLOSED_MESSAGE, Worker

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a write waits for another process's lock before 'database is locked' is raised."""

REREAD_SECONDS = 2.0
"""How long a read-only connection keeps reopening while a writer changes the files beside it."""


class _Executes(Protocol):
    def execute(self, sql: str, /) -> object: ...


def switch_to_wal(conn: _Executes, busy_timeout: float) -> None:
    """Put a SQLite file in WAL mode (a sqlite3 connection, or any DB-API cursor on one).

    The switch takes a lock that SQLite's busy handler does not wait for, so it is retried
    here for up to ``busy_timeout`` seconds while another connection holds it.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def immediate(conn: sqlite3.Connection, job: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``job`` in one ``BEGIN IMMEDIATE`` transaction: committed, or rolled back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = job(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def snapshot(conn: sqlite3.Connection, job: Callable[[sqlite3.Connection], T]) -> T:
    """Run read-only ``job`` in one deferred transaction, so its SELECTs see one snapshot."""
    conn.execute("BEGIN")
    try:
        return job(conn)
    finally:
        conn.execute("COMMIT")


def _configure(
    conn: sqlite3.Connection, is_file: bool, busy_timeout: float, read_only: bool
) -> None:
    if read_only:  # no WAL switch, nothing created: a refused write fails, never lands
        conn.execute("PRAGMA query_only=ON")
        return
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA secure_delete=ON")
    if is_file:
        switch_to_wal(conn, busy_timeout)


def _connector(
    database: str | Callable[[], str], is_file: bool, busy_timeout: float, read_only: bool
) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(
            database() if callable(database) else database,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=read_only,
        )
        try:
            _configure(conn, is_file, busy_timeout, read_only)
        except BaseException:
            conn.close()
            raise
        return conn

    return connect


class SharedConnection:
    """A database's worker (started on first use), plus the schemas already created through it.

    A read-only one is opened from a SQLite URI (``database``) and never writes.
    """

    def __init__(
        self,
        key: str,
        database: str | Callable[[], str],
        is_file: bool,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        read_only: bool = False,
    ) -> None:
        self.key = key
        self.is_file = is_file
        self.read_only = read_only
        self.pid = os.getpid()
        self.users = 0
        self.schemas: set[tuple[str, ...]] = set()
        self._connect = _connector(database, is_file, busy_timeout, read_only)
        self._name = f"encmem-sqlite {os.path.basename(key) or ':memory:'}"
        self._worker: Worker | None = None
        self._finalizer: weakref.finalize[[bool], SharedConnection] | None = None
        self._closed = False

    async def start(self) -> None:
        """Open the connection if it is not open yet; a failed open is retried by the next call."""
        worker = self._current_worker()
        if not worker.ready:
            await worker.run(_nothing)

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job(connection)`` on the worker thread as one unit and return what it returns.

        A read-only connection opens again and reruns a read that failed while a writer
        was setting up or taking down the files beside the database (it can do neither).
        """
        deadline = time.monotonic() + REREAD_SECONDS
        while True:
            worker = self._current_worker()
            try:
                return await worker.run(job)
            except (sqlite3.OperationalError, StoreError) as exc:
                if not self.read_only or not _passing(exc) or time.monotonic() > deadline:
                    raise
            with _lock:
                if self._worker is worker:
                    self._worker = None
            worker.stop(False)
            await asyncio.sleep(0.01)

    def stop(self) -> asyncio.Future[None] | None:
        """Refuse new jobs; close the connection once the queued ones ran. Idempotent."""
        with _lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if self._finalizer is not None:
            self._finalizer.detach()
        return worker.stop() if worker is not None else None

    def _current_worker(self) -> Worker:
        worker = self._worker
        if worker is not None and worker.usable and not self._closed:
            return worker
        with _lock:
            if self._closed:
                raise SessionClosedError(CLOSED_MESSAGE)
            worker = self._worker
            if worker is None or not worker.usable:
                worker = self._worker = Worker(self._connect, self._name)
                if self._finalizer is not None:
                    self._finalizer.detach()
                # A connection dropped without stop() (in-memory sessions nobody closed) still
                # ends its thread; at interpreter exit the daemon thread is simply left behind.
                self._finalizer = weakref.finalize(self, worker.stop, False)
                self._finalizer.atexit = False
            return worker


def _passing(exc: Exception) -> bool:
    """Whether a read-only open or read failed on a state a writer leaves again: a log being
    set up or recovered, or files beside the database appearing or going as it opened."""
    if isinstance(exc, StoreError):
        return True
    name = str(getattr(exc, "sqlite_errorname", ""))  # Python 3.11 and later
    if name:
        # Not a plain SQLITE_READONLY: that is a write this connection refused.
        return name == "SQLITE_CANTOPEN" or (
            name.startswith("SQLITE_READONLY_") and name != "SQLITE_READONLY_ROLLBACK"
        )
    return "readonly" in str(exc) or "unable to open" in str(exc)


def _nothing(conn: sqlite3.Connection) -> None:
    """The no-op job ``start()`` waits on: it runs once the connection is open."""


_registry: dict[tuple[int, str], SharedConnection] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # Another thread of the parent may have held the lock at the fork; the child starts afresh.
    # Registry entries of the parent stay under the parent's pid, so the child never finds them.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
    with _lock:
        entry = (os.getpid(), key)
        existing = _registry.get(entry)
        if existing is None:
            existing = _registry[entry] = SharedConnection(key, key, True, busy_timeout)
        existing.users += 1
        return existing


def open_read_only(
    db_path: str | Path, uri: str | Callable[[], str], busy_timeout: float = BUSY_TIMEOUT_SECONDS
) -> SharedConnection:
    """A connection of its own that reads ``db_path`` through the read-only SQLite ``uri``
    (or the one ``uri()`` gives, on the connection's thread, as it opens).

    It is never shared through the registry, so a session of this process that writes to
    the same file gets a writable connection of its own; :func:`share` hands it to others.
    """
    key, _ = _key_for(db_path)
    shared = SharedConnection(key, uri, True, busy_timeout, read_only=True)
    shared.users = 1
    return shared


def share(shared: SharedConnection) -> SharedConnection:
    """Take one more reference to ``shared`` (each is given back with :func:`release`)."""
    with _lock:
        shared.users += 1
    return shared


def release(shared: SharedConnection) -> asyncio.Future[None] | None:
    """Drop a reference; the last one closes the connection. Returns the close's future."""
    with _lock:
        shared.users -= 1
        if shared.users > 0:
            return None
        entry = (shared.pid, shared.key)
        if shared.is_file and _registry.get(entry) is shared:
            del _registry[entry]
    return shared.stop()
