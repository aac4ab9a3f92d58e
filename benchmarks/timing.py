"""Timing helpers: perf_counter medians of repeated async operations."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def timed(op: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Seconds one call of ``op`` took, and what it returned."""
    start = time.perf_counter()
    result = await op()
    return time.perf_counter() - start, result


async def median_seconds(op: Callable[[], Awaitable[Any]], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``op`` (a garbage collection before)."""
    gc.collect()
    samples = [(await timed(op))[0] for _ in range(repeats)]
    return statistics.median(samples)


def rate(count: int, seconds: float) -> float:
    """Items per second (0 when nothing was measured)."""
    return count / seconds if seconds > 0 else 0.0
