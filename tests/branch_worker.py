"""A child-process worker for the two-process branching race in test_advanced_concurrency.py.

It lives apart so that a spawned process imports only this module and the backend, not the
whole store registry.
"""

from __future__ import annotations

import asyncio
from typing import Any

from encmem.backends import AdvancedSQLiteSession


def branch_in_process(path: str, barrier: Any, results: Any, name: str | None) -> None:
    """Wait for the other process, then branch from turn 2 and report the id or the error."""

    async def create() -> str:
        session = AdvancedSQLiteSession(session_id="s", db_path=path)
        try:
            return await session.create_branch_from_turn(2, name)
        finally:
            await session.close()

    barrier.wait()
    try:
        results.put(("ok", asyncio.run(create())))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
