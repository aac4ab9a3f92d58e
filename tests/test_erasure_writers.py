"""A writer that keeps its session object across an erase never seals under the destroyed seed.

An EncryptedSession over a store that keeps its own seeds remembers the seed it wrote with and
has each later append check, in the append's own transaction, that it is still the session's.
An erase made through another object (here: the store, as ``encmem erase`` does) destroys the
seed; the writer's next append must notice, ask for the session's seed again (a new one) and
write under it, so that what it writes after the erase is readable by everyone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from encmem.backends import (
    AdvancedSQLiteSession,
    SQLAlchemyKeyStore,
    SQLAlchemySession,
    SQLiteKeyStore,
    SQLiteSession,
    open_store,
)

from encmem import EncryptedSession, Keyring, StoreError, erase_session, generate_key

from .key_stores import PassThrough
from .pg import pg_url, unique_tables

KEYRING = Keyring({"k1": generate_key()})
SESSION = "writer-6d1c0e2a"
BEFORE = [{"role": "user", "content": f"before erase {n}"} for n in range(3)]
AFTER = [{"role": "assistant", "content": f"after erase {n}"} for n in range(2)]


class Place:
    """One store of a kind: how to open a backend on it, and what open_store takes."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tables: dict[str, str] = {}
        if kind == "sqlalchemy-pg":
            self.tables = unique_tables()
            self.target = pg_url()
        elif kind == "sqlalchemy-sqlite":
            self.target = f"sqlite+aiosqlite:///{tmp / 'store.db'}"
        else:
            self.target = str(tmp / "store.db")

    def backend(self) -> Any:
        if self.kind == "sqlite":
            return SQLiteSession(SESSION, self.target)
        if self.kind == "advanced":
            return AdvancedSQLiteSession(
                session_id=SESSION, db_path=self.target, create_tables=True
            )
        return SQLAlchemySession.from_url(
            SESSION, url=self.target, create_tables=True, **self.tables
        )

    async def erase(self) -> None:
        async with await open_store(self.target, **self.tables) as store:
            receipt = await erase_session(store, SESSION)
        assert receipt.seed_destroyed


async def seed_ids(place: Place) -> set[str]:
    """The seed ids the session's stored envelopes name (read without any key)."""
    backend = place.backend()
    try:
        return {envelope["seed"] for envelope in await backend.get_items()}
    finally:
        await backend.close()


@pytest.mark.parametrize("kind", ["sqlite", "advanced", "sqlalchemy-sqlite", "sqlalchemy-pg"])
async def test_a_writer_writes_after_an_erase_under_the_new_seed(tmp_path: Path, kind: str) -> None:
    place = Place(kind, tmp_path)
    backend = place.backend()
    writer = EncryptedSession(SESSION, backend, KEYRING, ttl=None)
    try:
        await writer.add_items(BEFORE[:1])
        await writer.add_items(BEFORE[1:])  # the second append relies on the remembered seed
        (destroyed,) = await seed_ids(place)
        await place.erase()
        await writer.add_items(AFTER)
        assert await writer.get_items() == AFTER
    finally:
        await backend.close()

    after = await seed_ids(place)
    assert len(after) == 1 and destroyed not in after
    reader_backend = place.backend()
    async with EncryptedSession(SESSION, reader_backend, KEYRING, ttl=None) as reader:
        assert await reader.get_items() == AFTER


class EraseAfterLookup(PassThrough):
    """A separate key store through which, once armed, a complete erase runs right after the
    writer asked for the seed: what another process may do at that moment."""

    def __init__(self, inner: SQLiteKeyStore, place: Place) -> None:
        super().__init__(inner)
        self.place, self.armed = place, False

    async def get_seed(self, session_id: str) -> Any:
        found = await self.inner.get_seed(session_id)
        if self.armed:
            self.armed = False
            async with await open_store(self.place.target, **self.place.tables) as store:
                await erase_session(store, SESSION, key_store=self.inner)
        return found


async def live_seed_only(place: Place, keys: SQLiteKeyStore) -> None:
    """Every stored envelope names the seed the key store holds now: none was left sealed
    under the destroyed one."""
    live = await keys.get_seed(SESSION)
    assert live is not None
    assert await seed_ids(place) == {live.seed_id}


@pytest.mark.parametrize("kind", ["sqlite", "advanced", "sqlalchemy-sqlite", "sqlalchemy-pg"])
async def test_a_writer_with_a_separate_key_store_writes_after_an_erase_under_the_new_seed(
    tmp_path: Path, kind: str
) -> None:
    place = Place(kind, tmp_path)
    keys = SQLiteKeyStore(tmp_path / "keys.db")
    backend = place.backend()
    writer = EncryptedSession(SESSION, backend, KEYRING, ttl=None, key_store=keys)
    try:
        await writer.add_items(BEFORE[:1])
        await writer.add_items(BEFORE[1:])  # sealed under the remembered seed
        async with await open_store(place.target, **place.tables) as store:
            assert (await erase_session(store, SESSION, key_store=keys)).seed_destroyed
        await writer.add_items(AFTER)  # lands under the destroyed seed: taken back, made again
        assert await writer.get_items() == AFTER
        await live_seed_only(place, keys)
        reader_backend = place.backend()
        async with EncryptedSession(
            SESSION, reader_backend, KEYRING, ttl=None, key_store=keys
        ) as reader:
            assert await reader.get_items() == AFTER
            assert await reader.verify_history() == len(AFTER)
    finally:
        await backend.close()
        await keys.close()


@pytest.mark.parametrize("kind", ["sqlite", "advanced", "sqlalchemy-sqlite"])
async def test_a_writer_with_a_separate_key_store_meets_an_erase_between_lookup_and_append(
    tmp_path: Path, kind: str
) -> None:
    place = Place(kind, tmp_path)
    keys = EraseAfterLookup(SQLiteKeyStore(tmp_path / "keys.db"), place)
    backend = place.backend()
    writer = EncryptedSession(SESSION, backend, KEYRING, ttl=None, key_store=keys)
    try:
        await writer.add_items(BEFORE)
    finally:
        await backend.close()
    backend = place.backend()
    writer = EncryptedSession(SESSION, backend, KEYRING, ttl=None, key_store=keys)
    try:
        keys.armed = True  # the fresh writer's lookup is followed at once by an erase
        await writer.add_items(AFTER[:1])
        await writer.add_items(AFTER[1:])
    finally:
        await backend.close()
    await live_seed_only(place, keys.inner)
    reader_backend = place.backend()
    try:
        reader = EncryptedSession(SESSION, reader_backend, KEYRING, ttl=None, key_store=keys)
        assert await reader.get_items() == AFTER
    finally:
        await reader_backend.close()
        await keys.inner.close()


async def test_a_foreign_session_writer_with_a_key_store_writes_after_a_clear_elsewhere(
    tmp_path: Path,
) -> None:
    import agents

    path = str(tmp_path / "sdk.db")
    keys = SQLiteKeyStore(tmp_path / "keys.db")
    writer = EncryptedSession(
        SESSION, agents.SQLiteSession(SESSION, path), KEYRING, ttl=None, key_store=keys
    )
    other = EncryptedSession(
        SESSION, agents.SQLiteSession(SESSION, path), KEYRING, ttl=None, key_store=keys
    )
    try:
        await writer.add_items(BEFORE)
        await other.clear_session()  # destroys the seed the writer remembers, then the rows
        await writer.add_items(AFTER)
        stored = await agents.SQLiteSession(SESSION, path).get_items()
        live = await keys.get_seed(SESSION)
        assert live is not None and {envelope["seed"] for envelope in stored} == {live.seed_id}
        assert await other.get_items() == AFTER
    finally:
        await keys.close()


class ErasedOnReadBack(SQLAlchemyKeyStore):
    """A key store whose next read-back comes after an erase destroyed the seed just kept."""

    erase_next = 0

    async def get_seed(self, session_id: str) -> Any:
        if self.erase_next:
            self.erase_next -= 1
            await self.destroy_seed(session_id)
        return await super().get_seed(session_id)


@pytest.mark.parametrize("erases", [1, 3])
async def test_a_seed_erased_as_soon_as_kept_is_kept_again_or_refused(
    tmp_path: Path, erases: int
) -> None:
    from encmem._seeds import new_seed_id, seal_seed

    store = ErasedOnReadBack(url=f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    seed = seal_seed(KEYRING, SESSION, new_seed_id(), b"\x01" * 32)
    try:
        store.erase_next = erases
        if erases < 3:
            assert await store.put_seed(SESSION, seed) == seed
            assert await store.get_seed(SESSION) == seed
        else:
            with pytest.raises(StoreError, match="being erased"):
                await store.put_seed(SESSION, seed)
            assert await store.get_seed(SESSION) is None
    finally:
        await store.close()


async def test_an_append_taken_back_restores_the_head_it_replaced(tmp_path: Path) -> None:
    from encmem._withdrawal import Written, withdraw_headed

    backend = SQLiteSession(SESSION, str(tmp_path / "store.db"))
    session = EncryptedSession(SESSION, backend, KEYRING, ttl=None)
    try:
        await session.add_items(BEFORE[:1])
        first = await backend.get_head_and_items(1)
        await session.add_items(BEFORE[1:2])
        second = await backend.get_head_and_items(1)
        appended = Written("main", first.head, second.head, [second.items[0].item])
        await withdraw_headed(backend, appended)
        after = await backend.get_head_and_items()
        assert after.head == first.head
        assert [stored.item for stored in after.items] == [first.items[0].item]
        assert await session.get_items() == BEFORE[:1]
        await withdraw_headed(backend, appended)  # already gone: nothing happens
        assert (await backend.get_head_and_items()).head == first.head
    finally:
        await backend.close()


async def test_an_append_with_items_after_it_is_not_taken_back(tmp_path: Path) -> None:
    from encmem._withdrawal import Written, withdraw_headed

    backend = SQLiteSession(SESSION, str(tmp_path / "store.db"))
    session = EncryptedSession(SESSION, backend, KEYRING, ttl=None)
    try:
        await session.add_items(BEFORE[:1])
        first = await backend.get_head_and_items(1)
        await session.add_items(BEFORE[1:])  # another writer's items after the first append
        appended = Written("main", None, str(first.head), [first.items[0].item])
        with pytest.raises(StoreError, match="could not be taken back"):
            await withdraw_headed(backend, appended)
        assert await session.get_items() == BEFORE
    finally:
        await backend.close()


class DestroyOnEveryLookup(SQLiteKeyStore):
    """A key store whose seed, once armed, is destroyed at every lookup: an erase without end."""

    armed = False

    async def get_seed(self, session_id: str) -> Any:
        if self.armed:
            await self.destroy_seed(session_id)
        return await super().get_seed(session_id)


async def test_a_writer_whose_seed_is_destroyed_at_every_attempt_writes_nothing(
    tmp_path: Path,
) -> None:
    place = Place("sqlite", tmp_path)
    keys = DestroyOnEveryLookup(tmp_path / "keys.db")
    backend = place.backend()
    writer = EncryptedSession(SESSION, backend, KEYRING, ttl=None, key_store=keys)
    try:
        await writer.add_items(BEFORE)
        stored = await backend.get_items()
        keys.armed = True
        with pytest.raises(StoreError, match="at every attempt"):
            await writer.add_items(AFTER)
        assert await backend.get_items() == stored  # every attempt was taken back
    finally:
        await backend.close()
        await keys.close()
