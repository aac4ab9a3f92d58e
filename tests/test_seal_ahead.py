"""Appends sealed before their transaction: used only when the branch's head is still the one
this object wrote last; otherwise sealed again inside the transaction, after the head found
there. Whoever wrote in between, the history stays whole and in order; and no append stays
under a seed that is no longer the very row the writer opened."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import SQLiteKeyStore, SQLiteSession

from encmem import DecryptionError, EncryptedSession, Keyring
from encmem._protocol import StoredSeed

from .conftest import TEST_KEY
from .history_attacks import BACKENDS, HEADED, MESSAGES, SID, connect
from .key_stores import PassThrough

SEEDS = f"{MESSAGES}_seeds"


def _turn(label: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{label}-q"}, {"role": "assistant", "content": label}]


@pytest.mark.parametrize("backend", HEADED)
async def test_two_objects_taking_turns_at_writing_keep_one_history(
    tmp_path: Path, backend: str
) -> None:
    path = tmp_path / "ahead.db"
    stores = [BACKENDS[backend].open(path, SID) for _ in range(2)]
    first, second = (
        EncryptedSession(underlying_session=store, encryption_key=TEST_KEY, ttl=None)
        for store in stores
    )
    try:
        expected: list[dict[str, Any]] = []
        # first writes on (its own head), second cuts in, first writes twice more (the first
        # of those after a head it did not write), then a pop by second, then first again.
        for writer, label in [
            (first, "a1"),
            (first, "a2"),
            (second, "b1"),
            (first, "a3"),
            (first, "a4"),
            (first, "a5"),
        ]:
            await writer.add_items(_turn(label))
            expected += _turn(label)
        assert await second.pop_item() == expected.pop()
        await first.add_items(_turn("a6"))
        expected += _turn("a6")
        await first.add_items(_turn("a7"))
        expected += _turn("a7")

        for reader in (first, second):
            assert await reader.get_items() == expected
            assert await reader.verify_history() == len(expected)
    finally:
        for store in stores:
            await store.close()


@pytest.mark.parametrize("backend", HEADED)
async def test_an_append_sealed_ahead_is_not_stored_under_a_seed_destroyed_meanwhile(
    tmp_path: Path, backend: str
) -> None:
    path = tmp_path / "seed.db"
    store = BACKENDS[backend].open(path, SID)
    writer = EncryptedSession(underlying_session=store, encryption_key=TEST_KEY, ttl=None)
    try:
        await writer.add_items(_turn("before"))  # the writer now knows its head and its seed
        await store.destroy_seed(SID)  # the head stays; the items before it can't be opened
        await writer.add_items(_turn("after"))
    finally:
        await store.close()

    # A fresh object finds the new items under a seed the store holds, not the destroyed one.
    reopened = BACKENDS[backend].open(path, SID)
    reader = EncryptedSession(
        underlying_session=reopened, encryption_key=TEST_KEY, ttl=None, on_invalid="skip"
    )
    try:
        assert await reader.get_items(2) == _turn("after")
    finally:
        await reopened.close()


@pytest.mark.parametrize("backend", HEADED)
async def test_a_pop_after_items_sealed_before_chains_keeps_them_readable(
    tmp_path: Path, backend: str
) -> None:
    # Items sealed before chains (v2 envelopes), then a chain after them: the head says
    # the chain may follow such items. A pop must keep saying so, and so must the next
    # append (sealed ahead from the head the pop wrote).
    path = tmp_path / "legacy.db"
    keyring = Keyring({"k1": TEST_KEY})
    key = keyring.session_key("k1", SID)
    assert key is not None
    old = [{"role": "user", "content": f"v2-{n}"} for n in range(2)]
    store = BACKENDS[backend].open(path, SID)
    envelopes = [
        {
            "__enc__": 1,
            "v": 2,
            "kid": "k1",
            "payload": key.seal(json.dumps(item).encode(), int(time.time()) - 5),
            "role": "user",
        }
        for item in old
    ]
    await store.add_items(envelopes)
    session = EncryptedSession(
        underlying_session=store, encryption_key=keyring, ttl=None, key_store=None
    )
    try:
        await session.add_items(_turn("c1") + _turn("c2"))
        assert await session.pop_item() == _turn("c2")[-1]
        expected = old + _turn("c1") + _turn("c2")[:1]
        assert await session.get_items() == expected
        await session.add_items(_turn("c3"))
        assert await session.get_items() == expected + _turn("c3")
        assert await session.verify_history() == len(expected) + 2
    finally:
        await store.close()


@pytest.mark.parametrize("backend", HEADED)
@pytest.mark.parametrize("how", ["destroy_seed", "clear_session"])
async def test_no_append_is_sealed_under_a_seed_row_put_back_with_other_content(
    tmp_path: Path, backend: str, how: str
) -> None:
    # A writer that remembers the session's seed meets, after the seed was destroyed, a seed
    # row under the same id that is not the one it opened (here: another session's sealed
    # seed). It must refuse to write rather than seal more items under the destroyed seed.
    path = tmp_path / "forged.db"
    stores = [BACKENDS[backend].open(path, sid) for sid in (SID, SID, "other")]
    writer, eraser, other = (
        EncryptedSession(underlying_session=store, encryption_key=TEST_KEY, ttl=None)
        for store in stores
    )
    try:
        await writer.add_items(_turn("before"))
        await other.add_items(_turn("elsewhere"))
        with connect(path) as conn:
            seed_id, kid = conn.execute(
                f"SELECT seed_id, kid FROM {SEEDS} WHERE session_id = ?", (SID,)
            ).fetchone()
            (sealed,) = conn.execute(
                f"SELECT sealed FROM {SEEDS} WHERE session_id = ?", ("other",)
            ).fetchone()
        if how == "destroy_seed":
            await stores[0].destroy_seed(SID)  # the head and the rows stay
        else:
            await eraser.clear_session()
        with connect(path) as conn:
            conn.execute(
                f"INSERT INTO {SEEDS} (session_id, seed_id, kid, sealed) VALUES (?, ?, ?, ?)",
                (SID, seed_id, kid, sealed),
            )
            before = _rows_under(conn, seed_id)

        with pytest.raises(DecryptionError):
            await writer.add_items(_turn("after"))
        with connect(path) as conn:
            assert _rows_under(conn, seed_id) == before
    finally:
        for store in stores:
            await store.close()


def _rows_under(conn: Any, seed_id: str) -> int:
    found = conn.execute(
        f"SELECT COUNT(*) FROM {MESSAGES} WHERE message_data LIKE ?", (f'%"seed":"{seed_id}"%',)
    ).fetchone()
    return int(found[0])


class ForgedAfterFirstLookup(PassThrough):
    """A separate key store that answers its first lookup truly, then with the session's
    seed id over another sealed seed: a row put back under the same id with other content."""

    def __init__(self, inner: Any, forged: str) -> None:
        super().__init__(inner)
        self.forged, self.lookups = forged, 0

    async def get_seed(self, session_id: str) -> Any:
        found = await self.inner.get_seed(session_id)
        self.lookups += 1
        if self.lookups > 1 and found is not None:
            return StoredSeed(found.seed_id, found.kid, self.forged)
        return found


async def test_an_append_is_taken_back_when_its_seed_row_changes_content_under_the_same_id(
    tmp_path: Path,
) -> None:
    keys = SQLiteKeyStore(tmp_path / "keys.db")
    other = EncryptedSession(
        "other", SQLiteSession("other", tmp_path / "o.db"), TEST_KEY, key_store=keys
    )
    await other.add_items(_turn("elsewhere"))
    forged = await keys.get_seed("other")
    assert forged is not None
    store = SQLiteSession(SID, tmp_path / "s.db")
    lying = ForgedAfterFirstLookup(keys, forged.sealed)
    writer = EncryptedSession(SID, store, TEST_KEY, ttl=None, key_store=lying)
    try:
        with pytest.raises(DecryptionError):
            await writer.add_items(_turn("taken back"))
        assert await store.get_items() == []  # the append was taken back
    finally:
        await store.close()
        await other.underlying_session.close()
        await keys.close()
