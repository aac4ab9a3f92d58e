"""SQLiteSession: the embedded default, on aiosqlite, with the Agents SDK's schema.

A database written by ``agents.SQLiteSession`` opens and reads unchanged, and the other way
round. Unlike the SDK's class it validates table names and items, enforces foreign keys,
refuses negative limits, wipes deleted content (``secure_delete``) and can be closed with
``await session.close()`` or ``async with``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from encmem.errors import SessionClosedError
from encmem.items import Item, check_session_id, decode_stored, encode_item, encode_items
from encmem.protocol import StoredItem
from encmem.settings import SessionSettings, make_settings, resolve_limit

from . import _sqlite_connection as connections
from ._identifiers import check_table_name
from ._rows import decode_rows, plain_item, plain_items

logger = logging.getLogger("encmem.backends.sqlite")


class _Closing:
    """What ``close()`` returns: the session is closed at once; awaiting waits for the thread."""

    def __init__(self, future: Awaitable[Any] | None) -> None:
        self._future = future

    def __await__(self) -> Generator[Any, None, None]:
        if self._future is not None:
            yield from self._future.__await__()


class SQLiteSession:
    """Conversation history in a SQLite file (or in memory), one row per item."""

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
        ]

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables (idempotent). Subclasses extend the statement list."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in self._schema_statements():
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _connection(self) -> connections.SharedConnection:
        if self._closed:
            raise SessionClosedError(
                f"{type(self).__name__} {self.session_id!r} is closed; create a new session"
            )
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

    async def _read(self, job: Any) -> Any:
        return await (await self._connection()).run(job)

    async def _write(self, job: Any) -> Any:
        """Run ``job`` inside one IMMEDIATE transaction on the connection thread."""

        def transaction(conn: sqlite3.Connection) -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = job(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await (await self._connection()).run(transaction)

    def close(self) -> _Closing:
        """Close the session (at once); ``await`` it to wait until the connection is shut."""
        self._closed = True
        shared, self._shared = self._shared, None
        return _Closing(connections.release(shared) if shared is not None else None)

    async def __aenter__(self) -> SQLiteSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- rows -----------------------------------------------------------------------------

    def _decode_rows(self, rows: list[tuple[int, str]]) -> list[StoredItem]:
        return decode_rows(rows)

    def _select_tail(
        self, conn: sqlite3.Connection, limit: int | None, before_id: int | None
    ) -> list[StoredItem]:
        m = self.messages_table
        where = "session_id = ?" + (" AND id < ?" if before_id is not None else "")
        params: list[Any] = [self.session_id]
        if before_id is not None:
            params.append(before_id)
        if limit is None:
            rows = conn.execute(
                f"SELECT id, message_data FROM {m} WHERE {where} ORDER BY id DESC", params
            ).fetchall()
            return self._decode_rows(rows)
        result: list[StoredItem] = []
        while len(result) < limit:
            want = limit - len(result)
            rows = conn.execute(
                f"SELECT id, message_data FROM {m} WHERE {where} ORDER BY id DESC LIMIT ?",
                [*params, want],
            ).fetchall()
            if not rows:
                break
            result = self._decode_rows(rows) + result
            if len(rows) < want:
                break
            where = "session_id = ? AND id < ?"
            params = [self.session_id, rows[-1][0]]
        return result

    def _insert(self, conn: sqlite3.Connection, texts: Sequence[str]) -> list[int]:
        """Insert encoded items after upserting the session row; return their ids in order."""
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
        last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
        # One executemany under one IMMEDIATE transaction writes consecutive rowids.
        return list(range(last - len(texts) + 1, last + 1))

    # -- the Session protocol -------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The session's items, oldest first; with ``limit``, the newest ``limit`` of them."""
        return plain_items(self.session_id, await self.get_stored_items(limit))

    async def add_items(self, items: list[Any]) -> None:
        """Append items in one transaction; nothing is written if any item is invalid."""
        texts = encode_items(items)
        if self._closed:
            raise SessionClosedError(f"{type(self).__name__} {self.session_id!r} is closed")
        if not texts:
            return
        await self._write(lambda conn: self._insert(conn, texts))

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item; None when the session is empty."""
        m = self.messages_table

        def pop(conn: sqlite3.Connection) -> Item | None:
            row = conn.execute(
                f"DELETE FROM {m} WHERE id = (SELECT id FROM {m} WHERE session_id = ? "
                "ORDER BY id DESC LIMIT 1) RETURNING id, message_data",
                (self.session_id,),
            ).fetchone()
            if row is None:
                return None
            # A row holding no item raises here, which rolls the delete back.
            return plain_item(self.session_id, row[0], decode_stored(row[1]))

        result: Item | None = await self._write(pop)
        return result

    async def clear_session(self) -> None:
        """Delete every item and the session row; deleted content is overwritten on disk."""

        def clear(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"DELETE FROM {self.messages_table} WHERE session_id = ?", (self.session_id,)
            )
            conn.execute(
                f"DELETE FROM {self.sessions_table} WHERE session_id = ?", (self.session_id,)
            )

        shared = await self._connection()
        await self._write(clear)
        if shared.is_file:
            await shared.run(
                lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            )

    # -- item addressing ------------------------------------------------------------------

    async def get_stored_items(
        self, limit: int | None = None, *, before_id: int | None = None
    ) -> list[StoredItem]:
        """The newest ``limit`` items older than ``before_id``, oldest first, with their ids."""
        effective = resolve_limit(limit, self.session_settings)
        if effective == 0:
            return []
        result: list[StoredItem] = await self._read(
            lambda conn: self._select_tail(conn, effective, before_id)
        )
        return result

    async def delete_stored_items(self, ids: Sequence[int]) -> int:
        """Delete items of this session by id; return how many rows went."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return 0

        def delete(conn: sqlite3.Connection) -> int:
            cursor = conn.executemany(
                f"DELETE FROM {self.messages_table} WHERE id = ? AND session_id = ?",
                [(i, self.session_id) for i in wanted],
            )
            return int(cursor.rowcount)

        deleted: int = await self._write(delete)
        return deleted

    async def replace_stored_items(self, replacements: Mapping[int, Item]) -> int:
        """Overwrite items in place by id (same id, same position); return the count."""
        rows = [
            (encode_item(item, index), int(item_id), self.session_id)
            for index, (item_id, item) in enumerate(replacements.items())
        ]
        if not rows:
            return 0

        def replace(conn: sqlite3.Connection) -> int:
            cursor = conn.executemany(
                f"UPDATE {self.messages_table} SET message_data = ? "
                "WHERE id = ? AND session_id = ?",
                rows,
            )
            return int(cursor.rowcount)

        replaced: int = await self._write(replace)
        return replaced
