"""Edges of EncryptedSession's options: whole-second expiry, blank session ids, item size."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import SQLiteSession
from hypothesis import given, settings
from hypothesis import strategies as st

from encmem import EncryptedSession, InvalidItemError, ItemTooLargeError

from .budget import examples
from .conftest import TEST_KEY

MiB = 1024 * 1024


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def encrypted(path: Path, **options: Any) -> EncryptedSession:
    options.setdefault("encryption_key", TEST_KEY)
    return EncryptedSession(session_id="s", underlying_session=SQLiteSession("s", path), **options)


def stored_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        tables = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'agent_messages'")
        if tables.fetchone() is None:
            return 0
        return int(conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()[0])


# -- ttl: whole seconds, never shorter than asked --------------------------------------------


@settings(max_examples=examples(150), deadline=None)
@given(
    written=st.floats(1_800_000_000, 1_800_000_100),
    ttl=st.floats(1, 120),
    waited=st.floats(0, 200),
)
def test_an_item_lives_at_least_ttl_and_less_than_ttl_plus_one_second(
    tmp_path_factory: pytest.TempPathFactory, written: float, ttl: float, waited: float
) -> None:
    path = tmp_path_factory.mktemp("ttl") / "db.sqlite"
    clock = Clock(written)

    async def scenario() -> list[Any]:
        session = encrypted(path, ttl=ttl, clock=clock)
        async with session:
            await session.add_items([{"role": "user", "content": "hello"}])
            clock.now = written + waited
            return await session.get_items()

    items = asyncio.run(scenario())
    if waited <= ttl:
        assert items == [{"role": "user", "content": "hello"}], (written, ttl, waited)
    elif waited >= ttl + 1:
        assert items == [], (written, ttl, waited)


async def test_with_the_real_clock_a_just_written_item_is_always_readable(tmp_path: Path) -> None:
    """At ttl=1 s, 50 write-then-read rounds on the real clock all see the new item."""
    session = encrypted(tmp_path / "db.sqlite", ttl=1)
    seen = 0
    async with session:
        for round_ in range(50):
            await session.add_items([{"role": "user", "content": f"round {round_}"}])
            items = await session.get_items(limit=1)
            seen += items == [{"role": "user", "content": f"round {round_}"}]
            await asyncio.sleep(0.011)
    assert seen == 50


@pytest.mark.parametrize("ttl", [0.5, 0.999, 1e-9])
def test_a_ttl_under_one_second_is_refused_with_the_reason(tmp_path: Path, ttl: float) -> None:
    with pytest.raises(ValueError, match=r"at least 1 second .*whole seconds"):
        encrypted(tmp_path / "db.sqlite", ttl=ttl)


# -- session ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", [" ", "   ", "\t", "\n", "\u3000", " \u2003\r\n"])
def test_a_session_id_of_only_whitespace_is_refused_like_an_empty_one(
    tmp_path: Path, blank: str
) -> None:
    with pytest.raises(ValueError, match="only whitespace"):
        SQLiteSession(blank, tmp_path / "db.sqlite")
    with pytest.raises(ValueError, match="only whitespace"):
        EncryptedSession(
            session_id=blank,
            underlying_session=SQLiteSession("s", tmp_path / "db.sqlite"),
            encryption_key=TEST_KEY,
        )
    assert not (tmp_path / "db.sqlite").exists() or stored_rows(tmp_path / "db.sqlite") == 0


async def test_ids_with_some_whitespace_stay_valid_and_distinct(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    for sid in (" a", "a ", "a b"):
        async with SQLiteSession(sid, path) as session:
            await session.add_items([{"role": "user", "content": repr(sid)}])
    for sid in (" a", "a ", "a b"):
        async with SQLiteSession(sid, path) as session:
            assert await session.get_items() == [{"role": "user", "content": repr(sid)}]


# -- item size -------------------------------------------------------------------------------


async def test_an_item_over_the_default_16_mib_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    small = {"role": "user", "content": "fits"}
    big = {"role": "user", "content": "x" * (16 * MiB)}
    session = encrypted(path)
    assert session.max_item_bytes == 16 * MiB
    async with session:
        with pytest.raises(ItemTooLargeError) as caught:
            await session.add_items([small, big])
        assert await session.get_items() == []
    error = caught.value
    assert isinstance(error, InvalidItemError)
    assert (error.index, error.limit) == (1, 16 * MiB)
    assert error.size == len('{"role":"user","content":""}') + 16 * MiB
    assert "item 1" in str(error) and f"{error.size:,}" in str(error)
    assert "x" * 20 not in str(error)
    assert stored_rows(path) == 0


async def test_the_limit_counts_utf8_bytes_and_can_be_raised_or_lifted(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    item = {"content": "é" * 600}  # 600 characters, 1,200 bytes of UTF-8
    size = len('{"content":""}') + 1200
    async with encrypted(path, max_item_bytes=size - 1) as tight:
        with pytest.raises(ItemTooLargeError, match=f"{size:,} bytes"):
            await tight.add_items([item])
    async with encrypted(path, max_item_bytes=size) as exact:
        await exact.add_items([item])
    async with encrypted(path, max_item_bytes=None) as unlimited:
        await unlimited.add_items([item])
        assert await unlimited.get_items() == [item, item]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "16MiB", True])
def test_max_item_bytes_must_be_a_positive_int_or_none(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="max_item_bytes must be a positive int or None"):
        encrypted(tmp_path / "db.sqlite", max_item_bytes=bad)


# -- errors that point the right way ---------------------------------------------------------


async def test_a_missing_capability_names_the_class_and_what_has_it(tmp_path: Path) -> None:
    from agents.extensions.memory import AdvancedSQLiteSession as SDKAdvanced

    from encmem import UnsupportedOperation

    ours = encrypted(tmp_path / "a.db")
    with pytest.raises(UnsupportedOperation) as caught:
        await ours.get_items(1, branch_id="b")
    assert "encmem.backends.SQLiteSession does not offer" in str(caught.value)
    assert "use encmem.backends.AdvancedSQLiteSession" in str(caught.value)
    underlying = SDKAdvanced(session_id="s", db_path=tmp_path / "b.db", create_tables=True)
    sdk = EncryptedSession(underlying_session=underlying, encryption_key=TEST_KEY)
    with pytest.raises(UnsupportedOperation) as caught:
        await sdk.get_conversation_turns()
    assert "agents.extensions.memory" in str(caught.value)
    assert caught.value.capability == "UserTurnSource"


async def test_each_unreadable_kind_says_its_own_remedy(tmp_path: Path) -> None:
    from encmem import CorruptRowError, Keyring, PlaintextItemError, TamperedItemError, generate_key

    path = tmp_path / "db.sqlite"
    async with encrypted(path, encryption_key=Keyring({"k1": generate_key()})) as writer:
        await writer.add_items([{"role": "user", "content": "sealed"}])
    async with encrypted(path, encryption_key=Keyring({"k1": generate_key()})) as wrong:
        with pytest.raises(TamperedItemError) as tampered:
            await wrong.get_items()
    assert tampered.value.kid == "k1"
    assert "altered or moved" in str(tampered.value)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM agent_messages")
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) VALUES ('s', ?)",
            ('{"role": "user", "content": "plain"}',),
        )
    async with encrypted(path) as reader:
        with pytest.raises(PlaintextItemError) as plain:
            await reader.get_items()
    assert "encrypt_existing()" in str(plain.value)
    assert "key it was sealed under" not in str(plain.value)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE agent_messages SET message_data = '[1, 2]'")
    async with encrypted(path) as reader:
        with pytest.raises(CorruptRowError) as corrupt:
            await reader.get_items()
    assert "repair or delete the row" in str(corrupt.value)
