"""Crash safety: a writer killed with SIGKILL at random moments never leaves a broken history.

A child process (``tests/_crash_writer.py``) writes numbered 4-item turns through
``EncryptedSession(SQLiteSession(file))`` and prints ``committed N`` after each ``add_items``
returns. The parent kills it with SIGKILL after a random delay (seeded), round after round
on the same file, then opens the database: it passes ``integrity_check``, every committed
turn is there, every turn there is complete (4 items), and the order is preserved.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import SQLiteSession

from encmem import EncryptedSession, generate_key

from .figures import figure

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("ENCMEM_CRASH_ROUNDS", "25"))
ROUND_SPAN = 1_000_000  # turn numbers of round r start at r * ROUND_SPAN

pytestmark = [
    pytest.mark.crash,
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
]


def _spawn(db: Path, key: str, first: int, out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "tests._crash_writer", str(db), "crash", key, str(first)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(process: subprocess.Popen[bytes], out: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b"ready\n" in out.read_bytes():
            return
        if process.poll() is not None:
            raise AssertionError(f"the writer exited early: {out.read_text()}")
        time.sleep(0.005)
    process.kill()
    raise AssertionError("the writer did not get ready in time")


def _committed(out: Path) -> tuple[list[int], list[str]]:
    turns, errors = [], []
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith("committed "):
            turns.append(int(line.split()[1]))
        elif line.startswith("error ") or "Traceback" in line:
            errors.append(line)
    return turns, errors


async def _read(db: Path, key: str) -> list[dict[str, Any]]:
    session = EncryptedSession(
        session_id="crash",
        underlying_session=SQLiteSession("crash", db),
        encryption_key=key,
        ttl=None,
    )
    try:
        return await session.get_items()
    finally:
        await session.close()


def _check_turns(items: list[dict[str, Any]]) -> list[int]:
    """The turns in storage order; asserts each is complete and in place."""
    turns: list[int] = []
    for index, item in enumerate(items):
        assert item["part"] == index % 4, f"item {index} is part {item['part']}: a partial turn"
        if item["part"] == 0:
            turns.append(item["turn"])
        else:
            assert item["turn"] == turns[-1], f"item {index} belongs to another turn"
    assert len(items) % 4 == 0, "the last turn is partial"
    assert turns == sorted(turns) and len(set(turns)) == len(turns), "turn order broken"
    return turns


async def test_sigkill_at_random_moments_never_breaks_the_history(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    rng = random.Random(20_260_501)
    key = generate_key()
    db = tmp_path / "crash.db"
    committed: dict[int, list[int]] = {}
    errors: list[str] = []
    started = time.monotonic()
    for round_number in range(ROUNDS):
        out = tmp_path / f"round-{round_number}.out"
        process = _spawn(db, key, round_number * ROUND_SPAN, out)
        try:
            _wait_ready(process, out)
            time.sleep(rng.uniform(0.05, 0.5))
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, out.read_text()[-2000:]
        committed[round_number], round_errors = _committed(out)
        errors += round_errors
    with sqlite3.connect(db) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        raw_rows = conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()[0]
    items = await _read(db, key)
    turns = _check_turns(items)
    by_round: dict[int, list[int]] = defaultdict(list)
    for turn in turns:
        by_round[turn // ROUND_SPAN].append(turn % ROUND_SPAN)
    missing = in_flight = 0
    for round_number, done in committed.items():
        present = by_round.get(round_number, [])
        assert present == list(range(len(present))), f"round {round_number}: a gap"
        missing += len(set(done) - {round_number * ROUND_SPAN + t for t in present})
        in_flight += len(present) - len(done)
        # at most the one turn in flight when the signal came is there without its report
        assert len(present) - len(done) in (0, 1), (round_number, len(present), len(done))
    total_committed = sum(len(done) for done in committed.values())
    figure(
        pytestconfig,
        f"crash-safety: {ROUNDS} SIGKILLs in {time.monotonic() - started:.1f} s, "
        f"{total_committed} turns reported committed, {len(turns)} complete turns stored "
        f"({in_flight} committed but unreported at the kill), {missing} committed turns lost, "
        f"0 partial turns, integrity_check={integrity[0][0]}, {len(errors)} writer errors",
    )
    assert integrity == [("ok",)]
    assert raw_rows == len(items) == 4 * len(turns)
    assert missing == 0
    assert errors == []
    assert total_committed > ROUNDS  # the kills did land mid-stream, after real writes
    # and the file still takes writes afterwards
    process = subprocess.run(
        [sys.executable, "-m", "tests._crash_writer", str(db), "crash", key, "999999999", "3"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert process.returncode == 0 and b"done" in process.stdout, process.stdout + process.stderr
    assert len(await _read(db, key)) == len(items) + 12
