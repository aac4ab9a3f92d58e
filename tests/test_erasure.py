"""Erasure you can prove (issue 16): a destroyed seed reaches every copy of a session.

A "backup" here is a plain copy of the SQLite file and its WAL, made while nothing writes;
a "restore" copies it back. Seeds live either in the session store itself (the default) or
in a separate :class:`SQLiteKeyStore` file, which a restore of the data store never touches.
With a separate key store an erase shreds every backup of the data store; with same-store
seeds a backup carries its own seed and still reads (only the live file's residue is
shredded). Property tests of the same promise are in ``test_erasure_properties.py``.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import sqlite3
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import AdvancedSQLiteSession, SQLiteKeyStore, SQLiteSession, open_store

from encmem import (
    EncryptedSession,
    ErasureReceipt,
    Keyring,
    SessionErasedError,
    erase_idle_sessions,
    erase_session,
    generate_key,
)

# Not the conftest key: importing conftest would load every store in the reader's process.
KEYRING = Keyring({"k1": generate_key()})
GONE, KEPT, OTHER = "gone-5e1f0a7c", "kept-91b3d2e6", "other-4c8a7f10"  # >= 8 bytes: scanned
SESSIONS = (GONE, KEPT, OTHER)
ITEMS = 4
KINDS = ("sqlite", "advanced")


def contents(session_id: str, count: int = ITEMS) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{session_id} turn {n}"} for n in range(count)]


def backend(kind: str, session_id: str, path: Path) -> SQLiteSession:
    if kind == "advanced":
        return AdvancedSQLiteSession(session_id=session_id, db_path=path, create_tables=True)
    return SQLiteSession(session_id, path)


def encrypted(
    kind: str, session_id: str, path: Path, key_store: SQLiteKeyStore | None, **options: Any
) -> EncryptedSession:
    return EncryptedSession(
        session_id, backend(kind, session_id, path), KEYRING, ttl=None, key_store=key_store,
        **options,
    )


async def fill(kind: str, path: Path, key_store: SQLiteKeyStore | None) -> None:
    for session_id in SESSIONS:
        async with encrypted(kind, session_id, path, key_store) as session:
            await session.add_items(contents(session_id))


async def read(
    kind: str, path: Path, session_id: str, key_store: SQLiteKeyStore | None, **options: Any
) -> list[Any]:
    async with encrypted(kind, session_id, path, key_store, **options) as session:
        return await session.get_items()


def copy_database(source: Path, target: Path) -> None:
    """Copy a SQLite file and its WAL (nothing may be writing), replacing what is there."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")


def tokens_of(path: Path, session_id: str) -> list[bytes]:
    """The Fernet tokens of the session's stored items, as bytes to look for in files."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT message_data FROM agent_messages WHERE session_id = ?", (session_id,)
        ).fetchall()
    return [row[0].split('"payload":"')[1].split('"')[0].encode() for row in rows]


def occurrences(path: Path, needles: list[bytes]) -> int:
    """How often any of ``needles`` occurs in the bytes of the file and its WAL."""
    data = b"".join(
        Path(f"{path}{suffix}").read_bytes()
        for suffix in ("", "-wal")
        if Path(f"{path}{suffix}").exists()
    )
    return sum(data.count(needle) for needle in needles)


def tables_with(conn: sqlite3.Connection, column: str) -> list[str]:
    names = [r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type='table'")]
    return [
        name for name in names
        if conn.execute("SELECT 1 FROM pragma_table_info(?) WHERE name = ?", (name, column))
        .fetchone()
    ]


def session_tables(conn: sqlite3.Connection) -> list[str]:
    """The tables holding a session's rows (not seeds), the sessions table first."""
    seeds = set(tables_with(conn, "seed_id"))
    found = [name for name in tables_with(conn, "session_id") if name not in seeds]
    return sorted(found, key=lambda name: name != "agent_sessions")


async def erase(path: Path, session_id: str, key_store: SQLiteKeyStore | None) -> ErasureReceipt:
    async with await open_store(path) as store:
        return await erase_session(store, session_id, key_store=key_store)


def erased_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("no longer holds" in r.getMessage() for r in caplog.records if r.levelno >= 30)


# -- backup, then erase -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_backup_restored_whole_cannot_read_the_erased_session(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    live, keys = tmp_path / "store.db", tmp_path / "keys.db"
    backup, keys_backup = tmp_path / "backup.db", tmp_path / "keys-backup.db"
    async with SQLiteKeyStore(keys) as key_store:
        await fill(kind, live, key_store)
    copy_database(live, backup)
    copy_database(keys, keys_backup)
    async with SQLiteKeyStore(keys) as key_store:
        receipt = await erase(live, GONE, key_store)
        assert receipt.seed_destroyed and receipt.complete, receipt.as_dict()
        assert receipt.rows_removed["agent_messages"] == ITEMS
        assert str(keys) in receipt.key_store
        assert await key_store.seed_session_ids() == [KEPT, OTHER]
        # The backup still holds every ciphertext: only the missing seed keeps it shut.
        assert occurrences(backup, tokens_of(backup, GONE)) >= ITEMS
        for newest in range(1, ITEMS + 1):  # every item of it, the newest first
            async with encrypted(kind, GONE, backup, key_store) as session:
                with pytest.raises(SessionErasedError) as refused:
                    await session.get_items(limit=newest)
            assert (refused.value.session_id, refused.value.position) == (GONE, newest)
        with caplog.at_level(logging.WARNING):
            assert await read(kind, backup, GONE, key_store, on_invalid="skip") == []
        assert erased_warnings(caplog) == ITEMS
        for session_id in (KEPT, OTHER):
            assert await read(kind, backup, session_id, key_store) == contents(session_id)
        assert await read(kind, live, GONE, key_store) == []  # its rows went too
    async with SQLiteKeyStore(keys_backup) as old_keys:
        # Documented, not promised away: a backup of the key store from before the erase
        # still holds the seed, so key store backups need a short retention of their own.
        assert await read(kind, backup, GONE, old_keys) == contents(GONE)


@pytest.mark.parametrize("kind", KINDS)
async def test_same_store_seeds_shred_the_live_file_but_not_its_backups(
    tmp_path: Path, kind: str
) -> None:
    live, backup = tmp_path / "store.db", tmp_path / "backup.db"
    await fill(kind, live, None)
    copy_database(live, backup)
    receipt = await erase(live, GONE, None)
    assert receipt.seed_destroyed and receipt.complete and receipt.key_store == "the session store"
    assert receipt.session_id_hits == 0 and receipt.ciphertext_hits == 0
    # The backup carries its own copy of the seed table: it still reads, every session.
    for session_id in SESSIONS:
        assert await read(kind, backup, session_id, None) == contents(session_id)
    # Rows of the erased session put back into the live file (a leftover page, a partial
    # restore) meet the live file's seed table, which no longer holds the seed.
    with sqlite3.connect(live) as conn:
        conn.execute("ATTACH DATABASE ? AS old", (str(backup),))
        for table in session_tables(conn):
            conn.execute(
                f"INSERT INTO {table} SELECT * FROM old.{table} WHERE session_id = ?", (GONE,)
            )
    with pytest.raises(SessionErasedError):
        await read(kind, live, GONE, None)
    for session_id in (KEPT, OTHER):
        assert await read(kind, live, session_id, None) == contents(session_id)


async def test_an_erase_leaves_the_applications_own_tables_alone(tmp_path: Path) -> None:
    live = tmp_path / "store.db"
    await fill("sqlite", live, None)
    with sqlite3.connect(live) as conn:
        conn.execute("CREATE TABLE app_invoices (session_id TEXT, amount INTEGER)")
        conn.execute("INSERT INTO app_invoices VALUES (?, 42)", (GONE,))
    receipt = await erase(live, GONE, None)
    with sqlite3.connect(live) as conn:
        left = conn.execute("SELECT COUNT(*) FROM app_invoices").fetchone()[0]
    assert "app_invoices" not in receipt.rows_removed and left == 1, receipt.rows_removed


# -- no seed, no session ------------------------------------------------------------------------


@pytest.mark.parametrize("separate", [False, True], ids=["same-store", "key-store"])
async def test_a_key_store_that_lost_a_seed_fails_loudly(
    tmp_path: Path, separate: bool, caplog: pytest.LogCaptureFixture
) -> None:
    live, keys = tmp_path / "store.db", tmp_path / "keys.db"
    key_store = SQLiteKeyStore(keys) if separate else None
    try:
        await fill("sqlite", live, key_store)
        with sqlite3.connect(keys if separate else live) as conn:  # behind encmem's back
            [seeds] = tables_with(conn, "seed_id")  # the one seeds table of that file
            assert conn.execute(f"DELETE FROM {seeds} WHERE session_id = ?", (GONE,)).rowcount
        with pytest.raises(SessionErasedError) as refused:
            await read("sqlite", live, GONE, key_store)
        assert refused.value.session_id == GONE
        async with encrypted("sqlite", GONE, live, key_store) as session:
            with pytest.raises(SessionErasedError):
                await session.get_items(limit=1)
            with pytest.raises(SessionErasedError):
                await session.pop_item()
        with caplog.at_level(logging.WARNING):
            assert await read("sqlite", live, GONE, key_store, on_invalid="skip") == []
        assert erased_warnings(caplog) == ITEMS
        assert len(tokens_of(live, GONE)) == ITEMS  # nothing was deleted on the way
        assert await read("sqlite", live, KEPT, key_store) == contents(KEPT)
    finally:
        if key_store is not None:
            await key_store.close()


# -- an erase that a reader in another process holds up -----------------------------------------


def hold_read_transaction(path: str, pipe: Connection) -> None:
    """Child process: a read transaction on the store (a backup job) until told to end it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()
    pipe.send("reading")
    pipe.recv()
    conn.execute("ROLLBACK")
    conn.close()
    pipe.send("done")


@pytest.mark.slow  # each checkpoint the reader blocks waits 2 s before it reports
@pytest.mark.parametrize("separate", [False, True], ids=["same-store", "key-store"])
async def test_an_erase_held_up_by_a_reader_says_so_then_finishes(
    tmp_path: Path, separate: bool
) -> None:
    live, keys = tmp_path / "store.db", tmp_path / "keys.db"
    key_store = SQLiteKeyStore(keys) if separate else None
    try:
        await fill("sqlite", live, key_store)
        needles = [GONE.encode(), *tokens_of(live, GONE)]
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        reader = context.Process(target=hold_read_transaction, args=(str(live), theirs))
        reader.start()
        try:
            assert ours.poll(60) and ours.recv() == "reading"
            pending = await erase(live, GONE, key_store)
            assert pending.residue_pending and not pending.complete, pending.as_dict()
            assert pending.seed_destroyed and pending.rows_removed["agent_messages"] == ITEMS
            assert "another connection" in pending.residue
            assert occurrences(live, needles) > 0  # what it claims is true: copies remain
            ours.send("finish")
            assert ours.poll(60) and ours.recv() == "done"
        finally:
            reader.join(30)
            if reader.is_alive():
                reader.kill()
        finished = await erase(live, GONE, key_store)
        assert not finished.residue_pending and finished.complete, finished.as_dict()
        # No rows were left for the finish to take tokens from: it does not claim 0 found.
        assert (finished.session_id_hits, finished.ciphertext_hits) == (0, None)
        assert finished.rows_removed == {} and not finished.seed_destroyed
        assert occurrences(live, needles) == 0  # our own scan, with the tokens from before
        assert await read("sqlite", live, KEPT, key_store) == contents(KEPT)
    finally:
        if key_store is not None:
            await key_store.close()


@pytest.mark.slow
async def test_a_finishing_erase_does_not_claim_it_found_no_ciphertext(tmp_path: Path) -> None:
    live, keys = tmp_path / "store.db", tmp_path / "keys.db"
    async with SQLiteKeyStore(keys) as key_store:
        await fill("sqlite", live, key_store)
        tokens = tokens_of(live, GONE)
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        reader = context.Process(target=hold_read_transaction, args=(str(live), theirs))
        reader.start()
        try:
            assert ours.poll(60) and ours.recv() == "reading"
            first = await erase(live, GONE, key_store)
            assert first.residue_pending and first.ciphertext_hits == ITEMS
            again = await erase(live, GONE, key_store)  # the reader is still there
            assert again.residue_pending
            assert occurrences(live, tokens) == ITEMS  # the ciphertexts are all still there
            # "Not checked" (None) or the true count; 0 claims a scan that found nothing.
            assert again.ciphertext_hits in (None, ITEMS), again.as_dict()
        finally:
            ours.send("finish")
            reader.join(30)
            if reader.is_alive():
                reader.kill()


# -- retention by deletion ----------------------------------------------------------------------

DAY = 86_400.0
NOW = 1_900_000_000.0  # 2030-03-17: after every updated_at the tests write


def backdate(path: Path, session_id: str, days: float, now: float = NOW) -> None:
    """Set the session's last write ``days`` before ``now``, with plain SQL."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE agent_sessions SET updated_at = datetime(?, 'unixepoch') WHERE session_id = ?",
            (now - days * DAY, session_id),
        )


@pytest.mark.parametrize("separate", [False, True], ids=["same-store", "key-store"])
async def test_erase_idle_sessions_dry_runs_then_erases_only_the_idle(
    tmp_path: Path, separate: bool
) -> None:
    live, keys = tmp_path / "store.db", tmp_path / "keys.db"
    key_store = SQLiteKeyStore(keys) if separate else None
    try:
        await fill("sqlite", live, key_store)
        backdate(live, GONE, 45)
        backdate(live, OTHER, 31)
        backdate(live, KEPT, 29)
        before = live.read_bytes()
        async with await open_store(live) as store:
            chosen = await erase_idle_sessions(
                store, 30 * DAY, key_store=key_store, clock=lambda: NOW
            )
            assert chosen == [GONE, OTHER]
            assert await store.session_ids() == sorted(SESSIONS)
        assert live.read_bytes() == before  # a dry run changes nothing
        for session_id in SESSIONS:
            assert await read("sqlite", live, session_id, key_store) == contents(session_id)
        steps: list[tuple[int, int]] = []
        async with await open_store(live) as store:
            receipts = await erase_idle_sessions(
                store, 30 * DAY, key_store=key_store, dry_run=False, clock=lambda: NOW,
                progress=lambda done, total: steps.append((done, total)),
            )
            assert await store.session_ids() == [KEPT]
        assert [getattr(r, "session_id", None) for r in receipts] == [GONE, OTHER]
        for receipt in receipts:
            assert isinstance(receipt, ErasureReceipt)
            assert receipt.seed_destroyed and receipt.complete
            assert receipt.rows_removed["agent_messages"] == ITEMS
            assert receipt.erased_at == "2030-03-17T17:46:40Z"
        assert steps == [(1, 2), (2, 2)]
        assert await read("sqlite", live, KEPT, key_store) == contents(KEPT)
        for session_id in (GONE, OTHER):
            assert await read("sqlite", live, session_id, key_store) == []
    finally:
        if key_store is not None:
            await key_store.close()


async def test_a_write_makes_a_session_no_longer_idle(tmp_path: Path) -> None:
    live = tmp_path / "store.db"
    await fill("sqlite", live, None)
    now = time.time()
    for session_id in SESSIONS:
        backdate(live, session_id, 60, now)
    async with encrypted("sqlite", KEPT, live, None) as session:
        await session.add_items(contents("late", 1))  # stamps the real time
    async with await open_store(live) as store:
        chosen = await erase_idle_sessions(store, 30 * DAY, clock=lambda: now + 29 * DAY)
        assert chosen == [GONE, OTHER]
        assert await store.session_ids() == sorted(SESSIONS)
