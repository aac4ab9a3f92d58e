"""The turn and usage queries of AdvancedSQLiteSession, as functions of a sqlite3 connection.

Turn numbers and message types come from the clear structure rows; the content-aware answers
built on them (previews, search) are computed over the items by :mod:`encmem._turns`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from encmem._items import decode_stored
from encmem._protocol import TurnRow

from . import _advanced_items as items
from ._advanced_queries import Scope
from ._advanced_schema import STRUCTURE, USAGE


def user_turn_rows(conn: sqlite3.Connection, scope: Scope, branch: str) -> list[TurnRow]:
    rows = conn.execute(
        f"""SELECT s.branch_turn_number, s.created_at, CAST(m.message_data AS BLOB), s.message_id
            FROM {STRUCTURE} s JOIN {scope.messages} m
                ON m.id = s.message_id AND m.session_id = s.session_id
            WHERE s.session_id = ? AND s.branch_id = ? AND s.message_type = 'user'
            ORDER BY s.sequence_number""",
        (scope.session_id, branch),
    ).fetchall()
    return [
        TurnRow(turn, created, decode_stored(data), int(message_id))
        for turn, created, data, message_id in rows
    ]


def conversation_by_turns(
    conn: sqlite3.Connection, scope: Scope, branch: str
) -> dict[int, list[dict[str, str | None]]]:
    by_turn: dict[int, list[dict[str, str | None]]] = {}
    for turn, kind, tool in conn.execute(
        f"""SELECT user_turn_number, message_type, tool_name FROM {STRUCTURE}
            WHERE session_id = ? AND branch_id = ? ORDER BY sequence_number""",
        (scope.session_id, branch),
    ):
        by_turn.setdefault(turn, []).append({"type": kind, "tool_name": tool})
    return by_turn


def tool_usage(conn: sqlite3.Connection, scope: Scope, branch: str) -> list[tuple[str, int, int]]:
    """(tool name, calls, turn) per tool and turn; a tool search counts once per turn."""
    marks = ", ".join("?" for _ in items.TOOL_CALL_TYPES)
    rows = conn.execute(
        f"""SELECT tool_name, COUNT(*), user_turn_number FROM (
                SELECT COALESCE(tool_name, CASE WHEN message_type IN
                    ('shell_call', 'apply_patch_call') THEN message_type END) AS tool_name,
                    user_turn_number
                FROM {STRUCTURE}
                WHERE session_id = ? AND branch_id = ? AND message_type IN ({marks})
                UNION ALL
                SELECT o.tool_name, o.user_turn_number FROM {STRUCTURE} o
                WHERE o.session_id = ? AND o.branch_id = ?
                    AND o.message_type = 'tool_search_output'
                    AND NOT EXISTS (SELECT 1 FROM {STRUCTURE} c
                        WHERE c.session_id = o.session_id AND c.branch_id = o.branch_id
                        AND c.user_turn_number = o.user_turn_number
                        AND c.tool_name = o.tool_name AND c.message_type = 'tool_search_call')
            )
            GROUP BY tool_name, user_turn_number ORDER BY user_turn_number, tool_name""",
        (scope.session_id, branch, *items.TOOL_CALL_TYPES, scope.session_id, branch),
    ).fetchall()
    return [(name, int(count), turn) for name, count, turn in rows]


def store_usage(
    conn: sqlite3.Connection, scope: Scope, branch: str, usage: items.UsageNumbers
) -> int | None:
    """Add a run's usage to the current turn of ``branch``; None (nothing) when it is empty."""
    last = conn.execute(
        f"""SELECT user_turn_number FROM {STRUCTURE} WHERE session_id = ? AND branch_id = ?
            ORDER BY sequence_number DESC LIMIT 1""",
        (scope.session_id, branch),
    ).fetchone()
    if last is None:
        return None
    turn = int(last[0] or 0)
    old = conn.execute(
        f"""SELECT requests, input_tokens, output_tokens, total_tokens, input_tokens_details,
                output_tokens_details FROM {USAGE}
            WHERE session_id = ? AND branch_id = ? AND user_turn_number = ?""",
        (scope.session_id, branch, turn),
    ).fetchone()
    totals = [usage.requests, usage.input_tokens, usage.output_tokens, usage.total_tokens]
    input_details, output_details = usage.input_details, usage.output_details
    if old is not None:
        totals = [int(a or 0) + b for a, b in zip(old[:4], totals, strict=True)]
        input_details = items.merge_details(items.load_details(old[4]), input_details)
        output_details = items.merge_details(items.load_details(old[5]), output_details)
    conn.execute(
        f"""INSERT INTO {USAGE} (session_id, branch_id, user_turn_number, requests,
                input_tokens, output_tokens, total_tokens, input_tokens_details,
                output_tokens_details)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (session_id, branch_id, user_turn_number) DO UPDATE SET
                requests = excluded.requests, input_tokens = excluded.input_tokens,
                output_tokens = excluded.output_tokens, total_tokens = excluded.total_tokens,
                input_tokens_details = excluded.input_tokens_details,
                output_tokens_details = excluded.output_tokens_details""",
        (
            scope.session_id,
            branch,
            turn,
            *totals,
            items.dump_details(input_details),
            items.dump_details(output_details),
        ),
    )
    return turn


def session_usage(
    conn: sqlite3.Connection, scope: Scope, branch: str | None
) -> dict[str, int] | None:
    where, params = "session_id = ?", [scope.session_id]
    if branch is not None:
        where += " AND branch_id = ?"
        params.append(branch)
    row = conn.execute(
        f"""SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(total_tokens),
                COUNT(*) FROM {USAGE} WHERE {where}""",
        params,
    ).fetchone()
    if row is None or row[4] == 0:
        return None
    keys = ("requests", "input_tokens", "output_tokens", "total_tokens", "total_turns")
    return {key: int(value or 0) for key, value in zip(keys, row, strict=True)}


def _usage_dict(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "requests": row[0],
        "input_tokens": row[1],
        "output_tokens": row[2],
        "total_tokens": row[3],
        "input_tokens_details": items.load_details(row[4]),
        "output_tokens_details": items.load_details(row[5]),
    }


def turn_usage(
    conn: sqlite3.Connection, scope: Scope, branch: str, turn: int | None
) -> list[dict[str, Any]] | dict[str, Any]:
    columns = """requests, input_tokens, output_tokens, total_tokens, input_tokens_details,
        output_tokens_details"""
    if turn is not None:
        row = conn.execute(
            f"""SELECT {columns} FROM {USAGE}
                WHERE session_id = ? AND branch_id = ? AND user_turn_number = ?""",
            (scope.session_id, branch, turn),
        ).fetchone()
        return {} if row is None else _usage_dict(row)
    rows = conn.execute(
        f"""SELECT user_turn_number, {columns} FROM {USAGE}
            WHERE session_id = ? AND branch_id = ? ORDER BY user_turn_number""",
        (scope.session_id, branch),
    ).fetchall()
    return [{"user_turn_number": row[0], **_usage_dict(row[1:])} for row in rows]
