"""EncryptedSession over the SQLite backend: storage, tampering, keys, expiry, wrapping."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import SQLiteKeyStore, SQLiteSession

from encmem import (
    DecryptionError,
    EncryptedSession,
    InvalidItemError,
    Keyring,
    PlaintextItemError,
    TamperedItemError,
    UnknownKeyIdError,
    UnsupportedOperation,
    generate_key,
)

from .conftest import TEST_KEY
from .memory import objects_holding

CANARY = "canary-7f3a9 Zürich 東京 secret"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows(path: Path, session_id: str = "s") -> list[tuple[int, dict[str, Any]]]:
    with sqlite3.connect(path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'agent_messages'").fetchone():
            return []
        found = conn.execute(
            "SELECT id, message_data FROM agent_messages WHERE session_id = ? ORDER BY id",
            (session_id,),
        ).fetchall()
    return [(row_id, json.loads(data)) for row_id, data in found]


def rewrite(path: Path, row_id: int, stored: dict[str, Any]) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE agent_messages SET message_data = ? WHERE id = ?", (json.dumps(stored), row_id)
        )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "enc.db"


def encrypted(
    db: Path, key: Any = TEST_KEY, session_id: str = "s", **options: Any
) -> EncryptedSession:
    return EncryptedSession(
        session_id=session_id,
        underlying_session=SQLiteSession(session_id, db),
        encryption_key=key,
        **options,
    )


# -- what is stored --------------------------------------------------------------------------


async def test_stored_rows_hold_no_plaintext_content(db: Path) -> None:
    session = encrypted(db)
    await session.add_items(
        [
            {"role": "user", "content": CANARY},
            {
                "type": "function_call",
                "name": "lookup",
                "call_id": "c1",
                "arguments": json.dumps({"q": CANARY}),
            },
            {"type": "function_call_output", "call_id": "c1", "output": CANARY},
        ]
    )
    raw_file = db.read_bytes() + (
        db.with_name(db.name + "-wal").read_bytes()
        if db.with_name(db.name + "-wal").exists()
        else b""
    )
    for part in ("canary-7f3a9", "Zürich", "東京"):
        assert part.encode() not in raw_file
        assert part.encode("unicode_escape") not in raw_file
    stored = [item for _, item in rows(db)]
    assert [set(item) for item in stored] == [
        {"__enc__", "v", "kid", "seed", "payload", "role"},
        {"__enc__", "v", "kid", "seed", "payload", "type", "name"},
        {"__enc__", "v", "kid", "seed", "payload", "type"},
    ]
    assert stored[1]["name"] == "lookup" and stored[0]["role"] == "user"
    assert all(item["v"] == 4 and item["kid"] == "k" + item["kid"][1:] for item in stored)
    assert await session.get_items() == [
        {"role": "user", "content": CANARY},
        {
            "type": "function_call",
            "name": "lookup",
            "call_id": "c1",
            "arguments": json.dumps({"q": CANARY}),
        },
        {"type": "function_call_output", "call_id": "c1", "output": CANARY},
    ]


async def test_session_id_defaults_to_the_underlying_one(db: Path) -> None:
    session = EncryptedSession(underlying_session=SQLiteSession("abc", db), encryption_key=TEST_KEY)
    assert session.session_id == "abc"


async def test_session_id_mismatch_is_refused(db: Path) -> None:
    with pytest.raises(ValueError, match="differs from the underlying"):
        EncryptedSession(
            session_id="a", underlying_session=SQLiteSession("b", db), encryption_key=TEST_KEY
        )


async def test_bad_items_are_refused_before_anything_is_written(db: Path) -> None:
    session = encrypted(db)
    with pytest.raises(InvalidItemError, match="item 2"):
        await session.add_items([{"role": "user", "content": "ok"}, {"a": 1}, {"b": {1, 2}}])
    assert rows(db) == []


# -- tampering ---------------------------------------------------------------------------------


async def _one_item(db: Path) -> tuple[EncryptedSession, int, dict[str, Any]]:
    session = encrypted(db)
    await session.add_items([{"role": "user", "content": "hello"}])
    [(row_id, stored)] = rows(db)
    return session, row_id, stored


@pytest.mark.parametrize("offset", [0, 5, 20, 40, -45, -10, -1])
async def test_flipped_token_byte_is_rejected(db: Path, offset: int) -> None:
    session, row_id, stored = await _one_item(db)
    token = stored["payload"]
    index = offset % len(token)
    replacement = "A" if token[index] != "A" else "B"
    rewrite(db, row_id, {**stored, "payload": token[:index] + replacement + token[index + 1 :]})
    with pytest.raises(TamperedItemError):
        await session.get_items()
    with pytest.raises(TamperedItemError):
        await session.pop_item()
    assert len(rows(db)) == 1


@pytest.mark.parametrize(
    "edit",
    [
        {"role": "assistant"},
        {"type": "message"},
        {"name": "other_tool"},
        {"extra": "field"},
    ],
)
async def test_edited_clear_field_is_rejected(db: Path, edit: dict[str, Any]) -> None:
    session, row_id, stored = await _one_item(db)
    rewrite(db, row_id, {**stored, **edit})
    with pytest.raises(TamperedItemError):
        await session.get_items()


async def test_removed_clear_field_is_rejected(db: Path) -> None:
    session, row_id, stored = await _one_item(db)
    del stored["role"]
    rewrite(db, row_id, stored)
    with pytest.raises(TamperedItemError, match="clear fields"):
        await session.get_items()


async def test_swapped_kid_is_rejected(db: Path) -> None:
    ring = Keyring({"new": generate_key(), "old": TEST_KEY}, primary="old")
    session = encrypted(db, key=ring)
    await session.add_items([{"role": "user", "content": "hello"}])
    [(row_id, stored)] = rows(db)
    rewrite(db, row_id, {**stored, "kid": "new"})
    with pytest.raises(TamperedItemError):
        await session.get_items()
    rewrite(db, row_id, {**stored, "kid": "nobody"})
    with pytest.raises(UnknownKeyIdError, match=r"holds \['old', 'new'\]"):
        await session.get_items()


async def test_envelope_moved_to_another_session_is_rejected(db: Path) -> None:
    a, b = encrypted(db, session_id="a"), encrypted(db, session_id="b")
    await a.add_items([{"role": "user", "content": "for a only"}])
    await b.add_items([{"role": "user", "content": "b's own"}])
    [(_, from_a)] = rows(db, "a")
    [(b_id, _)] = rows(db, "b")
    rewrite(db, b_id, from_a)
    with pytest.raises(TamperedItemError) as info:
        await b.get_items()
    assert info.value.session_id == "b" and info.value.position == 1 and info.value.item_id == b_id


async def test_plaintext_item_is_reported_not_hidden(db: Path) -> None:
    plain = SQLiteSession("s", db)
    await plain.add_items([{"role": "user", "content": "written without encryption"}])
    session = encrypted(db)
    await session.add_items([{"role": "user", "content": "sealed"}])
    with pytest.raises(PlaintextItemError, match="item 2 from the newest"):
        await session.get_items()
    assert await session.get_items(1) == [{"role": "user", "content": "sealed"}]


async def test_error_messages_name_the_place_but_no_content_or_key(db: Path) -> None:
    session = encrypted(db)
    await session.add_items([{"role": "user", "content": CANARY}])
    wrong = encrypted(db, key=generate_key())
    with pytest.raises(DecryptionError) as info:
        await wrong.get_items()
    text = str(info.value)
    assert "session 's'" in text and "item 1 from the newest" in text
    assert "canary" not in text and TEST_KEY not in text


# -- wrong key ---------------------------------------------------------------------------------


async def test_wrong_key_raises_and_pop_deletes_nothing(db: Path) -> None:
    session = encrypted(db)
    await session.add_items([{"role": "user", "content": f"m{i}"} for i in range(5)])
    before = rows(db)
    wrong = encrypted(db, key=generate_key())
    with pytest.raises(UnknownKeyIdError):
        await wrong.get_items()
    with pytest.raises(UnknownKeyIdError):
        await wrong.get_items(2)
    for _ in range(3):
        with pytest.raises(UnknownKeyIdError):
            await wrong.pop_item()
    assert rows(db) == before
    assert len(await session.get_items()) == 5


async def test_wrong_key_under_the_same_kid_raises_and_deletes_nothing(db: Path) -> None:
    session = encrypted(db, key=Keyring({"prod": TEST_KEY}))
    await session.add_items([{"role": "user", "content": "m"}])
    wrong = encrypted(db, key=Keyring({"prod": generate_key()}))
    with pytest.raises(TamperedItemError):
        await wrong.pop_item()
    assert len(rows(db)) == 1


async def test_skip_mode_reads_past_unreadable_items_and_keeps_them(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A key since lost, and its seed kept in a key store of its own.
    lost = encrypted(db, key=generate_key(), key_store=SQLiteKeyStore(db.with_name("lost.db")))
    await lost.add_items([{"role": "user", "content": "under a key since lost"}])
    await lost.key_store.aclose()  # type: ignore[union-attr]
    # Skipping what it cannot read, this writer starts a new chain after it.
    session = encrypted(db, on_invalid="skip")
    await session.add_items([{"role": "user", "content": "readable"}])
    with caplog.at_level(logging.WARNING, logger="encmem"):
        assert await session.get_items() == [{"role": "user", "content": "readable"}]
        assert await session.get_items(1) == [{"role": "user", "content": "readable"}]
        assert await session.pop_item() == {"role": "user", "content": "readable"}
        assert await session.pop_item() is None
    assert len(rows(db)) == 1
    assert "skipped an unreadable item" in caplog.text
    assert "since lost" not in caplog.text


async def test_skip_mode_returns_only_what_links_back_from_the_head(db: Path) -> None:
    """Items older than one that cannot be opened cannot be proven to be this history's."""
    session = encrypted(db, on_invalid="skip")
    await session.add_items([{"role": "user", "content": f"m{n}"} for n in range(3)])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE agent_messages SET message_data = '[]' WHERE id = 2")
    assert await session.get_items() == [{"role": "user", "content": "m2"}]


async def test_raise_mode_refuses_to_extend_a_history_it_cannot_authenticate(db: Path) -> None:
    other = encrypted(db, key=generate_key())
    await other.add_items([{"role": "user", "content": "under another key"}])
    session = encrypted(db)
    with pytest.raises(UnknownKeyIdError, match=r"seed|history head"):
        await session.add_items([{"role": "user", "content": "refused"}])
    assert len(rows(db)) == 1


# -- expiry ------------------------------------------------------------------------------------


async def test_expired_items_vanish_from_reads_and_pops(db: Path) -> None:
    clock = Clock()
    session = encrypted(db, ttl=60, clock=clock)
    await session.add_items([{"role": "user", "content": "old"}])
    clock.now += 30
    await session.add_items([{"role": "user", "content": "newer"}])
    clock.now += 30  # the first item is exactly 60 s old: still valid
    assert len(await session.get_items()) == 2
    clock.now += 1
    assert await session.get_items() == [{"role": "user", "content": "newer"}]
    assert await session.get_items(5) == [{"role": "user", "content": "newer"}]
    clock.now += 30
    assert await session.get_items() == []
    assert await session.pop_item() is None
    assert rows(db) == []  # pop discarded the expired items it met


async def test_limit_counts_only_live_items(db: Path) -> None:
    clock = Clock()
    session = encrypted(db, ttl=100, clock=clock)
    for i in range(30):
        await session.add_items([{"role": "user", "content": f"old {i}"}])
    clock.now += 50
    await session.add_items([{"role": "user", "content": f"new {i}"} for i in range(3)])
    clock.now += 60
    assert await session.get_items(10) == [
        {"role": "user", "content": f"new {i}"} for i in range(3)
    ]


async def test_pop_discards_expired_and_returns_the_newest_live(db: Path) -> None:
    clock = Clock()
    session = encrypted(db, ttl=10, clock=clock)
    await session.add_items([{"role": "user", "content": "live"}])
    clock.now += 100
    session_fresh = encrypted(db, ttl=1000, clock=clock)
    assert await session_fresh.pop_item() == {"role": "user", "content": "live"}


async def test_ttl_none_never_expires(db: Path) -> None:
    clock = Clock()
    session = encrypted(db, ttl=None, clock=clock)
    await session.add_items([{"role": "user", "content": "forever"}])
    clock.now += 10**9
    assert await session.get_items() == [{"role": "user", "content": "forever"}]


@pytest.mark.parametrize("bad", [0, -5, 0.5, 0.999])
def test_ttl_under_one_second_is_refused(db: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="ttl must be at least 1 second"):
        encrypted(db, ttl=bad)


# -- keys and repr ---------------------------------------------------------------------------


def test_repr_shows_no_key_material(db: Path) -> None:
    key = generate_key()
    session = encrypted(db, key=key)
    for text in (repr(session), str(session), repr(session.keyring)):
        assert key not in text and key[:12] not in text
        assert "kid" in text or "k" in text


@pytest.mark.parametrize(
    "weak", ["your-secret-key", "hunter2", "a" * 64, "correcthorsebatterystaplecorrecthorsebattery"]
)
def test_password_like_keys_are_refused_with_the_fix(db: Path, weak: str) -> None:
    with pytest.raises(ValueError, match="from_passphrase") as info:
        encrypted(db, key=weak)
    assert weak not in str(info.value)


# -- wrapping ----------------------------------------------------------------------------------


async def test_public_attributes_pass_through_private_ones_do_not(db: Path) -> None:
    session = encrypted(db)
    assert session.db_path == db
    assert session.messages_table == "agent_messages"
    with pytest.raises(AttributeError):
        session._connection  # noqa: B018
    with pytest.raises(AttributeError):
        session.run_compaction  # noqa: B018


class WrapperAware:
    """A user session that opts into the SDK's ``wrapper`` keyword."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.items: list[Any] = []
        self.wrappers: list[Any] = []

    async def get_items(self, limit: int | None = None, *, wrapper: Any = None) -> list[Any]:
        self.wrappers.append(wrapper)
        return list(self.items if limit is None else self.items[-limit:] if limit else [])

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        self.wrappers.append(wrapper)
        self.items.extend(items)

    async def pop_item(self, *, wrapper: Any = None) -> Any:
        self.wrappers.append(wrapper)
        return self.items.pop() if self.items else None

    async def clear_session(self, *, wrapper: Any = None) -> None:
        self.wrappers.append(wrapper)
        self.items.clear()


class Legacy(WrapperAware):
    """A user session with the plain protocol signatures."""

    async def get_items(self, limit: int | None = None) -> list[Any]:  # type: ignore[override]
        return list(self.items if limit is None else self.items[-limit:] if limit else [])

    async def add_items(self, items: list[Any]) -> None:  # type: ignore[override]
        self.items.extend(items)

    async def pop_item(self) -> Any:  # type: ignore[override]
        return self.items.pop() if self.items else None

    async def clear_session(self) -> None:  # type: ignore[override]
        self.items.clear()


async def test_wrapper_is_forwarded_only_to_sessions_that_opt_in() -> None:
    token = object()
    aware = WrapperAware("w")
    session = EncryptedSession(underlying_session=aware, encryption_key=TEST_KEY)
    await session.add_items([{"role": "user", "content": "x"}], wrapper=token)
    assert await session.get_items(wrapper=token) == [{"role": "user", "content": "x"}]
    assert await session.pop_item(wrapper=token) == {"role": "user", "content": "x"}
    await session.clear_session(wrapper=token)
    # add (a look at the newest item to chain after it, then the add), get, pop (a look,
    # then the pop), clear
    assert aware.wrappers == [token] * 6
    legacy = Legacy("l")
    plain = EncryptedSession(underlying_session=legacy, encryption_key=TEST_KEY)
    await plain.add_items([{"role": "user", "content": "y"}], wrapper=token)
    assert await plain.get_items(1, wrapper=token) == [{"role": "user", "content": "y"}]


async def test_generic_pop_puts_an_unreadable_item_back() -> None:
    legacy = Legacy("g")
    # Skipping what it cannot read, the other key's writer starts a chain of its own.
    other = EncryptedSession(
        underlying_session=legacy, encryption_key=generate_key(), on_invalid="skip"
    )
    mine = EncryptedSession(underlying_session=legacy, encryption_key=TEST_KEY)
    await mine.add_items([{"role": "user", "content": "mine"}])
    await other.add_items([{"role": "user", "content": "theirs"}])
    snapshot = list(legacy.items)
    with pytest.raises(UnknownKeyIdError):
        await mine.pop_item()
    assert legacy.items == snapshot
    skipping = EncryptedSession(
        underlying_session=legacy, encryption_key=TEST_KEY, on_invalid="skip"
    )
    assert await skipping.pop_item() == {"role": "user", "content": "mine"}
    assert legacy.items == snapshot[1:]


async def test_generic_limit_reads_widen_past_expired_items() -> None:
    clock = Clock()
    legacy = Legacy("x")
    session = EncryptedSession(
        underlying_session=legacy, encryption_key=TEST_KEY, ttl=10, clock=clock
    )
    await session.add_items([{"role": "user", "content": "keep"}])
    clock.now += 5
    await session.add_items([{"role": "user", "content": f"n{i}"} for i in range(2)])
    clock.now += 6
    # "keep" is 11 s old now, the two others 6 s: only they are live.
    assert await session.get_items(3) == [
        {"role": "user", "content": "n0"},
        {"role": "user", "content": "n1"},
    ]


def test_server_side_sessions_are_refused() -> None:
    agents = pytest.importorskip("agents")
    conversations = agents.OpenAIConversationsSession.__new__(agents.OpenAIConversationsSession)
    with pytest.raises(UnsupportedOperation, match="cannot be wrapped"):
        EncryptedSession(session_id="x", underlying_session=conversations, encryption_key=TEST_KEY)


async def test_turn_queries_need_a_branching_backend(db: Path) -> None:
    session = encrypted(db)
    with pytest.raises(UnsupportedOperation, match="UserTurnSource"):
        await session.get_conversation_turns()


class BreaksOnReAdd(Legacy):
    """A store whose add_items starts failing on demand (a dropped connection, say)."""

    broken = False

    async def add_items(self, items: list[Any]) -> None:  # type: ignore[override]
        if self.broken:
            raise ConnectionError("lost the connection")
        self.items.extend(items)


async def _store_with_a_foreign_item() -> BreaksOnReAdd:
    store = BreaksOnReAdd("b")
    await EncryptedSession(underlying_session=store, encryption_key=generate_key()).add_items(
        [{"role": "user", "content": "theirs"}]
    )
    store.broken = True
    return store


async def test_generic_pop_never_takes_an_unreadable_item_off_the_store() -> None:
    store = await _store_with_a_foreign_item()
    snapshot = list(store.items)
    mine = EncryptedSession(underlying_session=store, encryption_key=TEST_KEY)
    with pytest.raises(UnknownKeyIdError):
        await mine.pop_item()
    assert store.items == snapshot  # looked at first, never popped: nothing to restore


async def test_generic_skip_pop_says_so_when_it_cannot_restore() -> None:
    store = await _store_with_a_foreign_item()
    skipping = EncryptedSession(
        underlying_session=store, encryption_key=TEST_KEY, on_invalid="skip"
    )
    with pytest.raises(DecryptionError, match="could not put them back") as info:
        await skipping.pop_item()
    assert info.value.items[0]["__enc__"] == 1  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_no_decrypted_item_outlives_clear_purge_or_rotation_in_memory(db: Path) -> None:
    clock = Clock()
    session = encrypted(db, ttl=60, clock=clock)
    marker = CANARY + "-in-memory"

    # The marker sits in a list: the collector never stops tracking lists, so the scan sees
    # every copy (a dict of strings alone may be untracked, and invisible to it).
    for action in (session.purge_expired, session.rotate_keys, session.clear_session):
        await session.add_items([{"role": "user", "content": [marker]}])
        assert len(await session.get_items()) >= 1
        assert objects_holding(marker) > 0  # the plaintext cache holds it, see SECURITY.md
        await action()
        assert objects_holding(marker) == 0
    off = encrypted(db, plaintext_cache=0)
    await off.add_items([{"role": "user", "content": [marker]}])
    assert [item["content"] for item in await off.get_items()] == [[marker]]
    assert objects_holding(marker) == 0
