"""Multi-process load: 4 processes x 200 turns (4 items each) on one SQLite file.

Scenario ``same-session``: all four write the same session id. Scenario
``separate-sessions``: each writes its own session in the same file. Writers are child
processes (``tests/_crash_writer.py``) released together by a start file; each reports every
commit and every error. Zero lost items, zero errors ("database is locked" or any other)
reaching the caller, each writer's turns in order and each turn's 4 items adjacent.
"""

from __future__ import annotations

import os
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
WRITERS = 4
TURNS = int(os.environ.get("ENCMEM_LOAD_TURNS", "200"))


async def _read(db: Path, session_id: str, key: str) -> list[dict[str, Any]]:
    session = EncryptedSession(
        session_id=session_id,
        underlying_session=SQLiteSession(session_id, db),
        encryption_key=key,
        ttl=None,
    )
    try:
        return await session.get_items()
    finally:
        await session.close()


def _check_order(items: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each turn's 4 items adjacent and in part order; return each writer's turn sequence."""
    per_writer: dict[str, list[int]] = defaultdict(list)
    for start in range(0, len(items), 4):
        turn = items[start : start + 4]
        heads = {(item["writer"], item["turn"]) for item in turn}
        assert len(heads) == 1, f"items {start}..{start + 3} mix turns: {sorted(heads)}"
        assert [item["part"] for item in turn] == [0, 1, 2, 3], f"turn at {start} out of order"
        writer, number = heads.pop()
        per_writer[writer].append(number)
    return per_writer


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["same-session", "separate-sessions"])
async def test_four_processes_write_without_loss_or_lock_errors(
    scenario: str, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    key = generate_key()
    db = tmp_path / "load.db"
    go = tmp_path / "go"
    sessions = {
        f"w{n}": ("shared" if scenario == "same-session" else f"own-{n}") for n in range(WRITERS)
    }
    outputs = {writer: tmp_path / f"{writer}.out" for writer in sessions}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for writer, session_id in sessions.items():
        with outputs[writer].open("wb") as sink:
            processes[writer] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests._crash_writer",
                    str(db),
                    session_id,
                    key,
                    "0",
                    str(TURNS),
                    writer,
                    str(go),
                ],
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
    try:
        deadline = time.monotonic() + 60
        while not all(b"ready\n" in out.read_bytes() for out in outputs.values()):
            assert time.monotonic() < deadline, "writers did not get ready"
            assert all(p.poll() is None for p in processes.values()), "a writer died"
            time.sleep(0.01)
        started = time.monotonic()
        go.touch()
        for process in processes.values():
            process.wait(timeout=120)
        elapsed = time.monotonic() - started
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    errors: list[str] = []
    committed: dict[str, list[int]] = {}
    for writer, out in outputs.items():
        lines = out.read_text(errors="replace").splitlines()
        committed[writer] = [
            int(line.split()[1]) for line in lines if line.startswith("committed ")
        ]
        errors += [f"{writer}: {line}" for line in lines if line.startswith("error ")]
        if processes[writer].returncode != 0 or "done" not in lines:
            errors.append(f"{writer}: exit {processes[writer].returncode}: {lines[-5:]}")
    locked = [e for e in errors if "locked" in e.lower() or "busy" in e.lower()]
    lost = 0
    order_ok = True
    total_items = 0
    for session_id in sorted(set(sessions.values())):
        items = await _read(db, session_id, key)
        total_items += len(items)
        per_writer = _check_order(items)
        for writer, turns in per_writer.items():
            assert sessions[writer] == session_id, f"{writer}'s items in {session_id}"
            order_ok = order_ok and turns == sorted(turns)
        for writer in (w for w, s in sessions.items() if s == session_id):
            lost += len(set(committed[writer]) - set(per_writer.get(writer, [])))
    figure(
        pytestconfig,
        f"multi-process[{scenario}]: {WRITERS} processes x {TURNS} turns in {elapsed:.1f} s, "
        f"{sum(map(len, committed.values()))} turns committed, {total_items} items stored, "
        f"{lost} lost, {len(locked)} 'database is locked' errors, {len(errors)} errors in all, "
        f"order {'preserved' if order_ok else 'BROKEN'}",
    )
    assert errors == []
    assert all(turns == list(range(TURNS)) for turns in committed.values())
    assert lost == 0 and order_ok
    assert total_items == WRITERS * TURNS * 4
