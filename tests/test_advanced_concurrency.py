"""Concurrent writers, concurrent processes, and all-or-nothing writes."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import AdvancedSQLiteSession

from . import stores as _stores  # noqa: F401  (the store registry loads before its members)
from .branch_worker import branch_in_process
from .stores_advanced import structure_problems, table_counts


def batch(n: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"question {n}"},
        {"type": "function_call", "name": "lookup", "call_id": f"c{n}", "arguments": "{}"},
        {"type": "function_call_output", "call_id": f"c{n}", "output": str(n)},
        {"role": "assistant", "content": f"answer {n}"},
    ]


async def test_eight_concurrent_batches_keep_structure_consistent(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    sessions = [
        AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True) for _ in range(8)
    ]
    try:
        await asyncio.gather(*(s.add_items(batch(n)) for n, s in enumerate(sessions)))
        items = await sessions[0].get_items()
        assert len(items) == 32
        chunks = [items[i : i + 4] for i in range(0, 32, 4)]
        assert sorted(chunks, key=lambda c: c[0]["content"]) == [batch(n) for n in range(8)]
        by_turn = await sessions[0].get_conversation_by_turns()
        assert sorted(by_turn) == list(range(1, 9))
        assert all(len(rows) == 4 for rows in by_turn.values())
        assert sorted(t for _, _, t in await sessions[0].get_tool_usage()) == list(range(1, 9))
    finally:
        for s in sessions:
            await s.close()
    with sqlite3.connect(path) as conn:
        sequences = [r[0] for r in conn.execute(
            "SELECT sequence_number FROM message_structure ORDER BY sequence_number"
        )]
    assert sequences == list(range(1, 33))
    assert structure_problems(path) == []


# -- two processes ----------------------------------------------------------------------------


async def _race(path: Path, name: str | None) -> list[tuple[str, str]]:
    setup = AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True)
    await setup.add_items(batch(1) + batch(2))
    await setup.close()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [
        context.Process(target=branch_in_process, args=(str(path), barrier, results, name))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [await asyncio.to_thread(results.get, True, 60) for _ in workers]
    for worker in workers:
        worker.join(30)
    return sorted(outcomes)


async def test_two_processes_branching_at_once_get_distinct_ids(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    outcomes = await _race(path, None)
    assert [kind for kind, _ in outcomes] == ["ok", "ok"]
    ids = {branch for _, branch in outcomes}
    assert len(ids) == 2
    check = AdvancedSQLiteSession(session_id="s", db_path=path)
    try:
        listed = {b["branch_id"]: b["message_count"] for b in await check.list_branches()}
    finally:
        await check.close()
    assert listed == {"main": 8, **dict.fromkeys(ids, 4)}
    assert structure_problems(path) == []


async def test_two_processes_claiming_one_name_get_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "race-named.db"
    outcomes = await _race(path, "shared-name")
    assert outcomes[0] == ("error", outcomes[0][1])
    assert "already used" in outcomes[0][1]
    assert outcomes[1] == ("ok", "shared-name")
    assert structure_problems(path) == []


# -- atomicity --------------------------------------------------------------------------------


def _fail_structure_inserts(path: Path, when: str) -> None:
    """A real failure inside the transaction: SQLite aborts the structure row insert."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"CREATE TRIGGER injected BEFORE INSERT ON message_structure WHEN {when} "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )


def _drop_failure(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER injected")


async def test_failure_between_message_and_structure_leaves_neither(tmp_path: Path) -> None:
    path = tmp_path / "atomic.db"
    session = AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True)
    try:
        await session.add_items(batch(1))
        before = table_counts(path, "s")
        _fail_structure_inserts(path, "NEW.message_type = 'function_call'")
        with pytest.raises(sqlite3.IntegrityError, match="injected"):
            await session.add_items(batch(2))
        assert table_counts(path, "s") == before
        assert await session.get_items() == batch(1)
        _drop_failure(path)
        await session.add_items(batch(2))
        assert await session.get_items() == batch(1) + batch(2)
        assert structure_problems(path) == []
    finally:
        await session.close()


async def test_failed_branch_copy_creates_and_reserves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "atomic-branch.db"
    session = AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True)
    try:
        await session.add_items(batch(1) + batch(2))
        _fail_structure_inserts(path, "NEW.branch_id = 'alt'")
        with pytest.raises(sqlite3.IntegrityError, match="injected"):
            await session.create_branch_from_turn(2, "alt")
        assert session.current_branch_id == "main"
        assert [b["branch_id"] for b in await session.list_branches()] == ["main"]
        _drop_failure(path)
        assert await session.create_branch_from_turn(2, "alt") == "alt"
        assert structure_problems(path) == []
    finally:
        await session.close()
