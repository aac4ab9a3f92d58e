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
    SQLAlchemySession,
    SQLiteSession,
    open_store,
)

from encmem import EncryptedSession, Keyring, erase_session, generate_key

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
