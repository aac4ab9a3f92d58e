"""Two processes appending to one session of one SQLite file at once, for ten seconds: every
acknowledged item is stored once, in each writer's order, and the chain verifies.

Sequence numbers are given out inside the store's write transaction (the head is read under
the writer lock), so the two writers never take the same place and neither sees a false alarm.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from encmem import EncryptedSession

from .conftest import TEST_KEY
from .history_attacks import BACKENDS, HEADED, SID
from .history_writer import write_for

SECONDS = 10.0


@pytest.mark.slow
@pytest.mark.parametrize("backend", HEADED)
async def test_two_processes_appending_lose_nothing_and_verify(
    tmp_path: Path, backend: str
) -> None:
    path = tmp_path / "two-writers.db"
    setup = BACKENDS[backend].open(path, SID)
    async with EncryptedSession(underlying_session=setup, encryption_key=TEST_KEY) as session:
        await session.get_items(1)  # the tables exist before the writers race
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(2), context.Queue()
    workers = [
        context.Process(
            target=write_for, args=(backend, str(path), TEST_KEY, name, SECONDS, barrier, out)
        )
        for name in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    reports = {}
    for _ in workers:
        writer, acked, errors = await asyncio.to_thread(out.get, timeout=SECONDS + 120)
        reports[writer] = (acked, errors)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert {writer: errors for writer, (_, errors) in reports.items()} == {"a": [], "b": []}
    assert all(len(acked) > 50 for acked, _ in reports.values()), "a writer barely wrote"

    reader_backend = BACKENDS[backend].open(path, SID)
    reader = EncryptedSession(underlying_session=reader_backend, encryption_key=TEST_KEY, ttl=None)
    try:
        stored = [item["content"] for item in await reader.get_items()]
        assert await reader.verify_history() == len(stored)
    finally:
        await reader_backend.close()
    assert len(stored) == len(set(stored)), "an item is stored twice"
    for writer, (acked, _) in reports.items():
        assert [c for c in stored if c.startswith(f"{writer}-")] == acked, writer
    assert len(stored) == sum(len(acked) for acked, _ in reports.values())
    # The writers really raced: their items interleave rather than come in two runs.
    runs = sum(1 for i in range(1, len(stored)) if stored[i][0] != stored[i - 1][0])
    assert runs > 2
