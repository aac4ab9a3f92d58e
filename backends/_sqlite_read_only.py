"""Opening a SQLite file without writing a byte of it, and naming what keeps it from opening.

Which read-only URI fits depends on the files beside the database (-wal, -shm, -journal),
and a live store's writers create and remove those at any moment. The store makes the
choice, opens, and makes it again when the files changed under it; what fails for good is
described by what it is (locked, an unfinished transaction's journal, not SQLite at all),
never guessed from which call failed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from encmem.errors import NotASessionStoreError, StoreError

_SQLITE_HEADER = b"SQLite format 3\x00"

FileState = tuple[int, int, int] | None
"""A file's inode, size and modification time; None when there is no such file."""


def file_state(path: Path) -> FileState:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def _beside(path: Path, suffix: str) -> Path:
    return Path(f"{path}{suffix}")


def companions(path: Path) -> tuple[FileState, ...]:
    """The state of the database's -wal, -shm and -journal: what a writer changes first."""
    return tuple(file_state(_beside(path, suffix)) for suffix in ("-wal", "-shm", "-journal"))


def _in_wal_mode(path: Path) -> bool:
    """Whether the file's header says write-ahead log (bytes 18 and 19 are 2)."""
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError:
        return False
    return header.startswith(_SQLITE_HEADER) and header[18:20] == b"\x02\x02"


def read_only_uri(path: Path, shown: str) -> tuple[str, bool]:
    """The SQLite URI that reads ``path`` and writes nothing, not even beside it; and whether
    it reads without locks.

    A rollback-journal file: ``mode=ro`` takes shared locks and creates nothing. A WAL file
    with its -wal and -shm: ``readonly_shm`` maps the -shm read-only and indexes the -wal in
    memory, so the log's rows are read and no read mark is written. A WAL file without a log
    to read holds everything itself: ``mode=ro`` would create -wal and -shm (and fails where
    it cannot), ``immutable`` reads it without them or locks.
    """
    base = path.absolute().as_uri()
    if not _in_wal_mode(path):
        return f"{base}?mode=ro", False
    wal, shm = _beside(path, "-wal"), _beside(path, "-shm")
    if wal.is_file() and shm.is_file():
        return f"{base}?mode=ro&readonly_shm=1", False
    wal_state = file_state(wal)
    if wal_state is None or wal_state[1] == 0:
        return f"{base}?mode=ro&immutable=1", True
    raise StoreError(
        f"{shown} has a write-ahead log ({wal.name}) but no {shm.name} beside it; SQLite "
        "cannot read the log without creating that file, and a read-only open creates "
        "nothing. Copy the database and its -wal file to a writable directory and read the copy"
    )


def has_hot_journal(path: Path) -> bool:
    """Whether a rollback journal with content lies beside the database (a writer stopped
    mid-transaction, or one is writing right now)."""
    state = file_state(_beside(path, "-journal"))
    return state is not None and state[1] > 0


def roll_back_hot_journal(path: Path, busy_timeout: float) -> None:
    """Let SQLite roll back an unfinished transaction's journal, as any writable open does
    before it reads: done before a command that writes checks the store read-only."""
    if not has_hot_journal(path) or _in_wal_mode(path):
        return
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError:
        pass  # not SQLite, or locked: the read-only check that follows says which
    finally:
        conn.close()


def _error_name(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", ""))


def open_failure(exc: sqlite3.Error, path: Path, shown: str) -> StoreError:
    """The error to raise when SQLite could not open or read ``path`` (SQLite's own message
    names the failure, never a stored value)."""
    name, text = _error_name(exc), str(exc)
    if name == "SQLITE_NOTADB" or "not a database" in text:
        return NotASessionStoreError(f"{shown} is not a SQLite database ({text})")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text.lower():
        return StoreError(
            f"the database {shown} is locked by another process ({text}); try again when it "
            "is free"
        )
    if name == "SQLITE_READONLY_ROLLBACK" or ("readonly" in text and has_hot_journal(path)):
        journal = _beside(path, "-journal").name
        return StoreError(
            f"{shown} holds an unfinished transaction: its journal {journal} (left by a "
            "writer that stopped mid-write) must be rolled back first, and only a writable "
            "open can do that, while this one only reads. Run a command that writes to it "
            "(encmem purge, rotate, encrypt or erase), or open it once with write access "
            f"(sqlite3 FILE 'PRAGMA user_version'); or copy the database with its {journal} "
            "elsewhere, open the copy that way, and audit the copy"
        )
    return StoreError(f"cannot read {shown} ({text}); nothing was changed")
