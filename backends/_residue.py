"""Emptying a SQLite WAL after a delete, so that no old copy of the deleted pages stays."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._identifiers import quote_identifier

WAL_PENDING = "WAL not emptied: another connection holds a read transaction"
RESIDUE_WAIT_SECONDS = 2.0
"""How long an erase waits for other readers before it reports residue pending."""


def checkpoint_truncate(
    query: Callable[[str], Sequence[Any] | None], wait: float = RESIDUE_WAIT_SECONDS
) -> bool:
    """Fold the WAL into the database file and empty it; False when readers prevented that.

    ``query`` runs one statement on the connection and returns its first row (a sqlite3
    connection's or a SQLAlchemy connection's, so both paths share this). Until the WAL is
    emptied it holds the pages as they were before a delete; another connection's open read
    transaction keeps it from being emptied. SQLite's busy handler waits up to ``wait``
    seconds for that here, then the checkpoint reports itself busy.
    """
    previous = query("PRAGMA busy_timeout")
    query(f"PRAGMA busy_timeout={int(wait * 1000)}")
    try:
        row = query("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        if previous is not None:
            query(f"PRAGMA busy_timeout={int(previous[0])}")
    return row is not None and row[0] == 0


def wipe_residue(conn: sqlite3.Connection) -> bool:
    """:func:`checkpoint_truncate` on a sqlite3 connection."""
    return checkpoint_truncate(lambda sql: conn.execute(sql).fetchone())


_TOKEN_START = re.compile(rb"gAAAAA[A-Za-z0-9_-]{42}")
_FINGERPRINT = 48
"""Characters of a Fernet token that identify it: version, time and most of its random IV."""


MIN_SCANNED_ID_BYTES = 8
"""A shorter session id occurs by chance in any file: it is not looked for."""


def scan_files(
    path: Path, session_id: str, tokens: Sequence[str], containing: Sequence[str] = ()
) -> tuple[int | None, int]:
    """(session id hits, token hits) in the bytes of a SQLite file and its WAL.

    A byte scan: what any reader of the files could find. Occurrences of the session id
    inside other live session ids (``containing``) are not counted against it, and an id
    under :data:`MIN_SCANNED_ID_BYTES` is not looked for (None); a token cut in two by a
    page boundary is not found.
    """
    data = b"".join(
        part.read_bytes()
        for part in (path, Path(f"{path}-wal"), Path(f"{path}-journal"))
        if part.exists()
    )
    needle = session_id.encode("utf-8")
    hits: int | None = None
    if len(needle) >= MIN_SCANNED_ID_BYTES:
        hits = data.count(needle)
        for other in containing:
            if other != session_id:
                hits -= data.count(other.encode("utf-8")) * other.count(session_id)
        hits = max(hits, 0)
    wanted = {token[:_FINGERPRINT].encode("ascii") for token in tokens}
    found = sum(1 for match in _TOKEN_START.finditer(data) if match.group() in wanted)
    return hits, found


def _session_tables(conn: sqlite3.Connection) -> list[str]:
    """Tables with a session_id column, the ones an erase must reach."""
    names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [
        name
        for name in names
        if conn.execute(
            "SELECT 1 FROM pragma_table_info(?) WHERE name = 'session_id'", (name,)
        ).fetchone()
    ]


def delete_session_rows(
    conn: sqlite3.Connection, session_id: str, sessions_table: str, candidates: list[str]
) -> dict[str, int]:
    """Delete the session's rows from the ``candidates`` that exist and have a session_id
    column (inside the caller's transaction); the rows removed per table, counted first
    (ON DELETE CASCADE hides rows from rowcounts)."""
    tables = [table for table in _session_tables(conn) if table in candidates]
    removed = {
        table: int(
            conn.execute(
                f"SELECT COUNT(*) FROM {quote_identifier(table)} WHERE session_id = ?",
                (session_id,),
            ).fetchone()[0]
        )
        for table in tables
    }
    # Children first, so foreign keys never see a dangling parent.
    for table in sorted(tables, key=lambda t: t == sessions_table):
        conn.execute(f"DELETE FROM {quote_identifier(table)} WHERE session_id = ?", (session_id,))
    return {table: count for table, count in removed.items() if count}
