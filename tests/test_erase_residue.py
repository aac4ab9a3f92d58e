"""An erase never claims more than it did: a reader that keeps the WAL alive is reported.

Another connection's read transaction keeps SQLite from emptying the WAL, which then still
holds the erased session's pages as they were before the delete. The erase deletes the rows,
then says so (ResiduePendingError, exit 6 from the command) instead of reporting success;
erasing again after the reader is done empties the WAL, and a byte scan finds nothing.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from encmem.backends import AdvancedSQLiteSession, SQLiteSession, open_store

from encmem import EncryptedSession, ResiduePendingError, StoreError

from .conftest import TEST_KEY

ENCMEM = str(Path(sys.executable).with_name("encmem"))
GONE, STAYS = "gone-7f3a9c", "stays-1b2d4e"

pytestmark = pytest.mark.slow  # each blocked checkpoint waits for the reader, 2 s


def residue(path: Path, needles: list[bytes]) -> int:
    """How many of ``needles`` occur anywhere in the database file or its WAL."""
    data = b"".join(
        Path(str(path) + suffix).read_bytes()
        for suffix in ("", "-wal")
        if Path(str(path) + suffix).exists()
    )
    return sum(data.count(needle) for needle in needles)


async def fill(path: Path) -> list[bytes]:
    """Two sessions on one file; returns what must not survive the erase of GONE."""
    async with EncryptedSession(
        underlying_session=SQLiteSession(GONE, path), encryption_key=TEST_KEY
    ) as gone:
        await gone.add_items([{"role": "user", "content": f"turn {n}"} for n in range(20)])
    async with SQLiteSession(STAYS, path) as stays:
        await stays.add_items([{"role": "user", "content": "kept"}])
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT message_data FROM agent_messages WHERE session_id = ?", (GONE,)
        ).fetchall()
    tokens = [row[0].split('"payload":"')[1].split('"')[0].encode() for row in rows]
    return [GONE.encode(), *tokens]


@contextmanager
def reader_holding_a_snapshot(path: Path) -> Iterator[None]:
    """Another connection in the middle of a read transaction (a backup job, a report)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


async def test_erase_reports_residue_while_a_reader_holds_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    needles = await fill(path)
    async with await open_store(path) as store:
        with reader_holding_a_snapshot(path):
            with pytest.raises(ResiduePendingError) as pending:
                await store.erase_session(GONE)
            assert isinstance(pending.value, StoreError)
            # 20 items, the session row, its head and its seed
            assert (pending.value.session_id, pending.value.rows_removed) == (GONE, 23)
            assert "encmem erase --finish" in str(pending.value)
            assert residue(path, needles) > 0  # the claim it makes is true: copies remain
        assert await store.session_ids() == [STAYS]  # the rows themselves went at once
        assert await store.erase_session(GONE) == 0  # again, after the reader: finished
    assert residue(path, needles) == 0
    async with SQLiteSession(STAYS, path) as stays:
        assert await stays.get_items() == [{"role": "user", "content": "kept"}]


def test_the_command_exits_6_then_finishes_with_no_residue(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "store.db"
    needles = asyncio.run(fill(path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}

    def erase(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ENCMEM, "erase", str(path), "--session", GONE, *extra],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )

    with reader_holding_a_snapshot(path):
        pending = erase("--yes")
    assert pending.returncode == 6, pending.stderr
    assert "23 rows" in pending.stderr and "--finish" in pending.stderr
    assert "Traceback" not in pending.stderr and pending.stdout == ""
    finished = erase("--finish")
    assert finished.returncode == 0, finished.stderr
    assert "finished" in finished.stdout
    assert residue(path, needles) == 0


async def test_a_sqlalchemy_store_on_sqlite_reports_residue_too(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    needles = await fill(path)
    async with await open_store(f"sqlite+aiosqlite:///{path}") as store:
        with reader_holding_a_snapshot(path), pytest.raises(ResiduePendingError):
            await store.erase_session(GONE)
        assert await store.erase_session(GONE) == 0
    assert residue(path, needles) == 0


@pytest.mark.parametrize("kind", ["sqlite", "advanced"])
async def test_clear_session_warns_when_a_reader_keeps_old_pages(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    await fill(path)
    session = (
        SQLiteSession(GONE, path)
        if kind == "sqlite"
        else AdvancedSQLiteSession(session_id=GONE, db_path=path, create_tables=True)
    )
    async with session:
        with caplog.at_level(logging.WARNING), reader_holding_a_snapshot(path):
            await session.clear_session()
        assert await session.get_items() == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "erase_session" in warnings[0].getMessage()
    assert "turn" not in warnings[0].getMessage()  # no content in the log
    caplog.clear()
    async with SQLiteSession(GONE, path) as again:
        await again.clear_session()  # no reader now: the WAL empties, no warning
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
