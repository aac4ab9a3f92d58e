"""Several processes writing to one PostgreSQL through AdvancedSQLAlchemySession.from_url.

Each of ``processes`` spawned processes opens ``sessions`` sessions at once (the same session
ids in every process, so writers of one session meet), and each session adds ``turns`` turns
with usage, makes a branch of this process's own and adds a turn there. The processes start
together after their imports; throughput counts from that start to the last one's end.
Afterwards the rows are counted: an item acknowledged but absent is lost.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue as queues
import time
import uuid
from types import SimpleNamespace
from typing import Any

#: what PostgreSQL's default max_connections (100) leaves for ordinary roles
DEFAULT_BUDGET = 97


def _usage(total: int) -> Any:
    from agents.usage import Usage

    usage = Usage(requests=1, input_tokens=total - 1, output_tokens=1, total_tokens=total)
    return SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage))


async def _one_session(job: dict[str, Any], session_id: str, p: int) -> tuple[int, str | None]:
    """The turns of one session in process ``p``: the items acknowledged, and the error that
    stopped it (None when it finished)."""
    from encmem.backends import AdvancedSQLAlchemySession

    from encmem import EncryptedSession

    underlying = AdvancedSQLAlchemySession.from_url(session_id, url=job["url"])
    session: Any = underlying
    if job["key"] is not None:
        session = EncryptedSession(session_id, underlying, job["key"], ttl=None)
    turns = [[{"role": "user", "content": f"p{p} turn {turn}"},
              {"role": "assistant", "content": "answer " * 20}]
             for turn in range(job["turns"])]  # fmt: skip
    alt = [{"role": "user", "content": f"p{p} alt"}, {"role": "assistant", "content": "alt"}]
    written = 0
    try:
        for items in turns:
            await session.add_items(items)
            written += len(items)
            await session.store_run_usage(_usage(15))
        await session.create_branch_from_turn(1, f"alt-{p}")
        await session.add_items(alt)
        written += len(alt)
        await session.store_run_usage(_usage(7))
        return written, None
    except Exception as exc:  # counted, and what was acknowledged before it still counts
        return written, f"{type(exc).__name__}: {exc}"[:200]
    finally:
        await underlying.close()


def worker(job: dict[str, Any], p: int, ready: Any, out: Any) -> None:
    """One process: imports done, wait for the others, run every session at once, report."""

    async def main() -> dict[str, Any]:
        ids = [f"{job['run']}-{n}" for n in range(job["sessions"])]
        start = time.time()
        outcomes = await asyncio.gather(
            *(_one_session(job, sid, p) for sid in ids), return_exceptions=True
        )
        errors = [
            f"{type(o).__name__}: {o}"[:200] for o in outcomes if isinstance(o, BaseException)
        ]
        written = sum(o for o in outcomes if isinstance(o, int))
        return {"items": written, "errors": errors, "start": start, "end": time.time()}

    try:
        from encmem.backends import AdvancedSQLAlchemySession  # noqa: F401  (import before go)

        ready.wait(120)
        out.put(asyncio.run(main()))
    except BaseException as exc:  # the parent must hear of it, not wait
        out.put({"items": 0, "errors": [repr(exc)], "start": time.time(), "end": time.time()})


async def _sql(url: str, *statements: str) -> list[Any]:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool)
    rows: list[Any] = []
    try:
        async with engine.begin() as conn:
            for statement in statements:
                result = await conn.exec_driver_sql(statement)
                rows = list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()
    return rows


async def _setup(url: str) -> None:
    from encmem.backends import AdvancedSQLAlchemySession

    session = AdvancedSQLAlchemySession.from_url("setup", url=url, create_tables=True)
    await session.get_items()
    await session.close()


async def run(
    url: str, processes: int, sessions: int, turns: int, key: str | None
) -> dict[str, Any]:
    """Run the load in a role limited to PostgreSQL's default connection budget."""
    from sqlalchemy.engine import make_url

    role = f"bench_{uuid.uuid4().hex[:10]}"
    await _sql(url, f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {DEFAULT_BUDGET}",
               f"GRANT ALL ON SCHEMA public TO {role}")  # fmt: skip
    as_role = make_url(url).set(username=role).render_as_string(hide_password=False)
    try:
        await _setup(as_role)
        job = {"url": as_role, "run": uuid.uuid4().hex[:8], "sessions": sessions,
               "turns": turns, "key": key}  # fmt: skip
        reports = await _spawn(job, processes)
        present = await _sql(url, f"SELECT COUNT(*) FROM agent_messages "
                                  f"WHERE session_id LIKE '{job['run']}-%'")  # fmt: skip
    finally:
        await _sql(url, f"DROP OWNED BY {role}", f"DROP ROLE IF EXISTS {role}")
    acknowledged = sum(r["items"] for r in reports)
    errors = [e for r in reports for e in r["errors"]]
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return {
        "processes": processes,
        "sessions": sessions,
        "turns": turns + 1,
        "items": acknowledged,
        "seconds": seconds,
        "items_s": acknowledged / seconds if seconds > 0 else 0.0,
        "errors": len(errors),
        # acknowledged but absent; rows of a call that raised may be present unacknowledged
        "lost": max(0, acknowledged - int(present[0][0])),
        "expected": processes * sessions * (2 * turns + 2),
        "error_samples": sorted(set(errors))[:3],
    }


async def _spawn(job: dict[str, Any], processes: int) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    ready, out = context.Barrier(processes + 1), context.Queue()
    workers = [context.Process(target=worker, args=(job, p, ready, out)) for p in range(processes)]
    for process in workers:
        process.start()
    await asyncio.to_thread(ready.wait, 180)  # every process imported: all start together
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + 600
    while len(reports) < processes and time.monotonic() < deadline:
        try:
            reports.append(await asyncio.to_thread(out.get, True, 1))
        except queues.Empty:
            if all(w.exitcode is not None for w in workers) and out.empty():
                break
    for process in workers:
        process.join(30)
    missing = processes - len(reports)
    return reports + [{"items": 0, "errors": ["worker died"], "start": 0, "end": 0}] * missing
