"""Reports for a person (readable lines) or a program (``--json``), on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from ._diagnosis import ERASED, NOT_CHAINED, NOT_SHREDDABLE, plural, sessions_text
from ._export import Output, stdout_is_shared_file

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
_INSPECT_COLUMNS = (
    "session_id",
    "items",
    "branches",
    "plaintext",
    "sdk_v1",
    "unchained",
    "unshreddable",
    "expired",
    "unreadable",
    "oldest",
    "newest",
)


def safe(text: object) -> str:
    """Stored text for the terminal: control characters escaped, so that a session id or key
    id read from the store cannot rewrite what the report shows."""
    return str(text).translate(_CONTROL)


def _cell(row: dict[str, Any], column: str) -> str:
    if row[column] is not None:
        return safe(row[column])
    return "not checked" if column == "expired" else "-"


def _inspect_lines(report: dict[str, Any]) -> list[str]:
    rows = [[_cell(row, c) for c in _INSPECT_COLUMNS] for row in report["sessions"]]
    for row, session in zip(rows, report["sessions"], strict=True):
        row.append(safe(",".join(f"{k}:{n}" for k, n in session["key_ids"].items())) or "-")
    header = [*_INSPECT_COLUMNS, "key_ids"]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    totals = report["totals"]
    note = "" if report["keys_given"] else " (no keys given: expired/unreadable not checked)"
    counted = f"{plural(totals['sessions'], 'session')}, {plural(totals['items'], 'item')}"
    if report.get("unchained"):
        counted += f", {report['unchained']} not chained (run encmem rotate)"
    if report.get("unshreddable"):
        counted += f", {report['unshreddable']} not shreddable (run encmem rotate)"
    return [*lines, "", f"{counted}{note}"]


def _key_problem_line(problem: dict[str, Any]) -> str:
    kid = repr(problem["kid"]) if problem["kid"] is not None else "<invalid>"
    where = f"{plural(problem['items'], 'item')} in {sessions_text(problem['sessions'])}"
    if problem["problem"] == "missing-key":
        return (
            f"key id {safe(kid)}: no key was given for it (UnknownKeyIdError); {safe(where)} "
            "could not be checked: add the key and run again"
        )
    return (
        f"key id {safe(kid)}: wrong key: the key given for it opens none of its "
        f"{safe(where)}; give the right key and run again"
    )


def _history_line(problem: dict[str, Any]) -> str:
    """A finding about a session's history: session, branch, position, kind, and why."""
    where = safe(problem["session_id"])
    if problem["branch_id"] is not None:
        where += f" branch {safe(problem['branch_id'])}"
    if problem["position"] is not None:
        where += f" position {problem['position']}"
    if problem["storage_id"] is not None:
        where += f" storage id {problem['storage_id']}"
    reason = safe(problem["reason"])
    if "anchor" in problem and problem["anchor"] not in reason:
        reason += f" (anchor {safe(problem['anchor'])})"
    return f"{where}: {safe(problem['problem'])}: {reason}"


_ABOUT_ITEMS = {
    NOT_CHAINED: " sealed before chains",
    NOT_SHREDDABLE: " sealed without a seed: an erase cannot shred their copies in backups",
    ERASED: " sealed under a seed the key store no longer holds (leftovers of an erased "
    "session, or a restored copy: nothing can decrypt them; or the seeds live in another key "
    "store: pass --key-store)",
}


def _problem_line(problem: dict[str, Any]) -> str:
    if problem["problem"] in ("missing-key", "wrong-key"):
        return _key_problem_line(problem)
    if "kind" in problem:
        return _history_line(problem)
    if problem["session_id"] is None:  # about the store, not one item
        return safe(problem["problem"])
    if "items" in problem:  # about a session: how many of its items
        about = _ABOUT_ITEMS.get(problem["problem"], "")
        return (
            f"{safe(problem['session_id'])}: {safe(problem['problem'])}: "
            f"{plural(problem['items'], 'item')}{about}"
        )
    branch = f" branch {safe(problem['branch_id'])}" if problem["branch_id"] else ""
    return (
        f"{safe(problem['session_id'])}{branch} storage id {problem['storage_id']}: "
        f"{safe(problem['problem'])}"
    )


def _verify_lines(report: dict[str, Any]) -> list[str]:
    lines = [_problem_line(problem) for problem in report["problems"]]
    problems = plural(len(report["problems"]), "problem")
    if report["ok"]:
        verdict = "OK"
    elif not report["keys_ok"]:
        verdict = (
            f"FAILED: wrong or missing keys, {plural(report['unopened'], 'item')} not opened; "
            f"{problems}"
        )
    else:
        verdict = f"FAILED: {problems}"
    checked, unopened = report["checked"], report["unopened"]
    opened = f", {checked - unopened} opened" if unopened else ""
    return [*lines, f"{verdict} ({plural(checked, 'item')} checked{opened})"]


def _maintenance_line(command: str, report: dict[str, Any]) -> str:
    what = {"purge": "deleted", "rotate": "re-sealed", "encrypt": "sealed"}[command]
    prefix = "would have " if report.get("dry_run") else ""
    line = (
        f"{command}: {plural(report['examined'], 'item')} in "
        f"{plural(report['sessions'], 'session')} examined, "
        f"{prefix}{what} {report['changed']}, unchanged {report['unchanged']}, "
        f"unreadable {report['unreadable']}"
    )
    if report.get("unchained_sessions"):
        line += (
            f"; {prefix}chained {plural(report['unchained_sessions'], 'session')} "
            f"({plural(report['unchained'], 'item')} not in a chain before)"
        )
    if report.get("unshreddable_sessions"):
        line += (
            f"; {prefix}made {plural(report['unshreddable_sessions'], 'session')} shreddable "
            f"({plural(report['unshreddable'], 'item')} sealed without a seed before)"
        )
    return line


def _head_line(head: dict[str, Any]) -> str:
    """SESSION=ANCHOR or SESSION@BRANCH=ANCHOR: what ``verify --head`` takes."""
    branch = f"@{safe(head['branch_id'])}" if head["branch_id"] is not None else ""
    return f"{safe(head['session_id'])}{branch}={head['anchor']}"


def _lines(command: str, report: dict[str, Any]) -> list[str]:
    if command == "inspect":
        return _inspect_lines(report)
    if command == "verify":
        return _verify_lines(report)
    if command in ("purge", "rotate", "encrypt"):
        return [_maintenance_line(command, report)]
    if command == "head":
        return [_head_line(head) for head in report["heads"]]
    if command == "erase":
        return list(report["lines"])
    return []


def print_report(command: str, report: dict[str, Any], as_json: bool) -> None:
    """The report on stdout; a reader that stopped reading ends it quietly."""
    out = Output(sys.stdout)
    if as_json:
        shown = report["json"] if command == "erase" else report
        out.write(json.dumps(shown, ensure_ascii=False, indent=2) + "\n")
    else:
        for line in _lines(command, report):
            if not out.write(line + "\n"):
                break
    out.flush()


def export_notice(report: dict[str, Any], out_path: str | None) -> str:
    """What an export wrote, for stderr: where, and that it is decrypted content."""
    what = f"exported {plural(report['exported'], 'item')} of session {report['session_id']!r}"
    if out_path is not None:
        return (
            f"{what} to {out_path!r}: it holds decrypted conversation content, readable by you "
            "only (mode 0600); delete it when it is no longer needed"
        )
    mode = stdout_is_shared_file()
    if mode is not None:
        return (
            f"{what} (decrypted content) into a file others can read (mode {mode}); "
            "--out FILE creates one only you can read"
        )
    return f"{what} (decrypted content)"
