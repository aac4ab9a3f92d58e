"""Rows whose session id no session can be opened with never abort a store-wide run.

An attacker with write access (or a buggy writer) can store rows under a NULL, blank or
NUL-holding session id. Store-wide rotate, purge and verify must still process every valid
session, and then say loudly that some rows were not reached, rather than stopping at the
first odd id with a ValueError or passing over the rows in silence.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from encmem.backends import SQLiteSession, open_store

from encmem import EncryptedSession, Keyring, StoreError, generate_key, rotate_store

from .conftest import TEST_KEY

ENCMEM = str(Path(sys.executable).with_name("encmem"))
ODD_IDS = ["", "   ", "nul\x00id"]


async def store_with_odd_rows(path: Path, odd: object) -> None:
    async with EncryptedSession(
        underlying_session=SQLiteSession("good", path),
        encryption_key=Keyring({"test-1": TEST_KEY}),
    ) as good:
        await good.add_items([{"role": "user", "content": "hello"}])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys=OFF")  # the attacker's own connection
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)",
            (odd, json.dumps({"role": "user", "content": "odd"})),
        )


@pytest.mark.parametrize("odd", ODD_IDS, ids=["empty", "blank", "nul"])
async def test_store_wide_rotation_reaches_every_good_session_then_reports(
    tmp_path: Path, odd: object
) -> None:
    path = tmp_path / "store.db"
    await store_with_odd_rows(path, odd)
    keyring = Keyring({"new": generate_key(), "test-1": TEST_KEY})
    async with await open_store(path) as store:
        assert await store.session_ids() == ["good"]
        with pytest.raises(StoreError, match="1 of the store's 2 rows belong to no session"):
            await rotate_store(store, keyring)
    async with EncryptedSession(
        underlying_session=SQLiteSession("good", path), encryption_key=keyring
    ) as good:
        assert await good.get_items() == [{"role": "user", "content": "hello"}]
        stored = await good.underlying_session.get_stored_items()
        assert stored[0].item["kid"] == "new"  # the good session was rotated before the report


@pytest.mark.parametrize("odd", ODD_IDS, ids=["empty", "blank", "nul"])
def test_verify_reports_the_unreached_rows_without_a_traceback(tmp_path: Path, odd: object) -> None:
    import asyncio

    path = tmp_path / "store.db"
    asyncio.run(store_with_odd_rows(path, odd))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}
    env["ENCMEM_KEYS"] = f"test-1:{TEST_KEY}"
    done = subprocess.run(
        [ENCMEM, "verify", str(path), "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    problems = [p["problem"] for p in json.loads(done.stdout)["problems"]]
    unreached = [problem for problem in problems if problem.startswith("unreached: ")]
    assert unreached == [
        "unreached: 1 stored row belongs to no session or branch the store can read"
    ], problems
