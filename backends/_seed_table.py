"""The seeds table on SQLite: one sealed seed per session, for crypto-shredding.

Backends store what :class:`encmem.EncryptedSession` hands them (a seed sealed under the
master key) and never see a seed in the clear. The table lives in the session store itself
(by default) or in a separate key store file (:class:`~encmem.backends.SQLiteKeyStore`).
"""

from __future__ import annotations

import sqlite3

from encmem._protocol import SeedDestruction, StoredSeed

from . import _sqlite_connection as connections
from ._residue import wipe_residue

SEEDS = "encmem_seeds"
"""The seeds table of a key store of its own; a session store's is ``<messages_table>_seeds``."""


def statement(table: str) -> str:
    """CREATE statement (idempotent) of a seeds table."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
        session_id TEXT PRIMARY KEY,
        seed_id TEXT NOT NULL,
        kid TEXT NOT NULL,
        sealed TEXT NOT NULL,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
    )"""


def get(conn: sqlite3.Connection, table: str, session_id: str) -> StoredSeed | None:
    try:
        row = conn.execute(
            f"SELECT seed_id, kid, sealed FROM {table} WHERE session_id = ?", (session_id,)
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # a store written before seeds, opened read-only
        raise
    return None if row is None else StoredSeed(str(row[0]), str(row[1]), str(row[2]))


def put(conn: sqlite3.Connection, table: str, session_id: str, seed: StoredSeed) -> StoredSeed:
    """Keep ``seed`` unless the session has one; the one kept (one IMMEDIATE transaction)."""

    def keep(conn: sqlite3.Connection) -> StoredSeed:
        conn.execute(
            f"INSERT OR IGNORE INTO {table} (session_id, seed_id, kid, sealed) VALUES (?, ?, ?, ?)",
            (session_id, *seed),
        )
        kept = get(conn, table, session_id)
        assert kept is not None
        return kept

    return connections.immediate(conn, keep)


def replace(conn: sqlite3.Connection, table: str, session_id: str, seed: StoredSeed) -> None:
    connections.immediate(
        conn,
        lambda conn: conn.execute(
            f"UPDATE {table} SET kid = ?, sealed = ? WHERE session_id = ? AND seed_id = ?",
            (seed.kid, seed.sealed, session_id, seed.seed_id),
        ),
    )


def destroy(
    conn: sqlite3.Connection, table: str, session_id: str, is_file: bool
) -> SeedDestruction:
    """Delete the seed (committed; secure_delete overwrites its page), then empty the WAL."""
    cursor = connections.immediate(
        conn, lambda conn: conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
    )
    existed = cursor.rowcount > 0
    pending = is_file and not wipe_residue(conn)
    return SeedDestruction(existed, pending)


def session_ids(conn: sqlite3.Connection, table: str) -> list[str]:
    try:
        rows = conn.execute(f"SELECT session_id FROM {table} ORDER BY session_id").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    return [str(row[0]) for row in rows]
