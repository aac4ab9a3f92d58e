"""Side-by-side benchmarks of encmem and the Agents SDK's sessions; `make bench` runs this.

    python benchmarks/run.py [--quick] [--sizes 1000,10000] [--only PATTERN] [--json PATH]

Prints tables of medians, encmem/SDK ratios and the issue's targets, and writes them all to
benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import gc
import logging
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import agent_loop
import concurrency
import environment
import pg
import pg_extras
import purge_rotate
import rawlimits
import report
import targets
import workload
from cells import PG_BACKENDS, CellSpec, Unavailable, all_specs, open_cell, probe_durability
from measure import Plan, measure

HERE = Path(__file__).resolve().parent
FULL_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000,)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    parser.add_argument("--sizes", help="history sizes, e.g. 1000,10000")
    parser.add_argument("--only", help="run only matching cells (comma-separated patterns)")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL cells")
    parser.add_argument(
        "--cell-budget",
        type=float,
        default=120.0,
        help="skip an SDK cell at a larger N when its estimated time exceeds this (s)",
    )
    return parser.parse_args(argv)


def selected(name: str, patterns: list[str] | None) -> bool:
    """A pattern with wildcards matches the whole name; a bare word, one '/' part of it."""
    if not patterns:
        return True
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            if fnmatch.fnmatch(name, pattern):
                return True
        elif pattern in name.split("/"):
            return True
    return False


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.patterns = [p for p in (args.only or "").split(",") if p] or None
        default = QUICK_SIZES if self.quick else FULL_SIZES
        self.sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(default)
        self.plan = Plan(tail_repeats=10, pops=10, add_turns=50) if self.quick else Plan()
        self.results: dict[int, dict[str, dict[str, Any]]] = {}
        self.extras: list[dict[str, Any]] = []
        self.errors: list[dict[str, str]] = []
        self.notes: list[str] = []
        self.durability: dict[str, dict[str, str]] = {}
        self.load_at_start = environment.load()
        self.elapsed: dict[tuple[str, int], float] = {}
        from cryptography.fernet import Fernet

        self.key = Fernet.generate_key().decode()
        self.key2 = Fernet.generate_key().decode()

    def error(self, where: str, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        self.errors.append({"where": where, "error": text, "trace": traceback.format_exc()})
        return f"error ({text[:120]})"

    def skip_reason(self, spec: CellSpec, size: int) -> str | None:
        if spec.impl != "sdk":
            return None
        earlier = [n for n in self.sizes if n < size and (spec.name, n) in self.elapsed]
        if not earlier:
            return None
        prev = max(earlier)
        estimate = self.elapsed[(spec.name, prev)] * size / prev
        if estimate > self.args.cell_budget:
            return (
                f"skipped (est. {estimate:.0f} s at N={size:,} from "
                f"{self.elapsed[(spec.name, prev)]:.1f} s at N={prev:,}; budget "
                f"{self.args.cell_budget:.0f} s)"
            )
        return None

    async def cell(self, spec: CellSpec, size: int, pg_url: str | None) -> dict[str, Any]:
        reason = self.skip_reason(spec, size)
        if reason is not None:
            return {"status": reason}
        with tempfile.TemporaryDirectory(prefix="encmem-bench-") as tmp:
            start = time.perf_counter()
            cell = None
            try:
                if spec.backend in PG_BACKENDS:
                    if pg_url is None:
                        raise Unavailable("no PostgreSQL server")
                    await pg.reset(pg_url)
                cell = await open_cell(spec, Path(tmp), self.key, pg_url=pg_url)
                metrics = await measure(cell, size, self.plan)
                if spec.name not in self.durability:
                    self.durability[spec.name] = await probe_durability(cell)
            except Unavailable as exc:
                return {"status": f"unavailable ({exc})"}
            except Exception as exc:
                return {"status": self.error(f"{spec.name} N={size}", exc)}
            finally:
                if cell is not None:
                    try:
                        await cell.close()
                    except Exception as exc:
                        self.error(f"{spec.name} close", exc)
                gc.collect()
            self.elapsed[(spec.name, size)] = time.perf_counter() - start
            metrics["cell_seconds"] = self.elapsed[(spec.name, size)]
            return metrics

    async def cells(self, server: pg.Server) -> None:
        specs = [s for s in all_specs() if selected(s.name, self.patterns)]
        for size in self.sizes:
            row = self.results.setdefault(size, {})
            for spec in specs:
                if spec.backend in PG_BACKENDS and server.url is None:
                    row[spec.name] = {"status": f"unavailable ({server.note})"}
                    continue
                row[spec.name] = await self.cell(spec, size, server.url)
                print(f"  N={size:>7,} {spec.name:<28} {_brief(row[spec.name])}", flush=True)

    async def extra(self, name: str, job: Any) -> None:
        if not selected(name, self.patterns):
            return
        try:
            result = await job()
        except Exception as exc:
            result = {"name": name, "status": self.error(name, exc)}
        rows = result if isinstance(result, list) else [{"name": name, **result}]
        for row in rows:
            self.extras.append(row)
            print(f"  {row['name']:<34} {report._extra_text(row)}", flush=True)

    async def pg_extras(self, server: pg.Server) -> None:
        for name, job in pg_extras.jobs(server.url or "", self.key, self.quick):
            if not selected(name, self.patterns):
                continue
            if server.url is None:
                self.extras.append({"name": name, "status": f"unavailable ({server.note})"})
                continue
            await self.extra(name, job)

    async def extras_all(self) -> None:
        sessions, turns = (100, 5) if self.quick else (1_000, 10)
        for impl in ("encmem", "sdk"):

            async def conc(impl: str = impl) -> dict[str, Any]:
                with tempfile.TemporaryDirectory(prefix="encmem-bench-") as tmp:
                    return await concurrency.run_concurrent(
                        impl, Path(tmp), self.key, sessions, turns
                    )

            await self.extra(f"concurrency/sqlite/{impl}", conc)

        maint_sessions, per_session = (4, 500) if self.quick else (100, 1_000)
        why = purge_rotate.available()
        if why is not None:
            for job in ("rotate", "purge"):
                if selected(f"maintenance/sqlite/{job}", self.patterns):
                    self.extras.append({"name": f"maintenance/sqlite/{job}", "status": why})
        else:

            async def maint() -> list[dict[str, Any]]:
                with tempfile.TemporaryDirectory(prefix="encmem-bench-") as tmp:
                    return await purge_rotate.run(
                        Path(tmp), self.key, self.key2, maint_sessions, per_session
                    )

            await self.extra("maintenance/sqlite", maint)

        loop_turns, loop_rounds = (40, 1) if self.quick else (300, 2)

        async def loop() -> list[dict[str, Any]]:
            return await agent_loop.run_loop(self.key, loop_turns, loop_rounds)

        await self.extra("agent-loop", loop)

        async def memory() -> dict[str, Any]:
            return await agent_loop.run_memory(self.key, 5_000 if self.quick else 100_000)

        await self.extra("memory/sqlite/enc-full-read", memory)

        raw_n = 5_000 if self.quick else 100_000

        async def fernet() -> dict[str, Any]:
            return {"items": raw_n, "items_s": rawlimits.fernet_decrypt(raw_n)}

        async def loads() -> dict[str, Any]:
            return {"items": raw_n, "items_s": rawlimits.json_loads(raw_n)}

        async def many() -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="encmem-bench-") as tmp:
                return {"items": raw_n, "items_s": rawlimits.sqlite_executemany(raw_n, Path(tmp))}

        async def commit() -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="encmem-bench-") as tmp:
                commits = 50 if self.quick else 500
                return {
                    "commits": commits,
                    "median_ms": rawlimits.sqlite_commit_ms(commits, Path(tmp)),
                }

        await self.extra("raw/fernet-decrypt", fernet)
        await self.extra("raw/json-loads", loads)
        await self.extra("raw/sqlite3-executemany", many)
        await self.extra("raw/sqlite3-commit", commit)

    def document(self, started: float, server: pg.Server) -> dict[str, Any]:
        meta = environment.describe()
        meta.update(
            {
                "mode": "quick" if self.quick else "full",
                "load": f"loadavg 1/5/15 min: {self.load_at_start} at start, "
                f"{environment.load()} at end (other work on the machine skews timings)",
                "sizes": self.sizes,
                "only": self.patterns,
                "plan": vars(self.plan),
                "workload": (
                    f"turns of 4 items (user ~200 chars, function_call, function_call_output, "
                    f"assistant ~600 chars); mean {workload.mean_json_size():.0f} B of JSON per "
                    "item; "
                    f"fill in add_items calls of 1,000 items; add_items timed on "
                    f"{self.plan.add_turns} turns of 4; ttl=600 on both sides"
                ),
                "durability": environment.durability_summary(self.durability),
                "durability_per_cell": self.durability,
                "postgres": server.note,
                "notes": self.notes,
                "seconds": time.perf_counter() - started,
            }
        )
        return {
            "meta": meta,
            "medians": report.medians_rows(self.results),
            "ratios": report.ratio_rows(self.results),
            "targets": targets.evaluate(self.results) + targets.from_extras(self.extras),
            "extras": self.extras,
            "errors": self.errors,
        }


def _brief(metrics: dict[str, Any]) -> str:
    if "status" in metrics:
        return str(metrics["status"])
    keys = ("add_items_s", "full_items_s", "tail20_ms", "pop_ms", "cell_seconds")
    return "  ".join(f"{k}={report._fmt(metrics.get(k))}" for k in keys)


async def main_async(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    run = Run(args)
    wants_pg = any(
        selected(name, run.patterns)
        for name in ("encmem/sqla-pg/plain", "sdk/sqla-pg/plain", "encmem/advanced-pg/plain",
                     *pg_extras.NAMES)
    )  # fmt: skip
    server = (
        pg.find(start=not run.quick)
        if wants_pg and not args.no_pg
        else pg.Server(None, "PostgreSQL not selected")
    )
    try:
        await run.cells(server)
        await run.pg_extras(server)
        await run.extras_all()
    finally:
        server.stop()
    if any(
        m.get("status", "").startswith("skipped") for r in run.results.values() for m in r.values()
    ):
        run.notes.append(
            "SDK cells marked 'skipped' would exceed --cell-budget at that N (linear estimate "
            "from the smaller N); their ratios and targets are n/a"
        )
    doc = run.document(started, server)
    print()
    print(report.render(doc))
    report.write_json(doc, args.json)
    print(f"\nwrote {args.json} ({doc['meta']['seconds']:.0f} s)")
    return 1 if doc["errors"] else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
