"""Emptying a SQLite WAL after a delete, so that no old copy of the deleted pages stays."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

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
