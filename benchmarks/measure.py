"""One cell at one history size: fill, then time full read, tail read, pop and append."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any

import workload
from cells import Cell
from timing import median_seconds, rate, timed

FILL_CHUNK = 1000


@dataclass(frozen=True)
class Plan:
    """How much to repeat each operation (smaller in --quick)."""

    tail_repeats: int = 50
    pops: int = 50
    add_turns: int = 500
    full_repeats_small: int = 3  # N <= 10k; one full read at larger N


async def fill(cell: Cell, count: int) -> float:
    """Write ``count`` items in bulk add_items calls; return items/s of the fill."""
    data = workload.items(count)
    start = time.perf_counter()
    for offset in range(0, count, FILL_CHUNK):
        await cell.session.add_items(data[offset : offset + FILL_CHUNK])
    return rate(count, time.perf_counter() - start)


async def measure(cell: Cell, count: int, plan: Plan) -> dict[str, Any]:
    """The medians of one (cell, N); the history is back to N items between operations."""
    session = cell.session
    result: dict[str, Any] = {"fill_items_s": await fill(cell, count)}

    repeats = plan.full_repeats_small if count <= 10_000 else 1
    gc.collect()
    samples: list[float] = []
    got: list[Any] = []
    for _ in range(repeats):
        seconds, got = await timed(session.get_items)
        samples.append(seconds)
    full_s = statistics.median(samples)
    if len(got) != count:
        raise AssertionError(f"full read returned {len(got)} items, expected {count}")
    result["full_items_s"] = rate(count, full_s)

    tail = await session.get_items(limit=20)
    if len(tail) != 20 or tail[-1] != got[-1]:
        raise AssertionError("get_items(limit=20) did not return the newest 20 items")
    del got
    result["tail20_ms"] = 1e3 * await median_seconds(
        lambda: session.get_items(limit=20), plan.tail_repeats
    )

    gc.collect()
    popped: list[Any] = []
    samples = []
    for _ in range(plan.pops):
        seconds, item = await timed(session.pop_item)
        samples.append(seconds)
        popped.append(item)
    if popped[0] != tail[-1] or any(item is None for item in popped):
        raise AssertionError("pop_item did not return the newest items")
    result["pop_ms"] = 1e3 * statistics.median(samples)
    await session.add_items(popped[::-1])  # back to N items, outside the timed region

    turns = [workload.turn(count + i) for i in range(plan.add_turns)]
    gc.collect()
    start = time.perf_counter()
    for items in turns:
        await session.add_items(items)
    result["add_items_s"] = rate(
        plan.add_turns * workload.ITEMS_PER_TURN, time.perf_counter() - start
    )
    return result
