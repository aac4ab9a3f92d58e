"""Profile one operation of one cell with cProfile (event-loop thread only).

    python benchmarks/profile_cell.py encmem/advanced/enc --n 10000 --op tail20 [--repeat 200]

Time the event loop spends waiting shows up under ``select``/``epoll``: that is the database
thread (aiosqlite) or the server working, not Python on the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import workload
from cells import CellSpec, open_cell
from measure import fill

OPS = ("full", "tail20", "pop", "add")


async def _op(session: Any, op: str, repeat: int, count: int) -> None:
    if op == "full":
        for _ in range(repeat):
            await session.get_items()
    elif op == "tail20":
        for _ in range(repeat):
            await session.get_items(limit=20)
    elif op == "pop":
        for _ in range(repeat):
            await session.pop_item()
    else:
        for index in range(repeat):
            await session.add_items(workload.turn(count + index))


async def main_async(args: argparse.Namespace) -> None:
    from cryptography.fernet import Fernet

    impl, backend, mode = args.cell.split("/")
    spec = CellSpec(impl, backend, mode == "enc")
    with tempfile.TemporaryDirectory(prefix="encmem-prof-") as tmp:
        cell = await open_cell(spec, Path(tmp), Fernet.generate_key().decode())
        try:
            await fill(cell, args.n)
            await _op(cell.session, args.op, 2, args.n)  # warm caches and connections
            profiler = cProfile.Profile()
            start, cpu = time.perf_counter(), time.process_time()
            profiler.enable()
            await _op(cell.session, args.op, args.repeat, args.n)
            profiler.disable()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        finally:
            await cell.close()
    print(
        f"{args.cell} N={args.n:,} op={args.op} x{args.repeat}: wall {wall * 1e3:.1f} ms "
        f"({wall * 1e3 / args.repeat:.3f} ms/op), process CPU {cpu * 1e3:.1f} ms"
    )
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
        print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell", help="e.g. encmem/advanced/enc")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--op", choices=OPS, default="tail20")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--top", type=int, default=25)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
