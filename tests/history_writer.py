"""A child-process writer for the two-writer test in test_history_writers.py.

It lives apart so that a spawned process imports only this module, the attack helpers' backend
list and encmem, not the test suite's store registry.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from encmem import EncryptedSession

from .history_attacks import BACKENDS, SID


def _batch(writer: str, first: int) -> list[dict[str, Any]]:
    """One to three items; each names its writer and its number in that writer's order."""
    return [
        {"role": "user" if n % 2 else "assistant", "content": f"{writer}-{n}"}
        for n in range(first, first + 1 + first % 3)
    ]


def write_for(
    backend: str, path: str, key: str, writer: str, seconds: float, barrier: Any, out: Any
) -> None:
    """Child process: append batches until ``seconds`` have passed after both writers are
    ready; report the acknowledged contents (in order) and any error."""

    async def write() -> tuple[list[str], list[str]]:
        underlying = BACKENDS[backend].open(Path(path), SID)
        session = EncryptedSession(underlying_session=underlying, encryption_key=key, ttl=None)
        acked: list[str] = []
        errors: list[str] = []
        try:
            await session.get_items(1)  # connection open, tables created
            barrier.wait()
            deadline, first = time.monotonic() + seconds, 0
            while time.monotonic() < deadline:
                batch = _batch(writer, first)
                first += len(batch)  # a failed batch's numbers are never used again
                try:
                    await session.add_items(batch)
                except Exception as exc:  # reported to the parent, which fails the test
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                acked += [item["content"] for item in batch]
        finally:
            await underlying.close()
        return acked, errors

    try:
        out.put((writer, *asyncio.run(write())))
    except Exception as exc:
        out.put((writer, [], [f"{type(exc).__name__}: {exc}"]))
