"""The Runner's hot path, and the memory of one large read.

``Runner.run(agent, input, session=...)`` reads the whole history on every turn, then appends
the turn's items. The loop here does exactly that (a full ``get_items()``, then
``add_items(turn)``) for ``turns`` turns of four items, with one session object, for each
cell; each cell runs ``rounds`` times, alternating with the others, and its fastest round
counts (this machine's speed wanders by tens of percent between seconds).

The memory cell fills one encrypted session with ``items`` items and measures, with
``tracemalloc``, the peak of Python allocations during one whole read of it by a fresh
session object, against the size of the items it returns (as objects sharing nothing); and the
process's peak RSS.
"""

from __future__ import annotations

import gc
import json
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import workload
from cells import CellSpec, open_cell

CELLS = (
    "sdk/sqlite/plain",
    "encmem/sqlite/plain",
    "sdk/sqlite/enc",
    "encmem/sqlite/enc",
    "sdk/advanced/enc",
    "encmem/advanced/enc",
)


async def _loop_once(name: str, key: str, turns: int) -> float:
    impl, backend, mode = name.split("/")
    with tempfile.TemporaryDirectory(prefix="encmem-bench-") as tmp:
        cell = await open_cell(CellSpec(impl, backend, mode == "enc"), Path(tmp), key)
        batches = [workload.turn(index) for index in range(turns)]
        try:
            start = time.perf_counter()
            for items in batches:
                await cell.session.get_items()
                await cell.session.add_items(items)
            return time.perf_counter() - start
        finally:
            await cell.close()


async def run_loop(key: str, turns: int, rounds: int) -> list[dict[str, Any]]:
    """One row per cell: its fastest round, in seconds."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name in CELLS:
            seconds = await _loop_once(name, key, turns)
            best[name] = min(best.get(name, seconds), seconds)
    return [
        {"name": f"agent-loop/{name}", "turns": turns, "rounds": rounds, "seconds": seconds}
        for name, seconds in best.items()
    ]


async def run_memory(key: str, items: int) -> dict[str, Any]:
    """Peak Python allocations of one whole encrypted read, over the size of its items."""
    from encmem.backends import SQLiteSession

    from encmem import EncryptedSession, Keyring

    with tempfile.TemporaryDirectory(prefix="encmem-bench-") as tmp:
        path = str(Path(tmp) / "memory.db")
        keyring = Keyring({"k1": key})
        backend = SQLiteSession("memory", path)
        writer = EncryptedSession("memory", backend, keyring, ttl=None)
        for start in range(0, items, 1_000):
            turns = range(start // 4, (start + 1_000) // 4)
            await writer.add_items([item for index in turns for item in workload.turn(index)])
        await backend.close()

        backend = SQLiteSession("memory", path)
        reader = EncryptedSession("memory", backend, keyring, ttl=None)
        await reader.get_items(1)  # connection open, seeds loaded
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        found = await reader.get_items()
        peak = tracemalloc.get_traced_memory()[1] - before
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        alone = [json.loads(json.dumps(item)) for item in found]  # the items, sharing nothing
        size = tracemalloc.get_traced_memory()[0] - held
        count = len(alone)
        tracemalloc.stop()
        del found, alone
        await backend.close()
        return {
            "items": count,
            "items_mb": size / 2**20,
            "peak_mb": peak / 2**20,
            "peak_over_items": peak / size if size else None,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
