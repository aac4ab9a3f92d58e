"""One call, timed in two revisions of encmem side by side: the per-call cost of a change.

Each revision runs in a process of its own (its ``encmem`` and ``backends`` taken from git),
holding an encrypted session of ``--items`` items. The two processes take turns, a batch of
calls each per round, so that both meet the same moments of a machine whose speed wanders;
the table gives each side's median per call (wall and CPU, both threads) and the median of
the per-round ratios, with its quartiles.

    python benchmarks/compare_revisions.py 427f303            # add_items, a 4-item turn
    python benchmarks/compare_revisions.py 427f303 --op tail  # get_items(limit=20)

The second revision is the working tree unless ``--new REV`` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "xzyPv-tWxm3_PVFWTDn1HQXFA3EV695te7RXHU0YvUM="


def _item(index: int) -> dict[str, Any]:
    role = "user" if index % 4 == 0 else "assistant"
    return {"role": role, "content": f"message number {index} " + "x" * 200}


async def _serve(kind: str, items: int) -> None:
    """Worker side: fill a session, then answer "OP COUNT" lines with timings."""
    from encmem.backends import AdvancedSQLiteSession, SQLiteSession

    from encmem import EncryptedSession

    folder = Path(tempfile.mkdtemp(prefix="encmem-compare-"))
    path = folder / "store.db"
    store: Any = (
        SQLiteSession("s", path)
        if kind == "sqlite"
        else AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True)
    )
    session = EncryptedSession("s", store, KEY, ttl=None)
    for start in range(0, items, 1_000):
        await session.add_items([_item(i) for i in range(start, min(start + 1_000, items))])
    await session.get_items(limit=20)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    next_index = items
    try:
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            op, count = line.split()
            walls: list[float] = []
            cpu = time.process_time()
            for _ in range(int(count)):
                turn = [_item(next_index + j) for j in range(4)]
                start = time.perf_counter()
                if op == "add":
                    await session.add_items(turn)
                    next_index += 4
                else:
                    await session.get_items(limit=20)
                walls.append(time.perf_counter() - start)
            print(json.dumps([walls, (time.process_time() - cpu) / int(count)]), flush=True)
    finally:
        await store.close()
        shutil.rmtree(folder, ignore_errors=True)


def _tree(revision: str | None, into: Path) -> Path:
    """A folder importing as ``encmem`` (with ``encmem.backends``) from ``revision``."""
    package = into / "encmem"
    if revision is None:
        shutil.copytree(ROOT / "encmem", package)
        shutil.copytree(ROOT / "backends", package / "backends")
        return into
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "encmem", "backends"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.move(str(into / "backends"), str(package / "backends"))
    return into


def _start(tree: Path, kind: str, items: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    worker = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--items", str(items)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    return worker


def _ask(worker: subprocess.Popen[str], op: str, batch: int) -> tuple[list[float], float]:
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(f"{op} {batch}\n")
    worker.stdin.flush()
    walls, cpu = json.loads(worker.stdout.readline())
    return walls, cpu


def compare(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="encmem-revisions-") as tmp:
        trees = {}
        for side, revision in (("old", args.old), ("new", args.new)):
            (Path(tmp) / side).mkdir()
            trees[side] = _tree(revision, Path(tmp) / side)
        workers = {side: _start(tree, args.kind, args.items) for side, tree in trees.items()}
        walls: dict[str, list[float]] = {side: [] for side in workers}
        cpus: dict[str, list[float]] = {side: [] for side in workers}
        ratios = []
        for round_ in range(args.rounds):
            medians = {}
            for side in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                got, cpu = _ask(workers[side], args.op, args.batch)
                walls[side] += got
                cpus[side].append(cpu)
                medians[side] = statistics.median(got)
            ratios.append(medians["new"] / medians["old"])
        for worker in workers.values():
            assert worker.stdin is not None
            worker.stdin.write("\n")
            worker.stdin.flush()
            worker.wait(timeout=60)
    call = "add_items (4 items)" if args.op == "add" else "get_items(limit=20)"
    print(
        f"{call} on {args.kind}/enc at {args.items:,} items, {args.rounds} rounds of "
        f"{args.batch} calls each side"
    )
    print(f"{'revision':24s} {'wall ms':>8s} {'cpu ms':>8s}")
    for side, revision in (("old", args.old), ("new", args.new or "working tree")):
        print(
            f"{revision:24s} {statistics.median(walls[side]) * 1e3:8.3f} "
            f"{statistics.median(cpus[side]) * 1e3:8.3f}"
        )
    low, _, high = statistics.quantiles(ratios, n=4)
    print(
        f"new/old per round: median {statistics.median(ratios):.3f} "
        f"(quartiles {low:.3f}-{high:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", nargs="?", help="the revision to compare with")
    parser.add_argument("--new", help="the other revision (default: the working tree)")
    parser.add_argument("--op", choices=("add", "tail"), default="add")
    parser.add_argument("--kind", choices=("sqlite", "advanced"), default="sqlite")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--serve", choices=("sqlite", "advanced"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.items))
    elif args.old is None:
        parser.error("name the revision to compare with")
    else:
        compare(args)


if __name__ == "__main__":
    main()
