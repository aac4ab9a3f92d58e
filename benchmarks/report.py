"""Plain-text tables of medians, ratios, targets and extras; the JSON document of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cells import SDK_BASELINE

Results = dict[int, dict[str, dict[str, Any]]]

COLUMNS = (
    ("fill_items_s", "fill it/s"),
    ("add_items_s", "add it/s"),
    ("full_items_s", "full read it/s"),
    ("tail20_ms", "get(20) ms"),
    ("pop_ms", "pop ms"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if value >= 0.01 else f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    """Columns before ``left`` are left-aligned, the rest right-aligned."""
    cells = [headers, *[[_fmt(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        parts = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def medians_rows(results: Results) -> list[dict[str, Any]]:
    rows = []
    for size in sorted(results):
        for cell, metrics in results[size].items():
            rows.append({"n": size, "cell": cell, **metrics})
    return rows


def ratio_rows(results: Results) -> list[dict[str, Any]]:
    """encmem/SDK speed per (backend/mode, N): >1 means encmem is faster."""
    rows = []
    for size in sorted(results):
        cells = results[size]
        pairs = sorted({c.split("/", 1)[1] for c in cells}, key=_pair_order)
        for pair in pairs:
            backend, mode = pair.split("/")
            baseline = f"sdk/{SDK_BASELINE.get(backend, backend)}/{mode}"
            mine, theirs = cells.get(f"encmem/{pair}", {}), cells.get(baseline, {})
            row: dict[str, Any] = {"n": size, "pair": pair}
            for key, _ in COLUMNS:
                a, b = mine.get(key), theirs.get(key)
                if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and b:
                    row[key] = a / b if key.endswith("_s") else b / a
                else:
                    row[key] = None
            rows.append(row)
    return rows


def _pair_order(pair: str) -> tuple[int, bool, str]:
    order = ["sqlite", "advanced", "sqla-sqlite", "sqla-pg", "advanced-pg"]
    backend, mode = pair.split("/")
    return (order.index(backend) if backend in order else 99, mode != "plain", pair)


def render(doc: dict[str, Any]) -> str:
    out: list[str] = []
    meta = doc["meta"]
    out.append("== encmem benchmarks ==")
    for key in ("machine", "python", "load", "durability", "postgres", "workload", "mode"):
        out.append(f"{key}: {meta.get(key)}")
    for note in meta.get("notes", []):
        out.append(f"note: {note}")

    out.append("\n== medians (per cell) ==")
    headers = ["n", "cell", *[label for _, label in COLUMNS]]
    measured = [r for r in doc["medians"] if "status" not in r]
    out.append(
        table(
            headers,
            [[r["n"], r["cell"], *[r.get(k) for k, _ in COLUMNS]] for r in measured],
            left=2,
        )
    )
    for r in doc["medians"]:
        if "status" in r:
            out.append(f"  N={r['n']:,} {r['cell']}: {r['status']}")

    out.append("\n== ratios encmem/SDK (speed; >1 = encmem faster) ==")
    out.append("(advanced-pg: encmem's AdvancedSQLAlchemySession vs the SDK's SQLAlchemySession)")
    headers = ["n", "backend/mode", *[label.split(" ")[0] for _, label in COLUMNS]]
    out.append(
        table(
            headers,
            [[r["n"], r["pair"], *[r[k] for k, _ in COLUMNS]] for r in doc["ratios"]],
            left=2,
        )
    )

    out.append("\n== targets ==")
    out.append(
        table(
            ["target", "value", "bound", "verdict"],
            [[t["target"], t["value"], t["bound"], t["verdict"]] for t in doc["targets"]],
        )
    )

    out.append("\n== extras ==")
    out.append(
        table(["extra", "result"], [[e["name"], _extra_text(e)] for e in doc["extras"]], left=2)
    )
    if doc["errors"]:
        out.append("\n== errors ==")
        out.extend(f"{e['where']}: {e['error']}" for e in doc["errors"])
    return "\n".join(out)


def _extra_text(extra: dict[str, Any]) -> str:
    if "status" in extra:
        return str(extra["status"])
    return ", ".join(f"{k}={_fmt(v)}" for k, v in extra.items() if k != "name")


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
