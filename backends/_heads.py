"""The heads table: one opaque head per session and branch, beside the messages it covers.

A backend stores what :class:`encmem.EncryptedSession` hands it and never reads inside it;
what it guarantees is that a head changes in the same transaction as the items it covers.
Stores written before heads existed have no such table: reads then find no head.
"""

from __future__ import annotations

import sqlite3

from encmem._protocol import HeadUpdate


def heads_table(messages: str) -> str:
    """The heads table that goes with a messages table."""
    return f"{messages}_heads"


def statement(sessions: str, messages: str) -> str:
    """CREATE statement (idempotent) of the heads table."""
    return f"""CREATE TABLE IF NOT EXISTS {heads_table(messages)} (
        session_id TEXT NOT NULL,
        branch_id TEXT NOT NULL,
        head TEXT NOT NULL,
        PRIMARY KEY (session_id, branch_id),
        FOREIGN KEY (session_id) REFERENCES {sessions} (session_id) ON DELETE CASCADE
    )"""


def select(conn: sqlite3.Connection, messages: str, session_id: str, branch: str) -> str | None:
    """The stored head of a branch; None when it has none (or the store has no heads table)."""
    try:
        row = conn.execute(
            f"SELECT head FROM {heads_table(messages)} WHERE session_id = ? AND branch_id = ?",
            (session_id, branch),
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # a store written before heads, opened read-only
        raise
    return None if row is None else str(row[0])


def store(
    conn: sqlite3.Connection, messages: str, session_id: str, branch: str, head: str | None
) -> None:
    """Set (or, for None, remove) a branch's head, inside the caller's transaction."""
    table = heads_table(messages)
    if head is None:
        conn.execute(
            f"DELETE FROM {table} WHERE session_id = ? AND branch_id = ?", (session_id, branch)
        )
        return
    conn.execute(
        f"INSERT INTO {table} (session_id, branch_id, head) VALUES (?, ?, ?) "
        "ON CONFLICT(session_id, branch_id) DO UPDATE SET head = excluded.head",
        (session_id, branch, head),
    )


def update(
    conn: sqlite3.Connection, messages: str, session_id: str, branch: str, change: HeadUpdate
) -> None:
    """Replace a branch's head with what ``change`` makes of it (same transaction)."""
    old = select(conn, messages, session_id, branch)
    new = change(old)
    if new != old:
        store(conn, messages, session_id, branch, new)


def branches(conn: sqlite3.Connection, messages: str, session_id: str) -> list[str]:
    """Every branch of the session that has a head."""
    try:
        rows = conn.execute(
            f"SELECT branch_id FROM {heads_table(messages)} WHERE session_id = ? "
            "ORDER BY branch_id",
            (session_id,),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    return [str(row[0]) for row in rows]


def clear(conn: sqlite3.Connection, messages: str, session_id: str) -> None:
    """Remove every head of the session (clear and erase)."""
    conn.execute(f"DELETE FROM {heads_table(messages)} WHERE session_id = ?", (session_id,))


def others(conn: sqlite3.Connection, messages: str, session_id: str, branch: str) -> bool:
    """Whether another branch of the session has a head."""
    try:
        row = conn.execute(
            f"SELECT 1 FROM {heads_table(messages)} WHERE session_id = ? AND branch_id != ? "
            "LIMIT 1",
            (session_id, branch),
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False
        raise
    return row is not None


def swap(
    conn: sqlite3.Connection,
    messages: str,
    session_id: str,
    branch: str,
    old: str,
    new: str,
    seed: tuple[str, str, str] | None,
) -> bool:
    """Replace the branch's head by ``new`` if it is still ``old`` (and, given (seeds table,
    seed id, sealed form), while that is still the session's stored seed); whether it did."""
    sql = (
        f"UPDATE {heads_table(messages)} SET head = ? "
        "WHERE session_id = ? AND branch_id = ? AND head = ?"
    )
    args = [new, session_id, branch, old]
    if seed is not None:
        sql += (
            f" AND EXISTS (SELECT 1 FROM {seed[0]} "
            "WHERE session_id = ? AND seed_id = ? AND sealed = ?)"
        )
        args += [session_id, seed[1], seed[2]]
    try:
        return conn.execute(sql, args).rowcount == 1
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False  # the caller's own path says what is missing
        raise


def select_with_seed(
    conn: sqlite3.Connection, messages: str, seeds: str, session_id: str, branch: str
) -> tuple[tuple[str, str] | None, str | None]:
    """((the session's seed id, its sealed form), the branch's stored head) in one statement
    of the caller's transaction: a writer's two lookups, at the cost of one."""
    seed = f"FROM {seeds} WHERE session_id = ?"
    row = conn.execute(
        f"SELECT (SELECT seed_id {seed}), (SELECT sealed {seed}), "
        f"(SELECT head FROM {heads_table(messages)} WHERE session_id = ? AND branch_id = ?)",
        (session_id, session_id, session_id, branch),
    ).fetchone()
    seed_id, sealed, head = row
    stored = None if seed_id is None else (str(seed_id), str(sealed))
    return stored, (None if head is None else str(head))
