"""One pool per database: sessions made by ``from_url`` share an engine, and many processes of
many such sessions stay within PostgreSQL's default connection budget, losing nothing."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agents.usage import Usage
from encmem.backends import AdvancedSQLAlchemySession, SQLAlchemySession
from encmem.backends._sqlalchemy_engine import shared_engine_users

from . import stores as _stores  # noqa: F401  (the store registry loads before its members)
from .figures import figure
from .pg import run_sync
from .stores_advanced import structure_problems
from .stores_advanced_sqlalchemy import PgSchema


def msg(n: int) -> dict[str, Any]:
    return {"role": "user", "content": f"message {n}"}


async def test_from_url_sessions_share_one_engine_disposed_when_the_last_closes(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    first = SQLAlchemySession.from_url("a", url=url, create_tables=True)
    second = SQLAlchemySession.from_url("b", url=url)
    advanced = AdvancedSQLAlchemySession.from_url("c", url=url, create_tables=True)
    other_options = SQLAlchemySession.from_url("d", url=url, engine_kwargs={"pool_size": 2})
    engine = first.engine
    assert second.engine is engine and advanced.engine is engine
    assert other_options.engine is not engine
    assert shared_engine_users(engine) == 3

    await first.add_items([msg(1)])
    await advanced.add_items([msg(2)])
    await first.close()
    await first.close()  # closing twice gives back one share, not two
    assert shared_engine_users(engine) == 2
    await second.add_items([msg(3)])  # the engine still serves the others
    assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    await second.close()
    await advanced.close()
    assert shared_engine_users(engine) == 0
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]

    again = SQLAlchemySession.from_url("b", url=url)
    assert again.engine is not engine  # a fresh engine once the last user has gone
    assert await again.get_items() == [msg(3)]
    await again.close()
    await other_options.close()


async def test_a_constructor_that_fails_gives_its_share_back(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'refused.db'}"
    kept = SQLAlchemySession.from_url("a", url=url, create_tables=True)
    with pytest.raises(ValueError):
        SQLAlchemySession.from_url("b", url=url, sessions_table="no such; table")
    assert shared_engine_users(kept.engine) == 1
    await kept.close()
    assert shared_engine_users(kept.engine) == 0


def test_each_event_loop_gets_its_own_engine(tmp_path: Path) -> None:
    """Connections belong to the loop that opened them, so loops never share a pool."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'loops.db'}"

    async def write(n: int) -> SQLAlchemySession:
        session = SQLAlchemySession.from_url("s", url=url, create_tables=True)
        await session.add_items([msg(n)])
        return session

    first = asyncio.run(write(1))
    second = asyncio.run(write(2))  # the first loop is gone, its session still open
    try:
        assert second.engine is not first.engine
    finally:
        asyncio.run(second.close())
        asyncio.run(first.close())


# -- 8 processes x 100 sessions on one PostgreSQL ------------------------------------------------

PROCESSES = 8
SESSIONS = 100
#: what PostgreSQL's default max_connections (100) leaves for ordinary roles
DEFAULT_BUDGET = 97


def _usage(total: int) -> Any:
    usage = Usage(requests=1, input_tokens=total - 1, output_tokens=1, total_tokens=total)
    return SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage))


async def _one_session(url: str, options: dict[str, Any], session_id: str, p: int) -> int:
    """Two turns on main, a branch of this process's own with one more turn, usage for each."""
    session = AdvancedSQLAlchemySession.from_url(session_id, url=url, engine_kwargs=options)
    try:
        for turn in (1, 2):
            await session.add_items([msg(p * 10 + turn), {"role": "assistant", "content": "ok"}])
            await session.store_run_usage(_usage(15))
        await session.create_branch_from_turn(1, f"alt-{p}")
        await session.add_items([msg(p * 10 + 9), {"role": "assistant", "content": "alt"}])
        await session.store_run_usage(_usage(7))
        return 6
    finally:
        await session.close()


def load_in_process(url: str, options: dict[str, Any], run: str, p: int, queue: Any) -> None:
    """One process: every session at once, each made by from_url; report items and errors."""

    async def main() -> tuple[int, list[str]]:
        outcomes = await asyncio.gather(
            *(_one_session(url, options, f"{run}-{n}", p) for n in range(SESSIONS)),
            return_exceptions=True,
        )
        errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        return sum(o for o in outcomes if isinstance(o, int)), errors

    try:
        queue.put(asyncio.run(main()))
    except BaseException as exc:  # the parent must hear of it, not wait
        queue.put((0, [repr(exc)]))


@pytest.fixture
def budget_role() -> Any:
    """A role allowed PostgreSQL's default connection budget, on a schema of its own."""
    schema = PgSchema()
    role = f"load_{uuid.uuid4().hex[:10]}"
    run_sync(schema.url, f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {DEFAULT_BUDGET}")
    run_sync(schema.url, f"ALTER SCHEMA {schema.name} OWNER TO {role}")
    try:
        yield schema, role
    finally:
        schema.drop()
        run_sync(schema.url, f"DROP ROLE IF EXISTS {role}")


def _as_role(url: str, role: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(username=role).render_as_string(hide_password=False)


async def _check_sessions(url: str, options: dict[str, Any], run: str) -> None:
    """Every acknowledged item once, in order, per branch; gap-free turns; all the usage."""
    for n in range(SESSIONS):
        reader = AdvancedSQLAlchemySession.from_url(f"{run}-{n}", url=url, engine_kwargs=options)
        try:
            main = await reader.get_items(branch_id="main")
            assert len(main) == PROCESSES * 4
            assert sorted(item["content"] for item in main[::2]) == sorted(
                msg(p * 10 + t)["content"] for p in range(PROCESSES) for t in (1, 2)
            )
            by_turn = await reader.get_conversation_by_turns("main")
            assert sorted(by_turn) == list(range(1, PROCESSES * 2 + 1))
            assert all([r["type"] for r in rows] == ["user", "assistant"]
                       for rows in by_turn.values())  # fmt: skip
            for p in range(PROCESSES):
                assert await reader.get_items(branch_id=f"alt-{p}") == [
                    msg(p * 10 + 9), {"role": "assistant", "content": "alt"},
                ]  # fmt: skip
            usage = await reader.get_session_usage()
            assert usage is not None
            assert (usage["requests"], usage["total_tokens"]) == (
                PROCESSES * 3, PROCESSES * (15 * 2 + 7),
            )  # fmt: skip
        finally:
            await reader.close()


async def _reports(queue: Any, workers: list[Any]) -> list[tuple[int, list[str]]]:
    """One report per worker; a worker that died without one fails the test at once."""
    import queue as queues

    reports: list[tuple[int, list[str]]] = []
    deadline = time.monotonic() + 300
    while len(reports) < len(workers) and time.monotonic() < deadline:
        try:
            reports.append(await asyncio.to_thread(queue.get, True, 1))
        except queues.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            assert not dead, f"worker(s) died with exit codes {dead}"
    assert len(reports) == len(workers), "the workers did not finish in 300 s"
    return reports


@pytest.mark.slow
@pytest.mark.pg
async def test_eight_processes_of_a_hundred_from_url_sessions_lose_nothing(
    budget_role: Any, request: pytest.FixtureRequest
) -> None:
    schema, role = budget_role
    url, options = _as_role(schema.url, role), schema.engine_kwargs()
    setup = AdvancedSQLAlchemySession.from_url(
        "setup", url=url, engine_kwargs=options, create_tables=True
    )
    await setup.get_items()
    await setup.close()
    run = uuid.uuid4().hex[:8]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=load_in_process, args=(url, options, run, p, queue))
        for p in range(PROCESSES)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    reports = await _reports(queue, workers)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join(30)
    errors = [error for _, found in reports for error in found]
    written = sum(items for items, _ in reports)
    assert errors == []
    assert written == PROCESSES * SESSIONS * 6
    await _check_sessions(url, options, run)
    assert structure_problems(schema) == []
    figure(
        request.config,
        f"from-url-load: {PROCESSES} processes x {SESSIONS} sessions (2 turns, a branch, usage), "
        f"{written} items in {elapsed:.1f} s ({written / elapsed:.0f} items/s), "
        f"0 errors, 0 lost, within {DEFAULT_BUDGET} connections",
    )
