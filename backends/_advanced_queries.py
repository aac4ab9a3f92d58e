"""The SQL of AdvancedSQLiteSession, as plain functions of a ``sqlite3.Connection``.

Each public function is (part of) one job that the session runs on its connection thread,
inside one transaction for writes. Reads of the newest items and pops seek the
``(session_id, branch_id, sequence_number)`` index, so they cost O(limit) and O(1) whatever
the length of the history. Content is never logged.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from encmem._items import CorruptRow, Item, decode_stored
from encmem.errors import BranchError

from . import _advanced_items as items
from . import _heads as heads
from ._advanced_schema import BRANCHES, STRUCTURE, USAGE
from ._rows import Decode, decode_rows, plain_item

logger = logging.getLogger("encmem.backends.advanced_sqlite")

MAIN = "main"
_NO_BOUND = 2**63 - 1


class Scope(NamedTuple):
    """Which session, in which tables."""

    session_id: str
    sessions: str
    messages: str


# -- branches ---------------------------------------------------------------------------------


def branch_state(conn: sqlite3.Connection, scope: Scope, branch: str) -> str:
    """``live``, ``deleted`` or ``missing``; ``main`` is live whenever the session exists."""
    row = conn.execute(
        f"SELECT deleted_at IS NULL FROM {BRANCHES} WHERE session_id = ? AND branch_id = ?",
        (scope.session_id, branch),
    ).fetchone()
    if row is None:
        return "live" if branch == MAIN else "missing"
    return "live" if row[0] else "deleted"


def require_writable_branch(conn: sqlite3.Connection, scope: Scope, branch: str) -> None:
    """Register ``main`` on first write; refuse to write into a branch that is gone."""
    if branch == MAIN:
        conn.execute(
            f"INSERT OR IGNORE INTO {BRANCHES} (session_id, branch_id) VALUES (?, ?)",
            (scope.session_id, MAIN),
        )
        return
    if branch_state(conn, scope, branch) != "live":
        raise BranchError(
            f"the current branch {branch!r} no longer exists (it was deleted, or the session "
            "was cleared); call switch_to_branch('main') or another listed branch"
        )


def reserve_branch(conn: sqlite3.Connection, scope: Scope, name: str | None, turn: int) -> str:
    """Claim a branch id for this session: ``name``, or a generated one that is still free."""
    insert = f"INSERT OR IGNORE INTO {BRANCHES} (session_id, branch_id) VALUES (?, ?)"
    if name is not None:
        if name == MAIN or conn.execute(insert, (scope.session_id, name)).rowcount == 0:
            raise BranchError(
                f"branch name {name!r} is already used in this session (deleted branches keep "
                "their names); choose another name or pass branch_name=None"
            )
        return name
    base = f"branch_from_turn_{turn}_{int(time.time())}"
    candidate, suffix = base, 1
    while conn.execute(insert, (scope.session_id, candidate)).rowcount == 0:
        suffix += 1
        candidate = f"{base}_{suffix}"
    return candidate


def create_branch(
    conn: sqlite3.Connection, scope: Scope, source: str, turn: int, name: str | None
) -> str:
    """A new branch holding the rows of ``source`` before user turn ``turn``; its id.

    Messages are shared, not copied: the new rows point at the same message ids, keeping
    their sequence numbers (so ids keep growing with position) and their timestamps.
    """
    found = conn.execute(
        f"""SELECT 1 FROM {STRUCTURE} WHERE session_id = ? AND branch_id = ?
            AND branch_turn_number = ? AND message_type = 'user' LIMIT 1""",
        (scope.session_id, source, turn),
    ).fetchone()
    if found is None:
        raise BranchError(
            f"turn {turn} is not a user turn of branch {source!r}; "
            "get_conversation_turns() lists the turns you can branch from"
        )
    target = reserve_branch(conn, scope, name, turn)
    conn.execute(
        f"""INSERT INTO {STRUCTURE} (session_id, message_id, branch_id, message_type,
                sequence_number, user_turn_number, branch_turn_number, tool_name, created_at)
            SELECT session_id, message_id, ?, message_type, sequence_number,
                user_turn_number, branch_turn_number, tool_name, created_at
            FROM {STRUCTURE} WHERE session_id = ? AND branch_id = ? AND branch_turn_number < ?
            ORDER BY sequence_number""",
        (target, scope.session_id, source, turn),
    )
    return target


def turn_item(conn: sqlite3.Connection, scope: Scope, branch: str, turn: int) -> Item | CorruptRow:
    """The stored user item that starts user turn ``turn`` of ``branch``."""
    row = conn.execute(
        f"""SELECT CAST(m.message_data AS BLOB) FROM {STRUCTURE} s JOIN {scope.messages} m
                ON m.id = s.message_id AND m.session_id = s.session_id
            WHERE s.session_id = ? AND s.branch_id = ? AND s.branch_turn_number = ?
                AND s.message_type = 'user'
            ORDER BY s.sequence_number LIMIT 1""",
        (scope.session_id, branch, turn),
    ).fetchone()
    return CorruptRow("its message row is missing") if row is None else decode_stored(row[0])


def delete_branch(conn: sqlite3.Connection, scope: Scope, branch: str) -> tuple[int, int]:
    """Drop a branch's rows, usage and now-unused messages; keep its name reserved."""
    if branch_state(conn, scope, branch) != "live":
        raise BranchError(f"branch {branch!r} does not exist; list_branches() shows the branches")
    usage = conn.execute(
        f"DELETE FROM {USAGE} WHERE session_id = ? AND branch_id = ?", (scope.session_id, branch)
    ).rowcount
    message_ids = [
        row[0]
        for row in conn.execute(
            f"DELETE FROM {STRUCTURE} WHERE session_id = ? AND branch_id = ? RETURNING message_id",
            (scope.session_id, branch),
        ).fetchall()
    ]
    drop_unused_messages(conn, scope, message_ids)
    conn.execute(
        f"UPDATE {BRANCHES} SET deleted_at = CURRENT_TIMESTAMP "
        "WHERE session_id = ? AND branch_id = ?",
        (scope.session_id, branch),
    )
    heads.store(conn, scope.messages, scope.session_id, branch, None)
    return len(message_ids), usage


def list_branches(conn: sqlite3.Connection, scope: Scope, current: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"""SELECT b.branch_id, COUNT(s.id),
                COUNT(CASE WHEN s.message_type = 'user' THEN 1 END), b.created_at
            FROM {BRANCHES} b LEFT JOIN {STRUCTURE} s
                ON s.session_id = b.session_id AND s.branch_id = b.branch_id
            WHERE b.session_id = ? AND b.deleted_at IS NULL
            GROUP BY b.branch_id ORDER BY MIN(b.rowid)""",
        (scope.session_id,),
    ).fetchall()
    return [
        {
            "branch_id": branch,
            "message_count": count,
            "user_turns": users,
            "is_current": branch == current,
            "created_at": created,
        }
        for branch, count, users, created in rows
    ]


# -- items ------------------------------------------------------------------------------------


def insert_structure(
    conn: sqlite3.Connection,
    scope: Scope,
    branch: str,
    message_ids: Sequence[int],
    stored: Sequence[Item],
) -> None:
    """Structure rows for freshly inserted messages, continuing the branch's numbering."""
    last = conn.execute(
        f"""SELECT sequence_number, user_turn_number, branch_turn_number FROM {STRUCTURE}
            WHERE session_id = ? AND branch_id = ? ORDER BY sequence_number DESC LIMIT 1""",
        (scope.session_id, branch),
    ).fetchone()
    sequence, turn, branch_turn = (int(v or 0) for v in (last or (0, 0, 0)))
    rows = []
    for message_id, item in zip(message_ids, stored, strict=True):
        kind = items.classify(item)
        sequence += 1
        if kind.is_user:
            turn += 1
            branch_turn += 1
        rows.append(
            (
                scope.session_id,
                message_id,
                branch,
                kind.message_type,
                sequence,
                turn,
                branch_turn,
                kind.tool_name,
            )
        )
    conn.executemany(
        f"""INSERT INTO {STRUCTURE} (session_id, message_id, branch_id, message_type,
                sequence_number, user_turn_number, branch_turn_number, tool_name)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        rows,
    )


def _bound(conn: sqlite3.Connection, scope: Scope, branch: str, before_id: int | None) -> int:
    """The sequence number below which ``before_id``'s older items lie."""
    if before_id is None:
        return _NO_BOUND
    row = conn.execute(
        f"""SELECT sequence_number FROM {STRUCTURE}
            WHERE message_id = ? AND branch_id = ? AND session_id = ?""",
        (before_id, branch, scope.session_id),
    ).fetchone()
    if row is not None:
        return int(row[0])
    # The row went away between two pages (a concurrent pop): fall back on id order, which
    # follows position within a branch.
    row = conn.execute(
        f"""SELECT MAX(sequence_number) FROM {STRUCTURE}
            WHERE session_id = ? AND branch_id = ? AND message_id < ?""",
        (scope.session_id, branch, before_id),
    ).fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def select_tail(
    conn: sqlite3.Connection,
    scope: Scope,
    branch: str,
    limit: int | None,
    before_id: int | None = None,
    decode: Decode = decode_rows,
) -> list[Any]:
    """The newest ``limit`` items of ``branch`` (all when None) older than ``before_id``."""
    bound = _bound(conn, scope, branch, before_id)
    rows = conn.execute(
        f"""SELECT s.message_id, CAST(m.message_data AS BLOB)
            FROM {STRUCTURE} s JOIN {scope.messages} m
                ON m.id = s.message_id AND m.session_id = s.session_id
            WHERE s.session_id = ? AND s.branch_id = ? AND s.sequence_number < ?
            ORDER BY s.sequence_number DESC LIMIT ?""",
        (scope.session_id, branch, bound, -1 if limit is None else limit),
    ).fetchall()
    return decode(rows)


def drop_unused_messages(conn: sqlite3.Connection, scope: Scope, ids: Iterable[int]) -> None:
    """Delete the messages no branch refers to any more (one index seek each)."""
    conn.executemany(
        f"""DELETE FROM {scope.messages} WHERE id = ? AND session_id = ?
            AND NOT EXISTS (SELECT 1 FROM {STRUCTURE} WHERE message_id = ?)""",
        [(i, scope.session_id, i) for i in ids],
    )


def drop_empty_turn_usage(
    conn: sqlite3.Connection, scope: Scope, branch: str, turns: Iterable[int | None]
) -> None:
    """Delete the usage rows of turns that have no message left on ``branch``."""
    conn.executemany(
        f"""DELETE FROM {USAGE} WHERE session_id = ? AND branch_id = ? AND user_turn_number = ?
            AND NOT EXISTS (SELECT 1 FROM {STRUCTURE} WHERE session_id = ? AND branch_id = ?
                AND user_turn_number = ?)""",
        [(scope.session_id, branch, t, scope.session_id, branch, t) for t in set(turns)],
    )


def pop_newest(conn: sqlite3.Connection, scope: Scope, branch: str) -> Item | None:
    """Remove the newest item of ``branch`` (and the message if no other branch has it)."""
    claimed = conn.execute(
        f"""DELETE FROM {STRUCTURE} WHERE id = (
                SELECT id FROM {STRUCTURE} WHERE session_id = ? AND branch_id = ?
                ORDER BY sequence_number DESC LIMIT 1)
            RETURNING message_id, user_turn_number""",
        (scope.session_id, branch),
    ).fetchone()
    if claimed is None:
        return None
    message_id, turn = claimed
    data = conn.execute(
        f"SELECT CAST(message_data AS BLOB) FROM {scope.messages} WHERE id = ?", (message_id,)
    ).fetchone()
    drop_unused_messages(conn, scope, [message_id])
    drop_empty_turn_usage(conn, scope, branch, [turn])
    value = CorruptRow("its message row is missing") if data is None else decode_stored(data[0])
    # A row holding no item raises here, which rolls the pop back.
    return plain_item(scope.session_id, message_id, value)


def delete_items(conn: sqlite3.Connection, scope: Scope, branch: str, ids: Sequence[int]) -> int:
    """Remove items from ``branch`` by message id; return how many left the branch."""
    removed: list[int] = []
    turns: list[int | None] = []
    for message_id in ids:
        row = conn.execute(
            f"""DELETE FROM {STRUCTURE} WHERE message_id = ? AND branch_id = ? AND session_id = ?
                RETURNING user_turn_number""",
            (message_id, branch, scope.session_id),
        ).fetchone()
        if row is not None:
            removed.append(message_id)
            turns.append(row[0])
    drop_unused_messages(conn, scope, removed)
    drop_empty_turn_usage(conn, scope, branch, turns)
    return len(removed)


def replace_items(conn: sqlite3.Connection, scope: Scope, rows: Sequence[tuple[str, int]]) -> int:
    """Overwrite message text in place; structure rows, ids and positions stay."""
    cursor = conn.executemany(
        f"UPDATE {scope.messages} SET message_data = ? WHERE id = ? AND session_id = ?",
        [(text, message_id, scope.session_id) for text, message_id in rows],
    )
    return int(cursor.rowcount)


def clear(conn: sqlite3.Connection, scope: Scope) -> None:
    """Delete everything of the session: usage, structure, branches, messages, session row."""
    heads.clear(conn, scope.messages, scope.session_id)
    for table in (USAGE, STRUCTURE, BRANCHES, scope.messages, scope.sessions):
        conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (scope.session_id,))
