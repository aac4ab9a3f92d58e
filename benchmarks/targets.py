"""The issue's targets, checked against one run's medians and ratios (PASS / MISS / n/a)."""

from __future__ import annotations

from typing import Any

Results = dict[int, dict[str, dict[str, Any]]]
REFERENCE_SIZE = 10_000


def _metric(results: Results, size: int, cell: str, key: str) -> float | None:
    value = results.get(size, {}).get(cell, {}).get(key)
    return value if isinstance(value, (int, float)) else None


def _speed(results: Results, size: int, mine: str, theirs: str, key: str) -> float | None:
    """How many times faster ``mine`` is than ``theirs`` on ``key`` (items/s or ms)."""
    a, b = _metric(results, size, mine, key), _metric(results, size, theirs, key)
    if a is None or b is None or a == 0 or b == 0:
        return None
    return a / b if key.endswith("_s") else b / a


def _row(name: str, value: float | None, op: str, bound: float, why: str = "") -> dict[str, Any]:
    if value is None:
        verdict = f"n/a{f' ({why})' if why else ''}"
    elif (op == ">=" and value >= bound) or (op == "<=" and value <= bound):
        verdict = "PASS"
    else:
        verdict = "MISS"
    return {"target": name, "value": value, "bound": f"{op} {bound:g}", "verdict": verdict}


def evaluate(results: Results) -> list[dict[str, Any]]:
    """One row per target; sizes fall back to what the run measured (e.g. --quick)."""
    sizes = sorted(results)
    if not sizes:
        return []
    ref = REFERENCE_SIZE if REFERENCE_SIZE in results else sizes[-1]
    small, large = sizes[0], sizes[-1]
    at = f"@{ref:,}"
    rows: list[dict[str, Any]] = []

    def vs_sdk(label: str, pair: str, key: str, bound: float, sdk_pair: str | None = None) -> None:
        value = _speed(results, ref, f"encmem/{pair}", f"sdk/{sdk_pair or pair}", key)
        rows.append(_row(f"{label} {at}", value, ">=", bound))

    def flat(label: str, cell: str, key: str) -> None:
        why = "needs two sizes" if small == large else ""
        a, b = _metric(results, small, cell, key), _metric(results, large, cell, key)
        value = b / a if a and b and small != large else None
        rows.append(_row(f"{label} t({large:,})/t({small:,})", value, "<=", 1.5, why))

    vs_sdk("advanced/enc get_items(limit=20) x SDK", "advanced/enc", "tail20_ms", 20)
    flat("encmem advanced/enc get_items(limit=20)", "encmem/advanced/enc", "tail20_ms")
    vs_sdk("advanced/plain pop_item x SDK", "advanced/plain", "pop_ms", 10)
    vs_sdk("advanced/enc pop_item x SDK", "advanced/enc", "pop_ms", 10)
    flat("encmem advanced/plain pop_item", "encmem/advanced/plain", "pop_ms")
    flat("encmem advanced/enc pop_item", "encmem/advanced/enc", "pop_ms")
    for backend in ("sqlite", "advanced", "sqla-sqlite", "sqla-pg"):
        vs_sdk(f"{backend}/enc full get_items() x SDK", f"{backend}/enc", "full_items_s", 1.5)
    for backend in ("sqlite", "advanced"):
        vs_sdk(
            f"encmem {backend}/enc add_items x SDK sqlite/plain",
            f"{backend}/enc",
            "add_items_s",
            1.0,
            sdk_pair="sqlite/plain",
        )
    for mode in ("plain", "enc"):
        vs_sdk(f"sqla-sqlite/{mode} add_items x SDK", f"sqla-sqlite/{mode}", "add_items_s", 3)
    for backend in ("sqlite", "advanced", "sqla-sqlite"):
        a = _metric(results, ref, f"encmem/{backend}/enc", "tail20_ms")
        b = _metric(results, ref, f"encmem/{backend}/plain", "tail20_ms")
        value = a / b if a and b else None
        rows.append(
            _row(f"encmem {backend} get_items(limit=20) enc/plain time {at}", value, "<=", 1.5)
        )
    return [r for r in rows if not _all_missing(r, results)]


def _all_missing(row: dict[str, Any], results: Results) -> bool:
    """Drop rows of backends nobody ran (e.g. PostgreSQL skipped) instead of listing n/a."""
    return (
        row["value"] is None
        and "sqla-pg" in row["target"]
        and not any("sqla-pg" in cell for cells in results.values() for cell in cells)
    )


def from_extras(extras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PostgreSQL: the from_url load loses nothing and meets no error; AdvancedSQLAlchemySession's
    hot operations stay flat from the small history to the large one."""
    rows: list[dict[str, Any]] = _agent_loop(extras)
    for extra in extras:
        name = extra.get("name", "")
        if name == "memory/sqlite/enc-full-read" and extra.get("peak_over_items"):
            label = f"full read of {extra['items']:,} encrypted items: peak memory / items"
            rows.append(_row(label, extra["peak_over_items"], "<=", 3))
        if name == "pg/from-url-load" and "errors" in extra:
            value = extra["errors"] + abs(extra["lost"])
            rows.append(_row(f"{name} errors + items lost", value, "<=", 0))
        elif name.startswith("pg/flat/") and "sizes" in extra:
            small, large = extra["sizes"].split("/")
            for op in ("tail20", "pop", "usage", "add_turn"):
                label = f"encmem advanced-pg/{name[8:]} {op} t({large})/t({small})"
                rows.append(_row(label, extra[f"{op}_ratio"], "<=", 1.5))
    return rows


def _agent_loop(extras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Runner's loop (full read, then add, every turn): encmem's time against the SDK's."""
    seconds = {
        e["name"][len("agent-loop/") :]: e["seconds"]
        for e in extras
        if e.get("name", "").startswith("agent-loop/") and "seconds" in e
    }
    wanted = [
        ("sqlite/enc", "sqlite/enc", ">=", 3.0),
        ("advanced/enc", "advanced/enc", ">=", 3.0),
        ("sqlite/enc", "sqlite/plain", ">=", 0.8),
        ("sqlite/plain", "sqlite/plain", ">=", 1.0),
    ]
    rows: list[dict[str, Any]] = []
    for mine, theirs, op, bound in wanted:
        ours, sdk = seconds.get(f"encmem/{mine}"), seconds.get(f"sdk/{theirs}")
        if ours and sdk:
            label = f"agent loop: encmem {mine} x SDK {theirs}"
            rows.append(_row(label, sdk / ours, op, bound))
    return rows
