"""encmem's SQLite worker thread: one job at a time, outcomes back to the right loop, clean exits.

Every SQLite session runs its statements through this worker, so each property here is one a
session relies on: order, errors that come back instead of killing the thread, nothing printed
when a loop closes under a job, no hang at interpreter exit, and a forked child that works.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from encmem.backends import _sqlite_connection as connections

from encmem.errors import SessionClosedError

ROOT = Path(__file__).resolve().parents[1]
ENCMEM = Path(sys.executable).with_name("encmem")


class JobError(Exception):
    pass


def _fail(conn: sqlite3.Connection) -> None:
    raise JobError("from the job")


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[connections.SharedConnection]:
    conn = connections.acquire(tmp_path / "w.db")
    await conn.start()
    yield conn
    closing = connections.release(conn)
    if closing is not None:
        await closing


async def test_results_and_exceptions_come_back(shared: connections.SharedConnection) -> None:
    assert await shared.run(lambda conn: conn.execute("SELECT 40 + 2").fetchone()[0]) == 42
    with pytest.raises(JobError, match="from the job"):
        await shared.run(_fail)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await shared.run(lambda conn: conn.execute("SELECT * FROM missing"))

    def stop_iteration(conn: sqlite3.Connection) -> None:
        raise StopIteration

    with pytest.raises(RuntimeError, match="StopIteration"):
        await shared.run(stop_iteration)


async def test_a_job_that_raises_does_not_kill_the_worker(
    shared: connections.SharedConnection,
) -> None:
    for _ in range(3):
        with pytest.raises(JobError):
            await shared.run(_fail)
    assert await shared.run(lambda conn: conn.execute("SELECT 1").fetchone()[0]) == 1


async def test_jobs_run_in_order_one_at_a_time(shared: connections.SharedConnection) -> None:
    order: list[int] = []
    running = 0
    overlaps = 0

    def job(index: int) -> int:
        nonlocal running, overlaps
        running += 1
        overlaps += running > 1
        time.sleep(0.001)
        order.append(index)
        running -= 1
        return index

    results = await asyncio.gather(*(shared.run(lambda c, i=i: job(i)) for i in range(60)))
    assert results == list(range(60))
    assert order == list(range(60))
    assert overlaps == 0


async def test_every_session_of_one_file_shares_one_worker_thread(tmp_path: Path) -> None:
    first = connections.acquire(tmp_path / "one.db")
    second = connections.acquire(str(tmp_path / "." / "one.db"))
    try:
        assert first is second
        threads = {await first.run(lambda c: threading.current_thread()) for _ in range(3)}
        assert len(threads) == 1
    finally:
        connections.release(first)
        closing = connections.release(second)
        assert closing is not None
        await closing


async def test_the_worker_thread_is_a_daemon(shared: connections.SharedConnection) -> None:
    thread = await shared.run(lambda conn: threading.current_thread())
    assert thread is not threading.current_thread()
    assert thread.daemon


async def test_a_job_cancelled_while_queued_never_runs(
    shared: connections.SharedConnection,
) -> None:
    gate = threading.Event()
    ran: list[str] = []
    blocker = asyncio.ensure_future(shared.run(lambda conn: gate.wait(10)))
    queued = asyncio.ensure_future(shared.run(lambda conn: ran.append("queued")))
    await asyncio.sleep(0.01)
    queued.cancel()
    gate.set()
    assert await blocker is True
    assert await shared.run(lambda conn: ran.append("after")) is None
    assert ran == ["after"]
    assert queued.cancelled()


async def test_stop_waits_for_queued_jobs_then_run_raises_session_closed(tmp_path: Path) -> None:
    shared = connections.acquire(tmp_path / "s.db")
    await shared.start()
    seen: list[sqlite3.Connection] = []

    def job(conn: sqlite3.Connection, index: int) -> int:
        seen.append(conn)
        return index

    pending = [shared.run(lambda conn, i=i: job(conn, i)) for i in range(5)]
    tasks = [asyncio.ensure_future(job) for job in pending]
    await asyncio.sleep(0)
    closing = connections.release(shared)
    assert closing is not None
    assert await asyncio.gather(*tasks) == list(range(5))
    await closing
    with pytest.raises(SessionClosedError):
        await shared.run(lambda conn: None)
    with pytest.raises(SessionClosedError):
        await shared.start()
    # stop() closed the sqlite3 connection itself, on the worker thread.
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        seen[0].execute("SELECT 1")
    assert shared.stop() is None


async def test_a_failed_open_is_reported_and_the_next_start_retries(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, just notes\n" * 100)
    shared = connections.acquire(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="not a database"):
            await shared.start()
        with pytest.raises(sqlite3.DatabaseError, match="not a database"):
            await shared.run(lambda conn: None)
        path.unlink()
        await shared.start()
        assert await shared.run(lambda conn: conn.execute("SELECT 7").fetchone()[0]) == 7
    finally:
        closing = connections.release(shared)
        if closing is not None:
            await closing


async def test_a_read_only_read_opens_again_while_the_files_beside_it_change(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (5)")
    conn.commit()
    conn.close()
    # The first open finds a state a writer leaves again (here: a directory not there yet).
    uris = iter([f"{(tmp_path / 'gone' / 'store.db').as_uri()}?mode=ro"])
    chosen: list[str] = []

    def uri() -> str:
        chosen.append(next(uris, f"{path.as_uri()}?mode=ro"))
        return chosen[-1]

    shared = connections.open_read_only(path, uri)
    try:
        assert await shared.run(lambda c: c.execute("SELECT x FROM t").fetchone()[0]) == 5
        assert len(chosen) == 2
        # A read-only connection never writes, so a refused write is not retried into success.
        refused_at = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await shared.run(lambda c: c.execute("INSERT INTO t VALUES (6)"))
        if sys.version_info >= (3, 11):  # where SQLite's error names reach Python
            assert time.monotonic() - refused_at < connections.REREAD_SECONDS
    finally:
        closing = connections.release(shared)
        if closing is not None:
            await closing
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1


async def test_a_read_only_open_that_keeps_failing_fails_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "store.db"
    shared = connections.open_read_only(missing, f"{missing.as_uri()}?mode=ro")
    started = time.monotonic()
    try:
        with pytest.raises(sqlite3.OperationalError, match="unable to open"):
            await shared.run(lambda c: c.execute("SELECT 1").fetchone())
    finally:
        closing = connections.release(shared)
        if closing is not None:
            await closing
    assert time.monotonic() - started < connections.REREAD_SECONDS + 5


def test_loops_on_different_threads_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "loops.db"

    async def work(n: int) -> int:
        shared = connections.acquire(path)
        try:
            await shared.run(lambda c: c.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
            for _ in range(20):
                await shared.run(lambda c: c.execute("INSERT INTO t VALUES (?)", (n,)))
            count: int = await shared.run(
                lambda c: c.execute("SELECT count(*) FROM t WHERE n = ?", (n,)).fetchone()[0]
            )
            return count
        finally:
            closing = connections.release(shared)
            if closing is not None:
                await closing

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda n: asyncio.run(work(n)), range(8)))
    assert counts == [20] * 8


def test_an_unclosed_in_memory_connection_ends_its_thread_when_dropped() -> None:
    async def open_and_drop() -> threading.Thread:
        shared = connections.acquire(":memory:")
        thread: threading.Thread = await shared.run(lambda conn: threading.current_thread())
        return thread

    thread = asyncio.run(open_and_drop())
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


_CLOSE_UNDER_A_JOB = """
import asyncio, random, sys, threading, time
from encmem.backends import _sqlite_connection as connections

gate = threading.Event()
opened = []

async def open_(path):
    shared = connections.acquire(path)
    opened.append(shared)
    await shared.start()
    return shared

async def in_flight(path, job):
    # The loop closes while ``job`` runs: its outcome (a value, an error) has no taker.
    shared = await open_(path)
    asyncio.ensure_future(shared.run(job))
    await asyncio.sleep(0.001)

async def close_not_awaited(path):
    shared = await open_(path)
    asyncio.ensure_future(shared.run(lambda c: gate.wait(10)))
    await asyncio.sleep(0.001)
    connections.release(shared)
    opened.remove(shared)

async def racing(path):
    # A result handed back at about the moment the loop closes.
    shared = await open_(path)
    asyncio.ensure_future(shared.run(lambda c: time.sleep(random.random() / 500)))
    await asyncio.sleep(random.random() / 500)

async def failed_open(path):
    try:
        await open_(path)
    except Exception:
        pass

scenarios = [
    lambda d: in_flight(d + "/a.db", lambda c: gate.wait(10)),
    lambda d: in_flight(d + "/b.db", lambda c: gate.wait(10) and c.execute("SELECT nope")),
    lambda d: close_not_awaited(d + "/c.db"),
    *[lambda d: racing(d + "/d.db")] * 5,
    lambda d: failed_open(d + "/t"),
]
for scenario in scenarios:
    gate.clear()
    asyncio.run(scenario(sys.argv[1]))
    gate.set()
for shared in opened:
    connections.release(shared)
for thread in threading.enumerate():
    if thread.name.startswith("encmem-sqlite"):
        thread.join(10)
        assert not thread.is_alive(), thread
print("done")
"""


def _run_many(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(run, commands))


@pytest.mark.slow
def test_closing_the_loop_under_a_job_prints_nothing(tmp_path: Path) -> None:
    commands = []
    for i in range(32):
        work = tmp_path / str(i)
        work.mkdir()
        (work / "t").write_text("plain text, not a database\n" * 50)
        commands.append([sys.executable, "-c", _CLOSE_UNDER_A_JOB, str(work)])
    for done in _run_many(commands, ROOT):
        assert done.stderr == ""
        assert done.returncode == 0 and done.stdout == "done\n"


@pytest.mark.slow
def test_inspect_on_a_text_file_prints_one_line_and_no_thread_traceback(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping: eggs, milk\n" * 200)
    done_all = _run_many([[str(ENCMEM), "inspect", str(notes)] for _ in range(40)], tmp_path)
    for done in done_all:
        assert done.returncode != 0
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert "is not a SQLite database" in done.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_and_uses_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "fork.db"

    async def parent_setup() -> connections.SharedConnection:
        shared = connections.acquire(path)
        await shared.run(lambda c: c.execute("CREATE TABLE t (who TEXT)"))
        await shared.run(lambda c: c.execute("INSERT INTO t VALUES ('parent')"))
        return shared

    async def child_work(inherited: connections.SharedConnection) -> int:
        fresh = connections.acquire(path)
        if fresh is inherited:
            return 3
        await inherited.run(lambda c: c.execute("INSERT INTO t VALUES ('child, inherited')"))
        await fresh.run(lambda c: c.execute("INSERT INTO t VALUES ('child, fresh')"))
        count: int = await fresh.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0])
        for closing in (connections.release(fresh), connections.release(inherited)):
            if closing is not None:
                await closing
        return 0 if count == 3 else 4

    shared = asyncio.run(parent_setup())
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 2
        try:
            signal.alarm(30)
            code = asyncio.run(child_work(shared))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    async def parent_check() -> list[str]:
        rows = await shared.run(lambda c: c.execute("SELECT who FROM t ORDER BY rowid").fetchall())
        closing = connections.release(shared)
        if closing is not None:
            await closing
        return [row[0] for row in rows]

    assert asyncio.run(parent_check()) == ["parent", "child, inherited", "child, fresh"]
