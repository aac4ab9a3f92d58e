"""Many sessions at once on one SQLite file: EncryptedSession(SQLiteSession) x N, M turns each."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import workload
from cells import CellSpec, open_cell


async def run_concurrent(
    impl: str, workdir: Path, key: str, sessions: int, turns: int
) -> dict[str, Any]:
    """Throughput, per-turn latency and errors of ``sessions`` gathered sessions on one file."""
    spec = CellSpec(impl, "sqlite", True)
    cells = [
        await open_cell(spec, workdir, key, session_id=f"user-{index:05d}")
        for index in range(sessions)
    ]
    batches = [workload.turn(index) for index in range(turns)]
    latencies: list[float] = []

    async def converse(cell: Any) -> None:
        for items in batches:
            start = time.perf_counter()
            await cell.session.add_items(items)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(converse(c) for c in cells), return_exceptions=True)
    elapsed = time.perf_counter() - start
    errors = [o for o in outcomes if isinstance(o, BaseException)]

    expected = turns * workload.ITEMS_PER_TURN
    short = 0
    for cell in cells[:: max(1, sessions // 50)]:  # spot-check 50 sessions read back whole
        try:
            if len(await cell.session.get_items()) != expected:
                short += 1
        except Exception as exc:
            errors.append(exc)
    for cell in cells:
        try:
            await cell.close()
        except Exception as exc:
            errors.append(exc)
    latencies.sort()
    written = (sessions * turns - len(errors)) * workload.ITEMS_PER_TURN
    return {
        "sessions": sessions,
        "turns": turns,
        "seconds": elapsed,
        "items_s": written / elapsed if elapsed else 0.0,
        "turns_s": sessions * turns / elapsed if elapsed else 0.0,
        "turn_p50_ms": 1e3 * statistics.median(latencies) if latencies else None,
        "turn_p99_ms": 1e3 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
        "errors": len(errors) + short,
        "error_samples": sorted({f"{type(e).__name__}: {e}"[:200] for e in errors})[:3],
    }
