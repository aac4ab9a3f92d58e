"""Erasure with a separate key store, against writers and readers that were there before it.

No transaction spans the session store and a separate key store, so an erase (destroy the
seed, delete the rows) and a writer (look up the seed, append, look again) interleave. What
must hold whatever the interleaving: no copy of what was erased opens afterwards, and a
check of the history asks the key store rather than what an object remembers.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import SQLiteKeyStore, SQLiteSession, open_store

from encmem import EncryptedSession, Keyring, SessionErasedError, erase_session, generate_key

KEYRING = Keyring({"k1": generate_key()})
SESSION = "race-4b9e"


def rows(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        found = conn.execute(
            "SELECT message_data FROM agent_messages WHERE session_id = ? ORDER BY id", (SESSION,)
        )
        return [str(text) for (text,) in found]


def put_back(path: Path, texts: list[str]) -> None:
    """What an attacker restoring an old copy of the rows does (no key needed)."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)",
            [(SESSION, text) for text in texts],
        )


class WriteDuringErase(SQLiteKeyStore):
    """A key store in which, once armed, another writer appends right after the erase has
    destroyed the seed and before it deletes the rows; the rows are copied then."""

    armed = False
    store_path: Path
    copied: list[str]

    async def destroy_seed(self, session_id: str) -> Any:
        destroyed = await super().destroy_seed(session_id)
        if self.armed:
            self.armed = False
            backend = SQLiteSession(SESSION, self.store_path)
            writer = EncryptedSession(SESSION, backend, KEYRING, ttl=None, key_store=self)
            await writer.add_items([{"role": "user", "content": "written inside the erase"}])
            await backend.close()
            self.copied = rows(self.store_path)  # a backup taken in that moment
        return destroyed


async def test_a_seed_made_while_an_erase_deleted_rows_is_destroyed_too(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    keys = WriteDuringErase(tmp_path / "keys.db")
    keys.store_path = path
    backend = SQLiteSession(SESSION, path)
    try:
        writer = EncryptedSession(SESSION, backend, KEYRING, ttl=None, key_store=keys)
        await writer.add_items([{"role": "user", "content": "before the erase"}])
        keys.armed = True
        async with await open_store(str(path)) as store:
            receipt = await erase_session(store, SESSION, key_store=keys)
        assert receipt.seed_destroyed
        assert keys.copied and await keys.get_seed(SESSION) is None
        assert rows(path) == []
        put_back(path, keys.copied)
        reader = EncryptedSession(SESSION, backend, KEYRING, ttl=None, key_store=keys)
        with pytest.raises(SessionErasedError):
            await reader.get_items()
    finally:
        await backend.close()
        await keys.close()


async def test_writers_from_before_an_erase_write_after_it_under_one_live_seed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    keys = SQLiteKeyStore(tmp_path / "keys.db")
    backends = [SQLiteSession(SESSION, path) for _ in range(2)]
    writers = [EncryptedSession(SESSION, b, KEYRING, ttl=None, key_store=keys) for b in backends]
    try:
        for number, writer in enumerate(writers):
            await writer.add_items([{"role": "user", "content": f"before {number}"}])
        async with await open_store(str(path)) as store:
            await erase_session(store, SESSION, key_store=keys)
        after = [{"role": "user", "content": f"after {number}"} for number in range(2)]
        for item, writer in zip(after, writers, strict=True):
            await writer.add_items([item])
        live = await keys.get_seed(SESSION)
        assert live is not None
        stored = await SQLiteSession(SESSION, path).get_items()
        assert {envelope["seed"] for envelope in stored} == {live.seed_id}
        for writer in writers:
            assert await writer.get_items() == after
    finally:
        for backend in backends:
            await backend.close()
        await keys.close()


async def test_a_check_by_an_object_that_read_before_an_erase_sees_the_erase(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    keys = SQLiteKeyStore(tmp_path / "keys.db")
    backend = SQLiteSession(SESSION, path)
    try:
        session = EncryptedSession(SESSION, backend, KEYRING, ttl=None, key_store=keys)
        await session.add_items([{"role": "user", "content": "to be forgotten"}])
        assert await session.verify_history() == 1
        with closing(sqlite3.connect(path)) as conn:  # a backup of the session's rows
            saved = conn.execute("SELECT * FROM agent_messages").fetchall()
            heads = conn.execute("SELECT * FROM agent_messages_heads").fetchall()
        async with await open_store(str(path)) as store:
            await erase_session(store, SESSION, key_store=keys)
        with closing(sqlite3.connect(path)) as conn, conn:  # ... restored, seed aside
            conn.execute("INSERT OR IGNORE INTO agent_sessions (session_id) VALUES (?)", (SESSION,))
            marks = ", ".join("?" * len(saved[0]))
            conn.executemany(f"INSERT INTO agent_messages VALUES ({marks})", saved)
            conn.executemany("INSERT INTO agent_messages_heads VALUES (?, ?, ?)", heads)
        with pytest.raises(SessionErasedError):
            await session.verify_history()
        fresh = EncryptedSession(SESSION, backend, KEYRING, ttl=None, key_store=keys)
        with pytest.raises(SessionErasedError):
            await fresh.get_items()
    finally:
        await backend.close()
        await keys.close()
