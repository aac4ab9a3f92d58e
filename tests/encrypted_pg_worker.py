"""A child process for test_concurrent_encrypted_pg.py: turns and turn queries on shared
sessions, encrypted, on PostgreSQL. Apart from the tests so that a spawned process imports
only encmem."""

from __future__ import annotations

import asyncio
from typing import Any

from encmem.backends import AdvancedSQLAlchemySession

from encmem import EncryptedSession


def work(url: str, key: str, sessions: list[str], worker: int, turns: int, out: Any) -> None:
    """Add ``turns`` turns to each session, asking for its turns after each; report the
    acknowledged turns and every error by type."""

    async def run() -> tuple[int, list[str]]:
        acked, errors = 0, []
        for session_id in sessions:
            underlying = AdvancedSQLAlchemySession.from_url(
                session_id, url=url, create_tables=True
            )
            async with EncryptedSession(underlying_session=underlying, encryption_key=key) as s:
                for turn in range(turns):
                    try:
                        await s.add_items(
                            [
                                {"role": "user", "content": f"w{worker} t{turn}"},
                                {"role": "assistant", "content": f"ok {worker}.{turn}"},
                            ]
                        )
                        acked += 1
                        await s.get_conversation_turns()
                        await s.get_items(limit=4)
                    except Exception as exc:
                        errors.append(f"{type(exc).__name__}: {exc}"[:300])
        return acked, errors

    out.put(asyncio.run(run()))
