"""The encmem command on PostgreSQL stores of AdvancedSQLAlchemySession: every subcommand keeps
branches, turns and usage; ``encmem schema`` prints DDL a DBA can apply to an empty database.

The advanced tables have fixed names, so each test gets a database of its own on the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from encmem import EncryptedSession, Keyring, MissingTablesError

from .pg import fresh_database, run_sync
from .test_advanced import run_result
from .test_cli import NEW, OLD, Clock, run

Branches = dict[str, list[Any]]


@pytest.fixture
def database() -> Iterator[str]:
    """The postgresql+asyncpg:// URL of a fresh, empty database, dropped afterwards."""
    with fresh_database() as url:
        yield url


def libpq(url: str) -> str:
    """The same URL as people write it for libpq: ``postgresql://``."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _open(url: str, session_id: str, key: str | None, **options: Any) -> Any:
    from encmem.backends import AdvancedSQLAlchemySession

    underlying = AdvancedSQLAlchemySession.from_url(session_id, url=url, create_tables=True)
    if key is None:
        return underlying
    return EncryptedSession(
        underlying_session=underlying, encryption_key=Keyring(key), ttl=None, **options
    )


async def _fill_branched(url: str, session_id: str, key: str | None, **options: Any) -> None:
    """Three turns on main, a branch from turn 2 with a turn of its own, usage on both."""
    session = await _open(url, session_id, key, **options)
    for n in range(3):
        await session.add_items(
            [{"role": "user", "content": f"{session_id} q{n}"},
             {"role": "assistant", "content": f"{session_id} a{n}"}]
        )  # fmt: skip
        await session.store_run_usage(run_result(1, 10 + n, n))
    await session.create_branch_from_turn(2, "alt")
    await session.add_items([{"role": "user", "content": f"{session_id} alt"}])
    await session.store_run_usage(run_result(1, 7, 2))
    await session.switch_to_branch("main")
    await (session.underlying_session if key else session).close()


async def _branches(url: str, session_id: str, key: str | None) -> Branches:
    """Each branch's items, turns and usage, as the session reads them."""
    session = await _open(url, session_id, key)
    found: Branches = {}
    try:
        for branch in sorted(b["branch_id"] for b in await session.list_branches()):
            await session.switch_to_branch(branch)
            turns = await session.get_conversation_turns(branch)
            usage = await session.get_turn_usage(branch_id=branch)
            found[branch] = [await session.get_items(), turns, usage]
    finally:
        await (session.underlying_session if key else session).close()
    for state in found.values():  # when a turn was read is no part of its content
        for turn in state[1]:
            turn.pop("timestamp", None)
    return found


def _read(url: str, session_id: str, key: str | None) -> Branches:
    return asyncio.run(_branches(url, session_id, key))


def _rows(url: str, session_id: str) -> dict[str, int]:
    tables = ("agent_messages", "agent_messages_heads", "message_structure", "turn_usage",
              "session_branches", "agent_sessions")  # fmt: skip
    return {
        table: run_sync(url, f"SELECT COUNT(*) FROM {table} WHERE session_id = :s",
                        {"s": session_id})[0][0]
        for table in tables
    }  # fmt: skip


@pytest.mark.pg
@pytest.mark.parametrize("scheme", ["postgresql+asyncpg", "postgresql"])
def test_every_command_keeps_branches_turns_and_usage(database: str, scheme: str) -> None:
    url = database if scheme == "postgresql+asyncpg" else libpq(database)
    old = f"old:{OLD}"
    asyncio.run(_fill_branched(database, "s0", {"old": OLD}))
    asyncio.run(_fill_branched(database, "s1", {"old": OLD}))
    before = {sid: _read(database, sid, {"old": OLD}) for sid in ("s0", "s1")}
    assert sorted(before["s0"]) == ["alt", "main"] and len(before["s0"]["alt"][0]) == 3

    listed = json.loads(run("inspect", url, "--json", keys=old).stdout)
    assert listed["totals"]["sessions"] == 2 and listed["totals"]["unreadable"] == 0
    assert [s["branches"] for s in listed["sessions"]] == [2, 2]
    checked = run("verify", url, "--json", keys=old)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["histories"] == 4
    heads = run("head", url, keys=old)
    assert heads.returncode == 0, heads.stderr
    names = [line.split("=")[0] for line in heads.stdout.splitlines()]
    assert sorted(names) == ["s0@alt", "s0@main", "s1@alt", "s1@main"]
    main_anchor = next(line for line in heads.stdout.splitlines() if line.startswith("s0@main"))

    rotated = run("rotate", url, "--json", keys=f"new:{NEW},{old}")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["changed"] == 14  # 7 stored items per session
    stored = run_sync(database, "SELECT message_data FROM agent_messages")
    kids = {json.loads(row[0])["kid"] for row in stored}
    assert kids == {"new"}
    for sid in ("s0", "s1"):
        assert _read(database, sid, {"new": NEW}) == before[sid]
    assert run("verify", url, keys=f"new:{NEW}").returncode == 0

    exported = run("export", url, "--session", "s1", keys=f"new:{NEW}")
    assert exported.returncode == 0, exported.stderr
    contents = [json.loads(line)["item"]["content"] for line in exported.stdout.splitlines()]
    assert "s1 alt" in contents and "s1 a2" in contents

    erased = run("erase", url, "--session", "s0", "--yes", "--json")
    assert erased.returncode == 0, erased.stderr
    assert sum(json.loads(erased.stdout)["rows_removed"].values()) > 0  # per table
    assert set(_rows(database, "s0").values()) == {0}
    assert _read(database, "s1", {"new": NEW}) == before["s1"]
    # after rotation, the anchor of main names a head sealed anew: rotation re-chains
    assert main_anchor.startswith("s0@main=")


@pytest.mark.pg
def test_purge_removes_only_expired_items_and_keeps_the_branches_of_the_rest(
    database: str,
) -> None:
    past = Clock(time.time() - 40 * 86400)
    asyncio.run(_fill_branched(database, "old", {"old": OLD}, clock=past))
    asyncio.run(_fill_branched(database, "fresh", {"old": OLD}))
    fresh = _read(database, "fresh", {"old": OLD})
    dry = run("purge", libpq(database), "--ttl", "30d", "--dry-run", "--json", keys=f"old:{OLD}")
    assert dry.returncode == 0, dry.stderr
    purged = run("purge", database, "--ttl", "30d", "--json", keys=f"old:{OLD}")
    assert purged.returncode == 0, purged.stderr
    # counted per branch, as on SQLite: 6 items on main, 3 on the branch
    assert json.loads(purged.stdout)["changed"] == json.loads(dry.stdout)["changed"] == 9
    assert _read(database, "fresh", {"old": OLD}) == fresh
    assert all(state[0] == [] for state in _read(database, "old", {"old": OLD}).values())
    assert run("verify", database, keys=f"old:{OLD}").returncode == 0


@pytest.mark.pg
def test_encrypt_seals_a_plaintext_advanced_store_branch_by_branch(database: str) -> None:
    asyncio.run(_fill_branched(database, "p0", None))
    plain = _read(database, "p0", None)
    sealed = run("encrypt", libpq(database), "--json", keys=f"new:{NEW}")
    assert sealed.returncode == 0, sealed.stderr
    assert json.loads(sealed.stdout)["changed"] == 7
    rows = run_sync(database, "SELECT message_data FROM agent_messages")
    assert all("content" not in json.loads(r[0]) for r in rows)
    assert _read(database, "p0", {"new": NEW}) == plain
    assert run("verify", database, keys=f"new:{NEW}").returncode == 0


# -- encmem schema ------------------------------------------------------------------------


def _apply(url: str, sql: str) -> None:
    for statement in sql.split(";"):
        body = "\n".join(
            line for line in statement.splitlines() if not line.startswith("--")
        ).strip()
        if body:
            run_sync(url, body)


@pytest.mark.pg
@pytest.mark.parametrize("advanced", [False, True], ids=["plain", "advanced"])
def test_schema_output_applied_to_an_empty_database_is_all_a_session_needs(
    database: str, advanced: bool
) -> None:
    from encmem.backends import AdvancedSQLAlchemySession, SQLAlchemySession

    kind = AdvancedSQLAlchemySession if advanced else SQLAlchemySession

    async def use(**options: Any) -> list[Any]:
        session = EncryptedSession(
            underlying_session=kind.from_url("s", url=database, **options),
            encryption_key=Keyring({"k": OLD}),
        )
        try:
            await session.add_items([{"role": "user", "content": "hi"}])
            return await session.get_items()
        finally:
            await session.underlying_session.close()

    with pytest.raises(MissingTablesError, match=r"encmem schema --url URL") as refused:
        asyncio.run(use(create_tables=False))
    assert "agent_sessions" in refused.value.tables
    assert ("--advanced" in str(refused.value)) is advanced
    assert (
        run_sync(database, "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'")[0][0] == 0
    )

    flags = ["--advanced"] if advanced else []
    printed = run("schema", "--url", libpq(database), *flags)
    assert printed.returncode == 0, printed.stderr
    assert ("message_structure" in printed.stdout) is advanced
    _apply(database, printed.stdout)
    _apply(database, printed.stdout)  # IF NOT EXISTS: applying it twice changes nothing
    assert asyncio.run(use(create_tables=False)) == [{"role": "user", "content": "hi"}]
    indexes = {r[0] for r in run_sync(database, "SELECT indexname FROM pg_indexes")}
    assert "idx_agent_messages_session_id" in indexes
    assert ("encmem_message_structure_branch_seq" in indexes) is advanced


def test_schema_takes_table_names_and_connects_nowhere() -> None:
    unreachable = "postgresql://nobody@/nothing?host=/nonexistent"
    done = run("schema", "--url", unreachable, "--sessions-table", "s1", "--messages-table", "m1")
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE IF NOT EXISTS m1_heads" in done.stdout
    assert "REFERENCES s1 (session_id)" in done.stdout and "BIGSERIAL" in done.stdout
    sqlite = run("schema", "--url", "sqlite+aiosqlite:///x.db", "--advanced")
    assert sqlite.returncode == 0 and "AUTOINCREMENT" in sqlite.stdout
    bad = run("schema", "--url", "postgresql://x/y", "--messages-table", "no;pe")
    assert bad.returncode == 2
    path = run("schema", "--url", "store.db")
    assert path.returncode == 4 and "database URL" in path.stderr
