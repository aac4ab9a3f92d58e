"""AdvancedSQLAlchemySession on PostgreSQL, flat in history length: the per-call time of the hot
operations on a session of ``large`` items over the same on a session of ``small`` items.

Timed: ``get_items(limit=20)``, ``pop_item`` (the item is put back untimed), and the turn
queries that each new turn runs: ``store_run_usage`` (finds the branch's current turn) and
adding a turn (finds the next sequence and turn numbers). Both sessions live in the same
tables, so the database is as big for either.
"""

from __future__ import annotations

import gc
import statistics
from typing import Any

import workload
from pg_load import _usage
from timing import timed

OPERATIONS = ("tail20_ms", "pop_ms", "usage_ms", "add_turn_ms")


async def _open(url: str, session_id: str, key: str | None) -> tuple[Any, Any]:
    from encmem.backends import AdvancedSQLAlchemySession

    from encmem import EncryptedSession

    underlying = AdvancedSQLAlchemySession.from_url(session_id, url=url, create_tables=True)
    if key is None:
        return underlying, underlying
    return EncryptedSession(session_id, underlying, key, ttl=None), underlying


async def _fill(session: Any, underlying: Any, count: int) -> None:
    data = workload.items(count)
    for offset in range(0, count, 1000):
        await session.add_items(data[offset : offset + 1000])
    await _analyze(underlying)


async def _analyze(underlying: Any) -> None:
    """Refresh the planner's statistics, as autovacuum does within a minute of a bulk load.

    Timed right after the load, a table PostgreSQL has never analyzed is planned as if each
    session held one row, and the newest item is then found by sorting the whole branch.
    """
    from sqlalchemy import text

    async with underlying.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))


async def _times(session: Any, repeats: int, first_turn: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in OPERATIONS}
    gc.collect()
    for n in range(repeats):
        samples["tail20_ms"].append((await timed(lambda: session.get_items(limit=20)))[0])
        seconds, item = await timed(session.pop_item)
        samples["pop_ms"].append(seconds)
        await session.add_items([item])
        turn = workload.turn(first_turn + n)
        samples["add_turn_ms"].append((await timed(lambda t=turn: session.add_items(t)))[0])
        samples["usage_ms"].append((await timed(lambda: session.store_run_usage(_usage(9))))[0])
    return {name: 1e3 * statistics.median(values) for name, values in samples.items()}


async def run(url: str, small: int, large: int, repeats: int, key: str | None) -> dict[str, Any]:
    """Times at both sizes and their ratios (each ratio's target: <= 1.5)."""
    measured: dict[int, dict[str, float]] = {}
    for size in (large, small):
        session, underlying = await _open(url, f"flat-{size}", key)
        try:
            await _fill(session, underlying, size)
            await _times(session, 3, size)  # warm the plans and caches of this session
            measured[size] = await _times(session, repeats, size + 10)
        finally:
            await underlying.close()
    result: dict[str, Any] = {"sizes": f"{small:,}/{large:,}"}
    for name in OPERATIONS:
        result[f"{name[:-3]}_ratio"] = measured[large][name] / measured[small][name]
        result[f"{name}@{large // 1000}k"] = measured[large][name]
    return result
