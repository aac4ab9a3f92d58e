"""The command's front door: the demo runs offline, keygen prints only a key, exits are clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from encmem import Keyring

ROOT = Path(__file__).resolve().parents[1]
ENCMEM = Path(sys.executable).with_name("encmem")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENCMEM), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
def test_demo_runs_offline_and_shows_ciphertext_history_and_expiry(tmp_path: Path) -> None:
    done = run("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert str(tmp_path / "encmem-demo.db") in out
    assert '{"__enc__":1,"v":4,' in out and '"payload":"gAAAAA' in out
    assert "get_weather" in out and "It's sunny in Paris today" in out
    assert "4 items dropped, 2 left" in out
    assert "purge_expired() deleted the 4 expired rows from the file; 2 rows left" in out
    assert (tmp_path / "encmem-demo.db").exists()
    raw = (tmp_path / "encmem-demo.db").read_bytes()
    assert b"Paris" not in raw
    # the hint names a command that runs as typed: the generated key was never shown
    assert "<key>" not in out and "encmem inspect encmem-demo.db (no key needed)" in out
    assert run("inspect", "encmem-demo.db", cwd=tmp_path).returncode == 0
    shown = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("   row ")]
    assert len(shown) == 3
    for stored in shown:  # the row exactly as the file held it: compact, the whole token
        envelope = json.loads(stored)
        assert json.dumps(envelope, separators=(",", ":"), ensure_ascii=False) == stored
        assert len(envelope["payload"]) > 100 and "..." not in stored


@pytest.mark.slow
def test_the_demo_leaves_a_store_with_true_seal_times(tmp_path: Path) -> None:
    import base64
    import json
    import sqlite3
    import time

    from encmem import generate_key

    key = generate_key()
    started = int(time.time())
    done = subprocess.run(
        [str(ENCMEM), "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ENCMEM_KEY": key},
    )
    assert done.returncode == 0, done.stderr
    finished = time.time()
    with sqlite3.connect(tmp_path / "encmem-demo.db") as conn:
        rows = [json.loads(r[0]) for r in conn.execute("SELECT message_data FROM agent_messages")]
    stamps = [
        int.from_bytes(base64.urlsafe_b64decode(row["payload"])[1:9], "big") for row in rows
    ]
    assert len(stamps) == 2 and all(started <= t <= finished for t in stamps)
    inspected = run("inspect", "tmp.db", cwd=tmp_path)  # a missing file is not created
    assert inspected.returncode != 0 and not (tmp_path / "tmp.db").exists()


def test_keygen_prints_one_usable_key_and_nothing_else(tmp_path: Path) -> None:
    done = run("keygen", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    key = done.stdout.strip()
    assert done.stdout == key + "\n"
    Keyring(key)
    labelled = run("keygen", "--kid", "2026-11", cwd=tmp_path).stdout.strip()
    assert Keyring.parse(labelled).primary_kid == "2026-11"


def test_an_unclosed_session_does_not_hang_interpreter_exit(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from encmem import EncryptedSession, generate_key
        from encmem.backends import SQLiteSession
        KEEP = []
        async def main():
            store = SQLiteSession("s", {str(tmp_path / "x.db")!r})
            s = EncryptedSession(underlying_session=store, encryption_key=generate_key())
            await s.add_items([{{"role": "user", "content": "hi"}}])
            KEEP.append(s)
        asyncio.run(main())
        print("exited")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ},
        check=False,
    )
    assert done.returncode == 0 and "exited" in done.stdout
