"""The thread that owns one sqlite3 connection and runs jobs on it, in order, for any event loop.

Results go back to the caller's own event loop, and are dropped when that loop has closed
meanwhile: nobody waits then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from encmem.errors import SessionClosedError

T = TypeVar("T")

CLOSED_MESSAGE = "the session is closed; open a new one"


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


class Worker:
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
                raise SessionClosedError(CLOSED_MESSAGE)
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
            # Not kept until the next job arrives: a job's closure may hold decrypted items.
            del job
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
