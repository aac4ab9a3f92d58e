"""Smoke test of the benchmark harness: a --quick run of the SQLite cells completes cleanly.

Not a timed test: nothing here asserts on speed, only on the shape of the JSON it writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_sqlite_run_writes_every_table_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--only",
            "sqlite",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc) >= {"meta", "medians", "ratios", "targets", "extras", "errors"}
    assert doc["errors"] == []
    cells = {row["cell"] for row in doc["medians"]}
    assert cells == {
        "encmem/sqlite/plain",
        "encmem/sqlite/enc",
        "sdk/sqlite/plain",
        "sdk/sqlite/enc",
    }
    for row in doc["medians"]:
        assert "status" not in row, row
        for key in ("add_items_s", "full_items_s", "tail20_ms", "pop_ms"):
            assert row[key] > 0
    assert {row["pair"] for row in doc["ratios"]} == {"sqlite/plain", "sqlite/enc"}
    assert all(row["verdict"] for row in doc["targets"])
    extras = {row["name"] for row in doc["extras"]}
    assert {"concurrency/sqlite/encmem", "concurrency/sqlite/sdk"} <= extras
    assert all(row.get("errors", 0) == 0 for row in doc["extras"])
    assert "== targets ==" in done.stdout
