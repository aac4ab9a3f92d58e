"""The command on stores as users find them, run for real: files that are no session store,
rollback-journal stores, locked and half-written ones, stores in use, and database URLs."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from .test_cli_edges import run, sealed_store

COMPANIONS = ("", "-wal", "-shm", "-journal")


def fingerprint(path: Path) -> dict[str, str | None]:
    """The database and every file SQLite keeps beside it, by content hash (None: absent)."""
    found: dict[str, str | None] = {}
    for suffix in COMPANIONS:
        file = Path(f"{path}{suffix}")
        found[suffix or "db"] = (
            hashlib.sha256(file.read_bytes()).hexdigest() if file.exists() else None
        )
    return found


def rollback_store(path: Path, sessions: dict[str, int] | None = None) -> Path:
    """A session store in rollback-journal mode, as the Agents SDK's SQLiteSession can leave one."""
    sealed_store(path, sessions)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode=delete").fetchone()[0] == "delete"
    conn.close()
    assert path.read_bytes()[18:20] == b"\x01\x01"
    return path


def _add_plaintext(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) VALUES ('s0', ?)",
            (json.dumps({"role": "user", "content": "never sealed"}),),
        )
    conn.close()


# -- 1. a refused write changes no byte -------------------------------------------------------


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()


def _text(path: Path) -> None:
    path.write_text("not a database at all\n" * 40)


WRITES = (["erase", "--session", "x", "--yes"], ["purge", "--ttl", "1s"], ["rotate"], ["encrypt"])


@pytest.mark.slow
@pytest.mark.parametrize("make", [_empty, _foreign, _text], ids=["empty", "foreign", "text"])
def test_a_write_command_refusing_a_file_that_is_no_store_changes_no_byte(
    make: object, tmp_path: Path
) -> None:
    path = tmp_path / "f.db"
    assert callable(make)
    make(path)
    before = fingerprint(path)
    for target in (str(path), f"sqlite:///{path}"):
        for command in WRITES:
            done = run(command[0], target, *command[1:])
            assert done.returncode == 4, (command, done.stderr)
            assert "session store" in done.stderr or "not a SQLite database" in done.stderr
            assert fingerprint(path) == before, (target, command)


def test_a_refused_write_leaves_a_rollback_journal_store_as_it_was(tmp_path: Path) -> None:
    path = rollback_store(tmp_path / "rb.db")
    _add_plaintext(path)
    before = fingerprint(path)
    missing = run("erase", str(path), "--session", "nosuch", "--yes")
    assert missing.returncode == 4 and "no session 'nosuch'" in missing.stderr
    assert fingerprint(path) == before
    plaintext = run("purge", str(path), "--ttl", "1d")
    assert plaintext.returncode == 4 and "nothing was changed" in plaintext.stderr
    assert fingerprint(path) == before
    assert path.read_bytes()[18:20] == b"\x01\x01"  # still a rollback journal
    erased = run("erase", str(path), "--session", "s1", "--yes")  # a write that goes ahead
    assert erased.returncode == 0, erased.stderr
