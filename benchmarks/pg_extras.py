"""The PostgreSQL extras of ``make bench``: multi-writer throughput, the from_url load and
flatness of AdvancedSQLAlchemySession (their targets: ``targets.from_extras``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pg
import pg_flat
import pg_load

Job = Callable[[], Awaitable[Any]]
NAMES = ("pg/multi-writer/plain", "pg/multi-writer/enc", "pg/from-url-load", "pg/flat/plain",
         "pg/flat/enc")  # fmt: skip


def jobs(url: str, key: str, quick: bool) -> list[tuple[str, Job]]:
    """(name, job) for each extra; every job starts on an emptied public schema."""
    writers = (8, 10, 3) if quick else (8, 25, 10)  # processes, sessions, turns
    flat = (1_000, 5_000, 10) if quick else (1_000, 50_000, 30)  # small, large, repeats
    found: list[tuple[str, Job]] = []

    def add(name: str, job: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        async def fresh() -> dict[str, Any]:
            await pg.reset(url)
            return await job()

        found.append((name, fresh))

    for mode, mode_key in (("plain", None), ("enc", key)):
        add(f"pg/multi-writer/{mode}",
            lambda k=mode_key: pg_load.run(url, *writers, key=k))  # fmt: skip
    # the load: 8 processes x 100 from_url sessions, 2 turns, a branch, usage
    add("pg/from-url-load", lambda: pg_load.run(url, 8, 100, 2, key=key))
    for mode, mode_key in (("plain", None), ("enc", key)):
        if quick and mode == "plain":
            continue
        add(f"pg/flat/{mode}", lambda k=mode_key: pg_flat.run(url, *flat, key=k))
    return found
