"""Key rotation, expiry purge, migration and erasure, on every backend of ours."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import SQLiteSession, open_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encmem import (
    EncryptedSession,
    Keyring,
    UnsupportedOperation,
    encrypt_store,
    generate_key,
    purge_store,
    rotate_store,
)
from encmem._envelope import token_timestamp

from .budget import examples
from .stores import STORES, Store
from .strategies import items as any_item

OURS = [kind for kind, factory in STORES.items() if not getattr(factory, "encrypted_only", False)]
KEYS = {name: generate_key() for name in ("k1", "k2", "k3", "k4")}


class Clock:
    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=OURS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    store: Store = STORES[request.param](tmp_path)
    yield store
    await store.aclose()


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


async def raw_envelopes(underlying: Any) -> list[dict[str, Any]]:
    return [stored.item for stored in await underlying.get_stored_items(None)]


def msg(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}


# -- rotation ---------------------------------------------------------------------------------


@settings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    history=st.lists(any_item, min_size=1, max_size=12),
    rotations=st.lists(st.sampled_from(["k1", "k2", "k3", "k4"]), min_size=1, max_size=4),
)
async def test_any_rotation_sequence_keeps_history_and_seal_times(
    backend: Store, history: list[dict[str, Any]], rotations: list[str]
) -> None:
    session_id = sid()
    underlying = await backend.open(session_id)
    clock = Clock()
    first = EncryptedSession(
        underlying_session=underlying, encryption_key=Keyring({"k1": KEYS["k1"]}), clock=clock
    )
    for index, item in enumerate(history):
        clock.now += index  # distinct seal times
        await first.add_items([item])
    times = [token_timestamp(env["payload"]) for env in await raw_envelopes(underlying)]
    held = ["k1"]
    for primary in rotations:
        held = [primary, *(kid for kid in held if kid != primary)]
        ring = Keyring({kid: KEYS[kid] for kid in held})
        session = EncryptedSession(underlying_session=underlying, encryption_key=ring, clock=clock)
        counts = await session.rotate_keys(batch_size=5)
        assert counts["examined"] == len(history) and counts["unreadable"] == 0
        envelopes = await raw_envelopes(underlying)
        assert {env["kid"] for env in envelopes} == {primary}
        assert [token_timestamp(env["payload"]) for env in envelopes] == times
        assert await session.get_items() == history
        assert (await session.rotate_keys())["changed"] == 0  # idempotent
    only_primary = EncryptedSession(
        underlying_session=underlying, encryption_key=Keyring({held[0]: KEYS[held[0]]}), clock=clock
    )
    assert await only_primary.get_items() == history


class FailingAfter:
    """A real backend session whose replace_stored_items fails after ``ok`` calls."""

    def __init__(self, inner: Any, ok: int) -> None:
        self.inner, self.ok = inner, ok

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def replace_stored_items(self, replacements: Any) -> int:
        if self.ok == 0:
            raise RuntimeError("injected failure mid-rotation")
        self.ok -= 1
        result: int = await self.inner.replace_stored_items(replacements)
        return result


async def test_interrupted_rotation_leaves_all_readable_and_a_second_run_finishes(
    backend: Store,
) -> None:
    underlying = await backend.open(sid())
    old = EncryptedSession(
        underlying_session=underlying, encryption_key=Keyring({"old": KEYS["k1"]})
    )
    history = [msg(i) for i in range(10)]
    await old.add_items(history)
    both = Keyring({"new": KEYS["k2"], "old": KEYS["k1"]})
    flaky = EncryptedSession(
        session_id=underlying.session_id,
        underlying_session=FailingAfter(underlying, ok=1),
        encryption_key=both,
    )
    # FailingAfter hides the capability check behind __getattr__; check it really is used.
    with pytest.raises(RuntimeError, match="injected"):
        await flaky.rotate_keys(batch_size=3)
    kids = [env["kid"] for env in await raw_envelopes(underlying)]
    assert kids.count("new") == 3 and kids.count("old") == 7
    session = EncryptedSession(underlying_session=underlying, encryption_key=both)
    assert await session.get_items() == history
    counts = await session.rotate_keys(batch_size=3)
    assert counts["changed"] == 7 and counts["unchanged"] == 3
    assert {env["kid"] for env in await raw_envelopes(underlying)} == {"new"}
    assert await session.get_items() == history


async def test_rotation_needs_item_addressing(tmp_path: Path) -> None:
    agents = pytest.importorskip("agents")
    session = EncryptedSession(
        underlying_session=agents.SQLiteSession("s", str(tmp_path / "x.db")),
        encryption_key=KEYS["k1"],
    )
    with pytest.raises(UnsupportedOperation, match="ItemAddressing"):
        await session.rotate_keys()
    with pytest.raises(UnsupportedOperation, match="ItemAddressing"):
        await session.purge_expired()


# -- purge ------------------------------------------------------------------------------------


async def test_purge_deletes_exactly_the_expired_items(backend: Store) -> None:
    clock = Clock()
    underlying = await backend.open(sid())
    session = EncryptedSession(
        underlying_session=underlying, encryption_key=KEYS["k1"], ttl=100, clock=clock
    )
    for i in range(12):
        await session.add_items([msg(i)])
        clock.now += 10
    # now = start + 120: items sealed at start+0..start+10 are older than 100 s + tolerance
    clock.now += 1
    expected_live = [msg(i) for i in range(12) if (11 - i) * 10 + 11 <= 100]
    before = await raw_envelopes(underlying)
    deleted = await session.purge_expired(batch_size=4)
    after = await raw_envelopes(underlying)
    assert deleted == len(before) - len(after) == 12 - len(expected_live)
    assert after == before[-len(expected_live) :]
    assert await session.get_items() == expected_live
    assert await session.purge_expired() == 0


async def test_purge_never_deletes_unreadable_items(backend: Store) -> None:
    clock = Clock()
    underlying = await backend.open(sid())
    foreign = EncryptedSession(
        underlying_session=underlying, encryption_key=KEYS["k2"], ttl=10, clock=clock
    )
    await foreign.add_items([msg(0)])
    clock.now += 1000
    mine = EncryptedSession(
        underlying_session=underlying,
        encryption_key=KEYS["k1"],
        ttl=10,
        clock=clock,
        on_invalid="skip",
    )
    assert await mine.purge_expired() == 0
    assert len(await raw_envelopes(underlying)) == 1


# -- migration --------------------------------------------------------------------------------


async def test_encrypt_existing_turns_plaintext_and_v1_into_one_chain(tmp_path: Path) -> None:
    agents = pytest.importorskip("agents")
    from agents.extensions.memory import EncryptedSession as SDKEncryptedSession

    path = tmp_path / "mixed.db"
    key = KEYS["k1"]
    plain_sdk = agents.SQLiteSession("s", str(path))
    await plain_sdk.add_items([msg(0), msg(1)])
    sdk = SDKEncryptedSession("s", plain_sdk, key)
    await sdk.add_items([msg(2), msg(3)])
    plain_sdk.close()
    underlying = SQLiteSession("s", path)
    ours = EncryptedSession(underlying_session=underlying, encryption_key=key)
    await ours.add_items([msg(4)])
    counts = await ours.encrypt_existing(batch_size=2)
    # The item sealed by encmem started a chain of one; the whole session is one chain now.
    assert counts == {"examined": 5, "changed": 5, "unchanged": 0, "unreadable": 0}
    envelopes = await raw_envelopes(underlying)
    assert [env["v"] for env in envelopes] == [4] * 5  # chained, under a seeded key
    assert await ours.get_items() == [msg(i) for i in range(5)]
    assert await ours.verify_history() == 5
    assert (await ours.encrypt_existing())["changed"] == 0
    await underlying.close()


# -- erasure ----------------------------------------------------------------------------------


CANARIES = ["erase-canary-1f9e", "Löschprobe-ä7", "消去テスト"]


def file_bytes(path: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal", "-journal"):
        part = Path(str(path) + suffix)
        if part.exists():
            data += part.read_bytes()
    return data


@pytest.mark.parametrize("encrypted", [False, True])
async def test_clear_session_leaves_no_recoverable_content(tmp_path: Path, encrypted: bool) -> None:
    path = tmp_path / "erase.db"
    underlying = SQLiteSession("victim", path)
    session: Any = (
        EncryptedSession(underlying_session=underlying, encryption_key=KEYS["k1"])
        if encrypted
        else underlying
    )
    bystander = SQLiteSession("bystander", path)
    for round_ in range(20):
        await session.add_items(
            [{"role": "user", "content": f"{c} {round_} " + "x" * 300} for c in CANARIES]
        )
        await bystander.add_items([{"role": "user", "content": "keep me"}])
    if not encrypted:
        assert CANARIES[0].encode() in file_bytes(path)
    first = (await raw_envelopes(underlying))[0]
    marker = (first["payload"] if encrypted else json.dumps(first["content"]))[:40].encode()
    assert marker in file_bytes(path)
    await session.clear_session()
    data = file_bytes(path)
    for canary in CANARIES:
        assert canary.encode() not in data
    assert marker not in data
    assert await bystander.get_items(1) == [{"role": "user", "content": "keep me"}]
    await underlying.close()
    await bystander.close()


async def test_erase_session_removes_every_row_on_every_table(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    session = EncryptedSession(
        underlying_session=SQLiteSession("gone", path), encryption_key=KEYS["k1"]
    )
    other = SQLiteSession("stays", path)
    await session.add_items([{"role": "user", "content": f"{c}" * 20} for c in CANARIES])
    await other.add_items([msg(1)])
    store = await open_store(path)
    try:
        assert await store.session_ids() == ["gone", "stays"]
        removed = await store.erase_session("gone")
        # the items, the session row, the history head and the seed
        assert removed == len(CANARIES) + 3
        assert await store.session_ids() == ["stays"]
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT COUNT(*) FROM agent_messages WHERE session_id = 'gone'"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT COUNT(*) FROM agent_sessions WHERE session_id = 'gone'"
        ).fetchone() == (0,)
    data = file_bytes(path)
    for canary in CANARIES:
        assert canary.encode() not in data
    assert await other.get_items() == [msg(1)]
    await other.close()
    await session.close()


# -- store-wide -------------------------------------------------------------------------------


async def test_store_wide_rotate_purge_and_encrypt(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    clock = Clock()
    old = Keyring({"old": KEYS["k1"]})
    for n in range(5):
        s = EncryptedSession(
            underlying_session=SQLiteSession(f"s{n}", path), encryption_key=old, clock=clock
        )
        await s.add_items([msg(i) for i in range(7)])
        await s.close()
    plain = SQLiteSession("legacy", path)
    await plain.add_items([msg(0), msg(1)])
    await plain.close()
    ring = Keyring({"new": KEYS["k2"], "old": KEYS["k1"]})
    seen: list[tuple[int, int]] = []
    store = await open_store(path)
    try:
        encrypted = await encrypt_store(store, ring, clock=clock, batch_size=3)
        assert encrypted["changed"] == 2 and encrypted["sessions"] == 6
        rotated = await rotate_store(
            store, ring, clock=clock, batch_size=4, progress=lambda d, t: seen.append((d, t))
        )
        assert rotated == {
            "sessions": 6,
            "dry_run": False,
            "examined": 37,
            "changed": 35,
            "unchanged": 2,
            "unreadable": 0,
        }
        assert seen[-1] == (37, 37) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert (await rotate_store(store, ring, clock=clock))["changed"] == 0
        clock.now += 3600
        purged = await purge_store(store, ring, ttl=60, clock=clock)
        assert purged["changed"] == 37 and purged["unchanged"] == 0
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone() == (0,)


async def test_purge_and_rotate_reach_every_branch(tmp_path: Path) -> None:
    from encmem.backends import AdvancedSQLiteSession

    clock = Clock()
    underlying = AdvancedSQLiteSession(
        session_id="b", db_path=tmp_path / "adv.db", create_tables=True
    )
    old = EncryptedSession(
        underlying_session=underlying,
        encryption_key=Keyring({"old": KEYS["k1"]}),
        ttl=100,
        clock=clock,
    )
    await old.add_items([msg(0), msg(1)])
    clock.now += 60
    await old.add_items([msg(2), msg(3)])
    branch = await old.create_branch_from_turn(2, "alt")  # copies turn 1 (msg 0, 1)
    await old.add_items([msg(4)])
    await underlying.switch_to_branch("main")
    ring = Keyring({"new": KEYS["k2"], "old": KEYS["k1"]})
    session = EncryptedSession(
        underlying_session=underlying, encryption_key=ring, ttl=100, clock=clock
    )
    assert (await session.rotate_keys())["changed"] == 5
    for name in ("main", branch):
        envelopes = [s.item for s in await underlying.get_stored_items(None, branch_id=name)]
        assert {env["kid"] for env in envelopes} == {"new"}
    clock.now += 50  # msg 0 and 1 are 110 s old now: expired on both branches
    assert await session.purge_expired() >= 2
    assert await session.get_items() == [msg(2), msg(3)]
    assert await session.get_items(branch_id=branch) == [msg(4)]
    await underlying.close()
