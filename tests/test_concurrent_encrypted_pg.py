"""Several processes adding turns to the same encrypted sessions on PostgreSQL, asking for
turns between writes: no false alarm reaches a caller, nothing is lost, and every history
verifies afterwards."""

from __future__ import annotations

import multiprocessing

import pytest
from encmem.backends import AdvancedSQLAlchemySession

from encmem import EncryptedSession, generate_key

from .encrypted_pg_worker import work
from .pg import pg_url

pytestmark = [pytest.mark.pg, pytest.mark.slow]

WORKERS, TURNS = 4, 8


async def test_concurrent_encrypted_writers_and_turn_queries_agree() -> None:
    url = pg_url()
    key = generate_key()
    sessions = [f"concurrent-enc-{n}-{generate_key()[:8]}" for n in range(2)]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [
        context.Process(target=work, args=(url, key, sessions, w, TURNS, out))
        for w in range(WORKERS)
    ]
    for process in processes:
        process.start()
    reports = [out.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [errors for _, errors in reports] == [[]] * WORKERS
    assert sum(acked for acked, _ in reports) == WORKERS * TURNS * len(sessions)
    for session_id in sessions:
        underlying = AdvancedSQLAlchemySession.from_url(session_id, url=url)
        async with EncryptedSession(underlying_session=underlying, encryption_key=key) as s:
            assert await s.verify_history() == WORKERS * TURNS * 2
            assert len(await s.get_conversation_turns()) == WORKERS * TURNS
