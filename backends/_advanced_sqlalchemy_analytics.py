"""The turn and usage SQL of AdvancedSQLAlchemySession, for one session, on any async engine.

Turn numbers and message types come from the clear structure rows; the content-aware answers
built on them (previews, search) are computed over the items by :mod:`encmem._turns`. The
answers have AdvancedSQLiteSession's shapes and order on every database (tools are sorted in
Python, so a PostgreSQL collation cannot reorder them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, exists, func, insert, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from encmem._items import decode_stored
from encmem._protocol import TurnRow

from . import _advanced_items as classify
from ._advanced_sqlalchemy_queries import AdvancedQueries, stamp

_COUNTS = ("requests", "input_tokens", "output_tokens", "total_tokens")
_DETAILS = ("input_tokens_details", "output_tokens_details")


async def user_turn_rows(conn: AsyncConnection, q: AdvancedQueries, branch: str) -> list[TurnRow]:
    """Every user turn of ``branch`` with its user item as stored, in order."""
    s, m = q.t.structure, q.t.base.messages
    query = (
        select(s.c.branch_turn_number, s.c.created_at, m.c.message_data, s.c.message_id)
        .select_from(q.joined)
        .where(q.in_branch(branch), s.c.message_type == "user")
        .order_by(s.c.sequence_number)
    )
    return [
        TurnRow(turn, stamp(created), decode_stored(data), int(message_id))
        for turn, created, data, message_id in await conn.execute(query)
    ]


async def conversation_by_turns(
    conn: AsyncConnection, q: AdvancedQueries, branch: str
) -> dict[int, list[dict[str, str | None]]]:
    s = q.t.structure
    query = (
        select(s.c.user_turn_number, s.c.message_type, s.c.tool_name)
        .where(q.in_branch(branch))
        .order_by(s.c.sequence_number)
    )
    by_turn: dict[int, list[dict[str, str | None]]] = {}
    for turn, kind, tool in await conn.execute(query):
        by_turn.setdefault(turn, []).append({"type": kind, "tool_name": tool})
    return by_turn


async def tool_usage(
    conn: AsyncConnection, q: AdvancedQueries, branch: str
) -> list[tuple[str, int, int]]:
    """(tool name, calls, turn) per tool and turn; a tool search counts once per turn."""
    s = q.t.structure
    named = case(
        (s.c.message_type.in_(("shell_call", "apply_patch_call")), s.c.message_type),
    )
    calls = select(
        func.coalesce(s.c.tool_name, named).label("tool_name"), s.c.user_turn_number
    ).where(q.in_branch(branch), s.c.message_type.in_(classify.TOOL_CALL_TYPES))
    o, c = s.alias("o"), s.alias("c")
    answered = exists().where(
        c.c.session_id == o.c.session_id,
        c.c.branch_id == o.c.branch_id,
        c.c.user_turn_number == o.c.user_turn_number,
        c.c.tool_name == o.c.tool_name,
        c.c.message_type == "tool_search_call",
    )
    outputs = select(o.c.tool_name, o.c.user_turn_number).where(
        o.c.session_id == q.sid,
        o.c.branch_id == branch,
        o.c.message_type == "tool_search_output",
        ~answered,
    )
    both = union_all(calls, outputs).subquery()
    query = select(both.c.tool_name, func.count(), both.c.user_turn_number).group_by(
        both.c.tool_name, both.c.user_turn_number
    )
    rows = [(name, int(count), turn) for name, count, turn in await conn.execute(query)]
    # SQLite's order (binary, NULL first), whatever the database's collation.
    rows.sort(key=lambda row: (row[2], row[0] is not None, row[0] or ""))
    return rows


async def store_usage(
    conn: AsyncConnection, q: AdvancedQueries, branch: str, usage: classify.UsageNumbers
) -> int | None:
    """Add a run's usage to the current turn of ``branch``; None (nothing) when it is empty.

    The caller holds the session's writer lock, so reading and then writing the turn's row
    cannot lose a concurrent run's tokens.
    """
    s, u = q.t.structure, q.t.usage
    last = (
        await conn.execute(
            select(s.c.user_turn_number)
            .where(q.in_branch(branch))
            .order_by(s.c.sequence_number.desc())
            .limit(1)
        )
    ).first()
    if last is None:
        return None
    turn = int(last[0] or 0)
    of_turn = (u.c.session_id == q.sid, u.c.branch_id == branch, u.c.user_turn_number == turn)
    old = (await conn.execute(select(*(u.c[n] for n in _COUNTS + _DETAILS)).where(*of_turn)))
    row = old.first()
    totals = [usage.requests, usage.input_tokens, usage.output_tokens, usage.total_tokens]
    input_details, output_details = usage.input_details, usage.output_details
    if row is not None:
        totals = [int(a or 0) + b for a, b in zip(row[:4], totals, strict=True)]
        input_details = classify.merge_details(classify.load_details(row[4]), input_details)
        output_details = classify.merge_details(classify.load_details(row[5]), output_details)
    values: dict[str, Any] = dict(zip(_COUNTS, totals, strict=True))
    values["input_tokens_details"] = classify.dump_details(input_details)
    values["output_tokens_details"] = classify.dump_details(output_details)
    if row is None:
        key = {"session_id": q.sid, "branch_id": branch, "user_turn_number": turn}
        await conn.execute(insert(u).values(**key, **values))
    else:
        await conn.execute(update(u).where(*of_turn).values(**values))
    return turn


async def session_usage(
    conn: AsyncConnection, q: AdvancedQueries, branch: str | None
) -> dict[str, int] | None:
    u = q.t.usage
    query = select(*(func.sum(u.c[n]) for n in _COUNTS), func.count()).where(
        u.c.session_id == q.sid
    )
    if branch is not None:
        query = query.where(u.c.branch_id == branch)
    row = (await conn.execute(query)).first()
    if row is None or row[4] == 0:
        return None
    keys = (*_COUNTS, "total_turns")
    return {key: int(value or 0) for key, value in zip(keys, row, strict=True)}


def _usage_dict(row: Sequence[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {name: row[i] for i, name in enumerate(_COUNTS)}
    found["input_tokens_details"] = classify.load_details(row[4])
    found["output_tokens_details"] = classify.load_details(row[5])
    return found


async def turn_usage(
    conn: AsyncConnection, q: AdvancedQueries, branch: str, turn: int | None
) -> list[dict[str, Any]] | dict[str, Any]:
    """One turn's usage as a dict ({} if none), or every turn's as a list."""
    u = q.t.usage
    columns = [u.c[n] for n in _COUNTS + _DETAILS]
    mine = (u.c.session_id == q.sid, u.c.branch_id == branch)
    if turn is not None:
        query = select(*columns).where(*mine, u.c.user_turn_number == turn)
        row = (await conn.execute(query)).first()
        return {} if row is None else _usage_dict(row)
    every = select(u.c.user_turn_number, *columns).where(*mine).order_by(u.c.user_turn_number)
    return [
        {"user_turn_number": row[0], **_usage_dict(row[1:])}
        for row in await conn.execute(every)
    ]
