"""Defects of the Agents SDK's AdvancedSQLiteSession that ours does not have (one test each),
plus compatibility with databases the SDK wrote."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agents.extensions.memory import AdvancedSQLiteSession as SDKAdvancedSQLiteSession
from encmem.backends import AdvancedSQLiteSession
from encmem.backends import _advanced_queries as queries

from encmem import MissingTablesError

from .stores_advanced import structure_problems


def user(n: int) -> dict[str, Any]:
    return {"role": "user", "content": f"question {n}"}


def reply(n: int) -> dict[str, Any]:
    return {"role": "assistant", "content": f"answer {n}"}


def history(turns: int) -> list[dict[str, Any]]:
    return [item for n in range(turns) for item in (user(n), reply(n))]


async def test_missing_tables_give_an_error_naming_create_tables(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    session = AdvancedSQLiteSession(session_id="s", db_path=path)
    with pytest.raises(MissingTablesError, match=r"create_tables=True"):
        await session.add_items([user(0)])
    with pytest.raises(MissingTablesError, match="message_structure"):
        await session.get_items()
    await session.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


async def test_create_tables_false_opens_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "ready.db"
    first = AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True)
    await first.add_items(history(2))
    await first.close()
    again = AdvancedSQLiteSession(session_id="s", db_path=path)
    try:
        assert await again.get_items() == history(2)
    finally:
        await again.close()


async def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    session = AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "fk.db", create_tables=True)
    try:
        await session.add_items(history(1))
        enabled = await session._read(lambda conn: conn.execute("PRAGMA foreign_keys").fetchone())
        assert enabled == (1,)

        def orphan_row(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO message_structure (session_id, message_id, message_type, "
                "sequence_number) VALUES ('s', 999999, 'user', 99)"
            )

        with pytest.raises(sqlite3.IntegrityError):
            await session._write(orphan_row)
    finally:
        await session.close()


async def test_clear_pop_and_delete_leave_no_orphans(tmp_path: Path) -> None:
    path = tmp_path / "orphans.db"
    session = AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True)
    other = AdvancedSQLiteSession(session_id="other", db_path=path, create_tables=True)
    try:
        await other.add_items(history(2))
        await session.add_items(history(4))
        await session.create_branch_from_turn(3, "alt")
        await session.add_items([user(9)])
        assert await session.pop_item() == user(9)
        await session.pop_item()
        assert structure_problems(path) == []
        stored = await session.get_stored_items()
        assert await session.delete_stored_items([stored[0].id]) == 1
        assert structure_problems(path) == []
        await session.delete_branch("alt", force=True)
        assert structure_problems(path) == []
        await session.clear_session()
        assert structure_problems(path) == []
        assert await other.get_items() == history(2)
    finally:
        await session.close()
        await other.close()


# -- cost does not grow with history ---------------------------------------------------------


def _steps(path: Path, job: Callable[[sqlite3.Connection], Any]) -> int:
    """SQLite VM steps (in units of 10) ``job`` takes, inside a transaction rolled back after."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    counter = [0]

    def tick() -> int:
        counter[0] += 1
        return 0

    conn.execute("BEGIN")
    conn.set_progress_handler(tick, 10)
    try:
        job(conn)
    finally:
        conn.set_progress_handler(None, 10)
        conn.execute("ROLLBACK")
        conn.close()
    return counter[0]


async def _costs(tmp_path: Path, turns: int) -> tuple[int, int]:
    path = tmp_path / f"history-{turns}.db"
    session = AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True)
    await session.add_items(history(turns))
    await session.create_branch_from_turn(turns, "alt")
    await session.switch_to_branch("main")
    await session.add_items([user(turns), reply(turns)])
    await session.close()
    scope = queries.Scope("s", "agent_sessions", "agent_messages")
    tail = _steps(path, lambda conn: queries.select_tail(conn, scope, "main", 20))
    pop = _steps(path, lambda conn: queries.pop_newest(conn, scope, "main"))
    return tail, pop


async def test_tail_read_and_pop_do_not_grow_with_history(tmp_path: Path) -> None:
    small_tail, small_pop = await _costs(tmp_path, 30)
    large_tail, large_pop = await _costs(tmp_path, 3000)
    assert large_tail <= small_tail * 1.5 + 5
    assert large_pop <= small_pop * 1.5 + 5


async def test_paging_back_with_before_id_is_exact(tmp_path: Path) -> None:
    session = AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "p.db", create_tables=True)
    try:
        await session.add_items(history(10))
        await session.create_branch_from_turn(6, "alt")
        await session.add_items([user(50), reply(50)])
        expected = [*history(5), user(50), reply(50)]
        pages: list[Any] = []
        before = None
        while True:
            page = await session.get_stored_items(3, before_id=before)
            if not page:
                break
            pages = page + pages
            before = page[0].id
        assert [s.item for s in pages] == expected
        ids = [s.id for s in pages]
        assert ids == sorted(ids)
    finally:
        await session.close()


# -- compatibility with the SDK's files ------------------------------------------------------


async def test_a_database_written_by_the_sdk_opens_with_its_branches(tmp_path: Path) -> None:
    path = tmp_path / "sdk.db"
    sdk = SDKAdvancedSQLiteSession(session_id="s", db_path=str(path), create_tables=True)
    await sdk.add_items(history(3))  # type: ignore[arg-type]
    branch = await sdk.create_branch_from_turn(2, "sdk-branch")
    await sdk.add_items([user(7)])  # type: ignore[arg-type]
    sdk.close()

    ours = AdvancedSQLiteSession(session_id="s", db_path=path)
    try:
        assert [b["branch_id"] for b in await ours.list_branches()] == ["main", branch]
        assert await ours.get_items() == history(3)
        assert await ours.get_items(branch_id=branch) == [*history(1), user(7)]
        await ours.switch_to_branch(branch)
        await ours.add_items([reply(7), user(8)])
        turns = await ours.get_conversation_turns()
        assert [t["turn"] for t in turns] == [1, 2, 3]
        assert await ours.get_items(2) == [reply(7), user(8)]
    finally:
        await ours.close()


async def test_item_addressing_can_target_another_branch(tmp_path: Path) -> None:
    session = AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "a.db", create_tables=True)
    try:
        await session.add_items(history(3))
        await session.create_branch_from_turn(3, "alt")
        await session.add_items([user(9)])
        await session.switch_to_branch("main")
        only_alt = (await session.get_stored_items(1, branch_id="alt"))[0]
        assert only_alt.item == user(9)
        assert await session.delete_stored_items([only_alt.id]) == 0  # not on main
        assert await session.delete_stored_items([only_alt.id], branch_id="alt") == 1
        assert await session.get_items(branch_id="alt") == history(2)
        shared = (await session.get_stored_items(1, branch_id="alt"))[0]
        assert await session.replace_stored_items({shared.id: reply(42)}) == 1
        assert (await session.get_items(branch_id="alt"))[-1] == reply(42)
        assert (await session.get_items(3))[0] == reply(42)  # shared with main
        assert structure_problems(tmp_path / "a.db") == []
    finally:
        await session.close()
