"""One SQLite connection per database file, on a worker thread of its own, shared by every session.

Each operation is one job on the connection's thread (a whole transaction, never split across
awaits), so sessions that share a file never interleave statements, the event loop is never
blocked, and a thousand sessions on one file cost one thread rather than a thousand. The thread
is a daemon, so a session nobody closed never holds up interpreter exit. Results go back to the
caller's own event loop, and are dropped when that loop has closed meanwhile: nobody waits then.
A process forked from ours opens its own connection instead of using the parent's thread. An
in-memory database is private to the session that opened it, as in the Agents SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from encmem.errors import SessionClosedError

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a write waits for another process's lock before 'database is locked' is raised."""

_CLOSED_MESSAGE = "the session is closed; open a new one"


def _notify(loop: asyncio.AbstractEventLoop, settle: Callable[[], None]) -> None:
    """Run ``settle`` on ``loop`` from the worker thread, unless the loop has closed."""
    if loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):  # closed between the check and the call
        loop.call_soon_threadsafe(settle)


def _set_result(future: asyncio.Future[T], value: T) -> None:
    if not future.done():  # a cancelled caller no longer wants the result
        future.set_result(value)


def _set_error(future: asyncio.Future[T], error: BaseException) -> None:
    if future.done():
        return
    if isinstance(error, StopIteration):  # a future cannot hold one
        wrapped = RuntimeError(f"a SQLite job raised StopIteration: {error!r}")
        wrapped.__cause__ = error
        error = wrapped
    future.set_exception(error)


class _Queued(Protocol):
    def run(self, conn: sqlite3.Connection) -> None: ...

    def fail(self, error: BaseException) -> None: ...


class _Job(Generic[T]):
    """``work(conn)`` to run on the worker thread, and the caller's future for its outcome."""

    __slots__ = ("future", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], T], future: asyncio.Future[T]) -> None:
        self.work = work
        self.future = future

    def run(self, conn: sqlite3.Connection) -> None:
        future = self.future
        if future.done():  # cancelled while queued: the caller has given up on it
            return
        try:
            value = self.work(conn)
        except BaseException as error:
            self.fail(error)
        else:
            _notify(future.get_loop(), lambda: _set_result(future, value))

    def fail(self, error: BaseException) -> None:
        future = self.future
        _notify(future.get_loop(), lambda: _set_error(future, error))


class _Worker:
    """A daemon thread that opens one sqlite3 connection and runs queued jobs on it, in order.

    A job is refused once the connection failed to open (with that error) or once ``stop()``
    was called (``SessionClosedError``); jobs queued before ``stop()`` still run first.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self.pid = os.getpid()
        self.ready = False
        self.failure: BaseException | None = None
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, args=(connect,), name=name, daemon=True)
        self._thread.start()

    @property
    def usable(self) -> bool:
        """False once the open failed, or in a forked child (the thread stayed in the parent)."""
        return self.failure is None and self.pid == os.getpid()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self.failure is not None:
                raise self.failure.with_traceback(None)
            if self._stopping:
                raise SessionClosedError(_CLOSED_MESSAGE)
            self._jobs.put(_Job(work, future))
        return await future

    def stop(self, notify: bool = True) -> asyncio.Future[None] | None:
        """Close the connection after the queued jobs; the future (if a loop runs) says when."""
        try:
            loop = asyncio.get_running_loop() if notify else None
        except RuntimeError:
            loop = None
        with self._lock:
            if self._stopping or self.failure is not None or self.pid != os.getpid():
                return None
            self._stopping = True
            self._stopped = None if loop is None else loop.create_future()
            self._jobs.put(None)
        return self._stopped

    def _serve(self, connect: Callable[[], sqlite3.Connection]) -> None:
        try:
            # Kept in this frame only, so nothing but this thread ever touches or closes it.
            conn = connect()
        except BaseException as error:
            self._refuse_all(error)
            return
        self.ready = True
        while (job := self._jobs.get()) is not None:
            job.run(conn)
        try:
            conn.close()
        except BaseException as error:
            self._report_stopped(error)
        else:
            self._report_stopped(None)

    def _refuse_all(self, error: BaseException) -> None:
        with self._lock:
            self.failure = error
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.fail(error)
        self._report_stopped(None)

    def _report_stopped(self, error: BaseException | None) -> None:
        future = self._stopped
        if future is None:
            return
        if error is None:
            _notify(future.get_loop(), lambda: _set_result(future, None))
        else:
            _notify(future.get_loop(), lambda: _set_error(future, error))


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
        self._worker: _Worker | None = None
        self._finalizer: weakref.finalize[[bool], SharedConnection] | None = None
        self._closed = False

    async def start(self) -> None:
        """Open the connection if it is not open yet; a failed open is retried by the next call."""
        worker = self._current_worker()
        if not worker.ready:
            await worker.run(_nothing)

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job(connection)`` on the worker thread as one unit and return what it returns."""
        return await self._current_worker().run(job)

    def stop(self) -> asyncio.Future[None] | None:
        """Refuse new jobs; close the connection once the queued ones ran. Idempotent."""
        with _lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if self._finalizer is not None:
            self._finalizer.detach()
        return worker.stop() if worker is not None else None

    def _current_worker(self) -> _Worker:
        worker = self._worker
        if worker is not None and worker.usable and not self._closed:
            return worker
        with _lock:
            if self._closed:
                raise SessionClosedError(_CLOSED_MESSAGE)
            worker = self._worker
            if worker is None or not worker.usable:
                worker = self._worker = _Worker(self._connect, self._name)
                if self._finalizer is not None:
                    self._finalizer.detach()
                # A connection dropped without stop() (in-memory sessions nobody closed) still
                # ends its thread; at interpreter exit the daemon thread is simply left behind.
                self._finalizer = weakref.finalize(self, worker.stop, False)
                self._finalizer.atexit = False
            return worker


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
