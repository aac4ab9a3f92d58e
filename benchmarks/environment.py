"""What the run ran on: machine, Python, library versions, durability settings seen."""

from __future__ import annotations

import os
import platform
import sqlite3
from importlib import metadata
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def load() -> str:
    """The 1/5/15-minute load averages (other work on the machine skews timings)."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def describe() -> dict[str, Any]:
    libs = ("encmem", "openai-agents", "cryptography", "aiosqlite", "SQLAlchemy", "asyncpg")
    return {
        "machine": f"{os.cpu_count()} cores, {_cpu_model()}, {platform.platform()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "libraries": {name: _version(name) for name in libs},
    }


def durability_summary(per_cell: dict[str, dict[str, str]]) -> str:
    """'encmem: WAL/FULL; sdk: WAL/FULL' from the pragmas each cell's connection reported."""
    by_impl: dict[str, set[str]] = {}
    for cell, pragmas in per_cell.items():
        if "journal_mode" not in pragmas or "n/a" in pragmas["journal_mode"]:
            continue
        seen = f"journal_mode={pragmas['journal_mode']}, synchronous={pragmas['synchronous']}"
        by_impl.setdefault(cell.split("/")[0], set()).add(seen)
    if not by_impl:
        return "not probed"
    parts = [f"{impl}: {' | '.join(sorted(seen))}" for impl, seen in sorted(by_impl.items())]
    return "; ".join(parts) + " (SQLite cells; neither side sets synchronous, SQLite's default)"
