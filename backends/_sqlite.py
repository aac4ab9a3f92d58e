"""SQLiteSession: the embedded default, on the standard library's sqlite3, with the SDK's schema.

A database written by ``agents.SQLiteSession`` opens and reads unchanged, and the other way
round. Unlike the SDK's class it validates table names and items, enforces foreign keys,
refuses negative limits, wipes deleted content (``secure_delete``) and can be closed with
``await session.close()`` or ``async with``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from encmem._items import (
    CorruptRow,
    Item,
    check_session_id,
    decode_stored,
    encode_item,
    encode_items,
)
from encmem._protocol import StoredItem
from encmem._settings import SessionSettings, make_settings, resolve_limit
from encmem.errors import SessionClosedError

from . import _heads as heads
from . import _seed_table as seed_table
from . import _sqlite_connection as connections
from ._identifiers import check_table_name
from ._residue import wipe_residue
from ._rows import Decode, KnownItems, decode_rows, plain_item, text_rows
from ._sqlite_heads import HeadsOnSQLite
from ._sqlite_key_store import SeedsOnSQLite

T = TypeVar("T")
_logger = logging.getLogger("encmem.backends.sqlite")
MAIN = "main"
"""The one branch of a session without branches, under which its head is kept."""
NO_BOUND = 2**63 - 1
"""Larger than any SQLite rowid: "no upper bound" for paged reads by id."""


class _Closing:
    """What ``close()`` returns: the session is closed at once; awaiting waits for the thread."""

    def __init__(self, future: Awaitable[Any] | None) -> None:
        self._future = future

    def __await__(self) -> Generator[Any, None, None]:
        if self._future is not None:
            yield from self._future.__await__()


class SQLiteSession(HeadsOnSQLite, SeedsOnSQLite):
    """Conversation history in a SQLite file (or in memory), one row per item.

    It is also the key store of its sessions' seeds (table ``encmem_seeds`` in the same file)
    unless EncryptedSession is given another one.
    """

    def __init__(
        self,
        session_id: str,
        db_path: str | Path = ":memory:",
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        check_session_id(session_id)
        self.session_id = session_id
        self.db_path = db_path
        self.sessions_table = check_table_name(sessions_table, "sessions_table")
        self.messages_table = check_table_name(messages_table, "messages_table")
        self.session_settings: SessionSettings | None = make_settings(session_settings)
        self._shared: connections.SharedConnection | None = None
        self._closed = False
        self._known_items = KnownItems()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(session_id={self.session_id!r}, db_path={str(self.db_path)!r})"
        )

    # -- connection and schema ------------------------------------------------------------

    def _schema_statements(self) -> list[str]:
        s, m = self.sessions_table, self.messages_table
        return [
            f"""CREATE TABLE IF NOT EXISTS {s} (
                session_id TEXT PRIMARY KEY,
                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
            )""",
            f"""CREATE TABLE IF NOT EXISTS {m} (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id TEXT NOT NULL,
                message_data TEXT NOT NULL,
                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                FOREIGN KEY (session_id) REFERENCES {s} (session_id) ON DELETE CASCADE
            )""",
            f"CREATE INDEX IF NOT EXISTS idx_{m}_session_id ON {m} (session_id, id)",
            heads.statement(s, m),
            seed_table.statement(f"{m}_seeds"),
        ]

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables (idempotent). Subclasses extend the statement list."""

        def create(conn: sqlite3.Connection) -> None:
            for statement in self._schema_statements():
                conn.execute(statement)

        connections.immediate(conn, create)

    async def _seed_connection(self) -> connections.SharedConnection:
        return await self._connection()

    def _seeds_table(self) -> str:
        return f"{self.messages_table}_seeds"

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(
                f"{type(self).__name__} {self.session_id!r} is closed; create a new session"
            )

    async def _connection(self) -> connections.SharedConnection:
        self._check_open()
        shared = self._shared
        if shared is None:
            shared = connections.acquire(self.db_path)
            self._shared = shared
        await shared.start()
        schema = (type(self).__name__, self.sessions_table, self.messages_table)
        if schema not in shared.schemas:
            await shared.run(self._create_schema)
            shared.schemas.add(schema)
        return shared

    def _read_through(self, shared: connections.SharedConnection) -> None:
        """Use ``shared`` (a store's read-only connection whose tables were checked) for
        every read, so the session never opens a writable connection or creates tables."""
        self._check_open()
        self._shared = connections.share(shared)
        shared.schemas.add((type(self).__name__, self.sessions_table, self.messages_table))

    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` on the connection thread as one unit."""
        return await (await self._connection()).run(job)

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` inside one IMMEDIATE transaction on the connection thread."""
        return await (await self._connection()).run(lambda conn: connections.immediate(conn, job))

    def close(self) -> _Closing:
        """Close the session (at once); ``await`` it to wait until the connection is shut."""
        self._closed = True
        shared, self._shared = self._shared, None
        return _Closing(connections.release(shared) if shared is not None else None)

    async def aclose(self) -> None:
        """Close the session and wait until its connection is shut."""
        await self.close()

    async def __aenter__(self) -> SQLiteSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- rows -----------------------------------------------------------------------------

    def _select_tail(
        self,
        conn: sqlite3.Connection,
        limit: int | None,
        before_id: int | None,
        decode: Decode = decode_rows,
    ) -> list[Any]:
        """The newest ``limit`` rows (all when None) older than ``before_id``, in one query."""
        bound = before_id if before_id is not None else NO_BOUND
        rows = conn.execute(
            f"SELECT id, CAST(message_data AS BLOB) FROM {self.messages_table} "
            "WHERE session_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (self.session_id, bound, -1 if limit is None else limit),
        ).fetchall()
        return decode(rows)

    def _insert(
        self, conn: sqlite3.Connection, texts: Sequence[str], with_ids: bool = True
    ) -> list[int]:
        """Insert encoded items after upserting the session row; return their ids in order
        (without ``with_ids``, a batch's ids are not looked up and may be left out)."""
        conn.execute(
            f"INSERT INTO {self.sessions_table} (session_id) VALUES (?) "
            "ON CONFLICT(session_id) DO UPDATE SET updated_at = CURRENT_TIMESTAMP",
            (self.session_id,),
        )
        ids: list[int] = []
        statement = f"INSERT INTO {self.messages_table} (session_id, message_data) VALUES (?, ?)"
        if len(texts) == 1:
            cursor = conn.execute(statement, (self.session_id, texts[0]))
            ids.append(int(cursor.lastrowid or 0))
            return ids
        conn.executemany(statement, [(self.session_id, text) for text in texts])
        if not with_ids:
            return ids
        last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
        # One executemany under one IMMEDIATE transaction writes consecutive rowids.
        return list(range(last - len(texts) + 1, last + 1))

    # -- the Session protocol -------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The session's items, oldest first; with ``limit``, the newest ``limit`` of them."""
        effective = resolve_limit(limit, self.session_settings)
        if effective == 0:
            return []
        rows = await self._read(lambda conn: self._select_tail(conn, effective, None, text_rows))
        return self._known_items.items(self.session_id, rows)

    async def add_items(self, items: list[Any]) -> None:
        """Append items in one transaction; nothing is written if any item is invalid."""
        texts = encode_items(items)
        self._check_open()
        if not texts:
            return
        await self._write(lambda conn: self._insert(conn, texts, with_ids=False))

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item; None when the session is empty."""
        m = self.messages_table

        def pop(conn: sqlite3.Connection) -> Item | None:
            row = conn.execute(
                f"DELETE FROM {m} WHERE id = (SELECT id FROM {m} WHERE session_id = ? "
                "ORDER BY id DESC LIMIT 1) RETURNING id, CAST(message_data AS BLOB)",
                (self.session_id,),
            ).fetchone()
            if row is None:
                return None
            # A row holding no item raises here, which rolls the delete back.
            return plain_item(self.session_id, row[0], decode_stored(row[1]))

        return await self._write(pop)

    async def clear_session(self) -> None:
        """Delete every item and the session row; deleted content is overwritten on disk."""

        def clear(conn: sqlite3.Connection) -> None:
            heads.clear(conn, self.messages_table, self.session_id)
            conn.execute(
                f"DELETE FROM {self.messages_table} WHERE session_id = ?", (self.session_id,)
            )
            conn.execute(
                f"DELETE FROM {self.sessions_table} WHERE session_id = ?", (self.session_id,)
            )

        await self._write(clear)
        await self._wipe_residue()

    async def _wipe_residue(self) -> None:
        """Empty the WAL after a delete, so no old copy of the deleted pages stays in it.

        If another connection's read transaction prevents that, the copies stay until the
        next checkpoint and a warning says so (a store's ``erase_session`` raises instead).
        """
        shared = await self._connection()
        if shared.is_file and not await shared.run(wipe_residue):
            _logger.warning(
                "%s: the deleted rows are gone, but another connection holds a read "
                "transaction, so the WAL keeps copies of their old pages until the next "
                "checkpoint; use a store's erase_session() (encmem erase) to be told when "
                "nothing is left",
                type(self).__name__,
            )

    # -- item addressing ------------------------------------------------------------------

    async def get_stored_items(
        self, limit: int | None = None, *, before_id: int | None = None
    ) -> list[StoredItem]:
        """The newest ``limit`` items older than ``before_id``, oldest first, with their ids."""
        effective = resolve_limit(limit, self.session_settings)
        if effective == 0:
            return []
        return await self._read(lambda conn: self._select_tail(conn, effective, before_id))

    async def delete_stored_items(self, ids: Sequence[int]) -> int:
        """Delete items of this session by id; return how many rows went."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return 0

        return await self._write(lambda conn: self._delete_ids(conn, MAIN, wanted))

    def _delete_ids(self, conn: sqlite3.Connection, branch: str, ids: Sequence[int]) -> int:
        """Delete this session's rows with these ids; how many went."""
        cursor = conn.executemany(
            f"DELETE FROM {self.messages_table} WHERE id = ? AND session_id = ?",
            [(i, self.session_id) for i in ids],
        )
        return int(cursor.rowcount)

    async def replace_stored_items(self, replacements: Mapping[int, Item]) -> int:
        """Overwrite items in place by id (same id, same position); return the count."""
        rows = self._replacement_rows(replacements)
        if not rows:
            return 0
        replaced: int = await self._write(lambda conn: self._replace_rows(conn, rows))
        return replaced

    @staticmethod
    def _replacement_rows(replacements: Mapping[int, Item]) -> list[tuple[str, int]]:
        return [
            (encode_item(item, index), int(item_id))
            for index, (item_id, item) in enumerate(replacements.items())
        ]

    def _replace_rows(self, conn: sqlite3.Connection, rows: Sequence[tuple[str, int]]) -> int:
        """Overwrite this session's message text by id; how many rows changed."""
        cursor = conn.executemany(
            f"UPDATE {self.messages_table} SET message_data = ? WHERE id = ? AND session_id = ?",
            [(text, item_id, self.session_id) for text, item_id in rows],
        )
        return int(cursor.rowcount)

    # -- history heads (kept for EncryptedSession; opaque here) ----------------------------

    def _newest(self, conn: sqlite3.Connection, branch: str) -> Item | CorruptRow | None:
        """The newest stored item of ``branch`` (None when it has none)."""
        rows = self._select_tail(conn, 1, None)
        return rows[0].item if rows else None

    def _append(
        self, conn: sqlite3.Connection, branch: str, items: Sequence[Item], texts: Sequence[str]
    ) -> None:
        """Insert encoded items at the end of ``branch`` (subclasses add structure rows)."""
        self._insert(conn, texts, with_ids=False)

    def _head_branch(self, branch_id: str | None) -> str:
        if branch_id is not None and branch_id != MAIN:
            raise ValueError(f"{type(self).__name__} has one branch, 'main', not {branch_id!r}")
        return MAIN

    def _current_branch(self) -> str:
        return MAIN

    def _branch_tail(
        self, conn: sqlite3.Connection, branch: str, limit: int | None, decode: Decode = decode_rows
    ) -> list[Any]:
        return self._select_tail(conn, limit, None, decode)
