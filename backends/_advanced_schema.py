"""The tables of AdvancedSQLiteSession: the seed's ``message_structure`` and ``turn_usage``, plus
``session_branches`` so that a branch exists (and is listed) even while it holds no message.

Indexes are chosen so that the hot paths never read the whole history:

- ``(session_id, branch_id, sequence_number)`` UNIQUE: ``get_items(limit)`` reads the newest
  ``limit`` rows of a branch by a backward range scan, ``pop_item`` finds the newest row in one
  seek, and ``add_items`` finds the branch's last sequence and turn numbers in one seek.
- ``(message_id, branch_id)`` UNIQUE: the foreign key's ``ON DELETE CASCADE``, the "is this
  message still used by another branch" check after a pop or delete, and ``before_id``
  pagination all seek by message id instead of scanning.
- ``(session_id, branch_id, user_turn_number)``: whether a turn still has rows (so its usage
  row can go with it) without scanning the branch.
"""

from __future__ import annotations

import sqlite3

STRUCTURE = "message_structure"
USAGE = "turn_usage"
BRANCHES = "session_branches"


def erasable_tables(sessions: str, messages: str, advanced: bool) -> list[str]:
    """The tables of one table set that hold a session's rows (what an erase reaches; an
    application's own tables with a session_id column are left alone)."""
    own = [sessions, messages, f"{messages}_heads", f"{messages}_seeds"]
    return own + ([STRUCTURE, USAGE, BRANCHES] if advanced else [])


def statements(sessions: str, messages: str) -> list[str]:
    """CREATE statements (idempotent) for the advanced tables and their indexes."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {STRUCTURE} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL,
            message_id INTEGER NOT NULL,
            branch_id TEXT NOT NULL DEFAULT 'main',
            message_type TEXT NOT NULL,
            sequence_number INTEGER NOT NULL,
            user_turn_number INTEGER,
            branch_turn_number INTEGER,
            tool_name TEXT,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            FOREIGN KEY (session_id) REFERENCES {sessions}(session_id) ON DELETE CASCADE,
            FOREIGN KEY (message_id) REFERENCES {messages}(id) ON DELETE CASCADE
        )""",
        f"""CREATE TABLE IF NOT EXISTS {USAGE} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL,
            branch_id TEXT NOT NULL DEFAULT 'main',
            user_turn_number INTEGER NOT NULL,
            requests INTEGER DEFAULT 0,
            input_tokens INTEGER DEFAULT 0,
            output_tokens INTEGER DEFAULT 0,
            total_tokens INTEGER DEFAULT 0,
            input_tokens_details JSON,
            output_tokens_details JSON,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            FOREIGN KEY (session_id) REFERENCES {sessions}(session_id) ON DELETE CASCADE,
            UNIQUE(session_id, branch_id, user_turn_number)
        )""",
        f"""CREATE TABLE IF NOT EXISTS {BRANCHES} (
            session_id TEXT NOT NULL,
            branch_id TEXT NOT NULL,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            deleted_at TIMESTAMP,
            PRIMARY KEY (session_id, branch_id),
            FOREIGN KEY (session_id) REFERENCES {sessions}(session_id) ON DELETE CASCADE
        )""",
        f"""CREATE UNIQUE INDEX IF NOT EXISTS encmem_{STRUCTURE}_branch_seq
            ON {STRUCTURE} (session_id, branch_id, sequence_number)""",
        f"""CREATE UNIQUE INDEX IF NOT EXISTS encmem_{STRUCTURE}_message
            ON {STRUCTURE} (message_id, branch_id)""",
        f"""CREATE INDEX IF NOT EXISTS encmem_{STRUCTURE}_turn
            ON {STRUCTURE} (session_id, branch_id, user_turn_number)""",
    ]


def table_exists(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (name,)
    ).fetchone()
    return row is not None


def missing_tables(conn: sqlite3.Connection, sessions: str, messages: str) -> list[str]:
    """The tables ``create_tables=False`` requires that the database lacks."""
    return [t for t in (sessions, messages, STRUCTURE, USAGE) if not table_exists(conn, t)]


def backfill_branches(conn: sqlite3.Connection, sessions: str) -> None:
    """Register the branches of a database written by the Agents SDK (it has no branch table)."""
    conn.execute(
        f"""INSERT OR IGNORE INTO {BRANCHES} (session_id, branch_id, created_at)
            SELECT session_id, branch_id, MIN(created_at) FROM {STRUCTURE}
            WHERE session_id IN (SELECT session_id FROM {sessions})
            GROUP BY session_id, branch_id"""
    )
