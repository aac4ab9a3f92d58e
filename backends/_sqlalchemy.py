"""SQLAlchemySession: conversation history on SQLAlchemy's async engine (PostgreSQL and friends).

Same constructor, ``from_url`` and schema as the Agents SDK's ``SQLAlchemySession``, so a
database written by the SDK opens here unchanged. On top of it: ``await session.close()``,
``aclose()`` and ``async with`` (sessions made by ``from_url`` for one URL share one engine,
disposed when the last of them closes; a caller's engine is left alone), order by insertion
id, safe concurrent first use, validated table names, limits and items, item addressing,
history heads, and an ``add_items`` that costs one transaction.

Isolation: the PostgreSQL default, READ COMMITTED, is assumed. Writers of one session serialise
on its ``agent_sessions`` row; on SQLite the database's own writer lock (plus an in-process lock
per engine, which saves busy-waiting) does the same.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from encmem._items import (
    Item,
    check_session_id,
    decode_stored,
    encode_items,
)
from encmem._protocol import StoredItem
from encmem._settings import SessionSettings, make_settings, resolve_limit
from encmem.errors import MissingTablesError, SessionClosedError

from ._identifiers import check_table_name
from ._rows import Decode, decode_rows, plain_item, plain_items
from ._sqlalchemy_ddl import missing_tables_error
from ._sqlalchemy_engine import (
    acquire_engine,
    check_async_engine,
    engine_state,
    release_engine,
    release_unused_engine,
)
from ._sqlalchemy_heads import HeadsOnSQLAlchemy, HeadStatements
from ._sqlalchemy_key_store import SeedsOnSQLAlchemy
from ._sqlalchemy_schema import SessionTables, create_tables, missing_tables
from ._sqlalchemy_statements import SessionStatements

_Session = TypeVar("_Session", bound="SQLAlchemySession")
T = TypeVar("T")
MAIN = "main"
"""The one branch of a session without branches, under which its head is kept."""


class SQLAlchemySession(HeadsOnSQLAlchemy, SeedsOnSQLAlchemy):
    """Conversation history in any database SQLAlchemy's async engine reaches, one row per item.

    It is also the key store of its sessions' seeds (table ``encmem_seeds`` in the same
    database) unless EncryptedSession is given another one.
    """

    def __init__(
        self,
        session_id: str,
        *,
        engine: AsyncEngine,
        create_tables: bool = False,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: SessionSettings | dict[str, Any] | None = None,
        ensure_ascii: bool = True,
    ) -> None:
        check_session_id(session_id)
        check_async_engine(engine)
        self.session_id = session_id
        self.sessions_table = check_table_name(sessions_table, "sessions_table")
        self.messages_table = check_table_name(messages_table, "messages_table")
        self.session_settings: SessionSettings | None = make_settings(session_settings)
        self._engine = engine
        self._create_tables = bool(create_tables)
        self._ensure_ascii = bool(ensure_ascii)
        self._owns_engine = False
        self._closed = False
        self._state = engine_state(engine)
        self._tables, self._sql = self._plain_tables()

    def _plain_tables(self) -> tuple[SessionTables, SessionStatements]:
        """The engine's table and statement objects for these table names, made once (a
        thousand sessions on one engine share them)."""
        key = ("plain", self.sessions_table, self.messages_table)
        found = self._state.shared.get(key)
        if not isinstance(found, tuple):
            dialect = self._engine.dialect
            tables = SessionTables(self.sessions_table, self.messages_table, dialect)
            found = (tables, SessionStatements(tables, dialect))
            self._state.shared[key] = found
        return found

    @classmethod
    def from_url(
        cls: type[_Session],
        session_id: str,
        *,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> _Session:
        """A session on the process's shared engine for ``url`` and ``engine_kwargs``.

        Sessions made this way for one URL and options share one pool (per event loop);
        it is disposed when the last of them closes.
        """
        engine = acquire_engine(url, engine_kwargs)
        try:
            session = cls(session_id, engine=engine, **kwargs)
        except BaseException:
            # No connection was opened for this session; give its share back.
            release_unused_engine(engine)
            raise
        session._owns_engine = True
        return session

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy async engine this session runs on."""
        return self._engine

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"{type(self).__name__}(session_id={self.session_id!r}, url={url!r})"

    # -- closing --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(
                f"{type(self).__name__} {self.session_id!r} is closed; create a new session"
            )

    async def close(self) -> None:
        """Close the session; the last ``from_url`` session of an engine disposes it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_engine:
            await release_engine(self._engine)

    async def aclose(self) -> None:
        """The same as ``close()``."""
        await self.close()

    async def __aenter__(self) -> SQLAlchemySession:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- schema and transactions ----------------------------------------------------------

    async def _ensure_ready(self) -> None:
        """Create or check the tables once per engine (under a lock, so once, not racing)."""
        self._check_open()
        names = self._tables.names
        state = self._state
        if names in state.ready:
            return
        async with state.lock("schema"):
            if names in state.ready:
                return
            if self._create_tables:
                await create_tables(self._engine, self._tables)
            else:
                await self._require_tables()
            state.ready.add(names)

    async def _require_tables(self) -> None:
        missing = await missing_tables(self._engine, self._tables.names)
        if missing:
            raise missing_tables_error(self, missing)

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction: committed on success (writes), rolled back otherwise."""
        await self._ensure_ready()
        async with self._state.transaction(self._engine, write=write) as conn:
            yield conn

    def _encode(self, items: Sequence[object], *, built: list[str] | None = None) -> list[str]:
        """Validate every item (unless encmem ``built`` them: envelopes, with these texts),
        then return the texts to store (the SDK's ASCII JSON if asked)."""
        texts = built if built is not None else encode_items(items)
        if not self._ensure_ascii:
            return texts
        # ASCII text is already what an escaping encoder writes (as sealed items nearly always are).
        return [
            text if text.isascii() else json.dumps(item, ensure_ascii=True, separators=(",", ":"))
            for text, item in zip(texts, items, strict=True)
        ]

    # -- the Session protocol -------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[Item]:
        """The session's items, oldest first; with ``limit``, the newest ``limit`` of them."""
        return plain_items(self.session_id, await self.get_stored_items(limit))

    async def add_items(self, items: list[Item]) -> None:
        """Append items in one transaction; nothing is written if any item is invalid."""
        texts = self._encode(items)
        self._check_open()
        if not texts:
            return
        async with self._transaction(write=True) as conn:
            # The upsert comes first: it takes the session row's lock, so concurrent writers
            # of one session commit their batches in id order.
            await self._sql.touch_session(conn, self.session_id)
            await self._sql.insert_items(conn, self.session_id, texts)

    async def pop_item(self) -> Item | None:
        """Remove and return the newest item; None when the session is empty."""
        async with self._transaction(write=True) as conn:
            await self._sql.claim_session(conn, self.session_id)
            row = await self._sql.pop_newest(conn, self.session_id)
            if row is None:
                return None
            # A row holding no item raises here, which rolls the delete back.
            return plain_item(self.session_id, row[0], decode_stored(row[1]))

    async def clear_session(self) -> None:
        """Delete every item of the session and its session row."""
        async with self._transaction(write=True) as conn:
            await self._sql.claim_session(conn, self.session_id)
            if await self._has_heads():
                await self._heads.clear(conn)
            await self._sql.clear(conn, self.session_id)

    # -- item addressing ------------------------------------------------------------------

    async def get_stored_items(
        self, limit: int | None = None, *, before_id: int | None = None
    ) -> list[StoredItem]:
        """The newest ``limit`` items older than ``before_id``, oldest first, with their ids."""
        effective = resolve_limit(limit, self.session_settings)
        if before_id is not None and (
            isinstance(before_id, bool) or not isinstance(before_id, int)
        ):
            raise TypeError(f"before_id must be an int or None, not {type(before_id).__name__}")
        self._check_open()
        if effective == 0:
            return []
        async with self._transaction(write=False) as conn:
            rows = await self._sql.newest_rows(conn, self.session_id, effective, before_id)
        return decode_rows(rows)

    async def delete_stored_items(self, ids: Sequence[int]) -> int:
        """Delete items of this session by id; return how many rows went."""
        wanted = sorted({int(i) for i in ids})
        self._check_open()
        if not wanted:
            return 0
        async with self._transaction(write=True) as conn:
            await self._sql.claim_session(conn, self.session_id)
            return await self._sql.delete_ids(conn, self.session_id, wanted)

    async def replace_stored_items(self, replacements: Mapping[int, Item]) -> int:
        """Overwrite items in place by id (same id, same position); return the count."""
        ids = [int(item_id) for item_id in replacements]
        pairs = list(zip(ids, self._encode(list(replacements.values())), strict=True))
        self._check_open()
        if not pairs:
            return 0
        async with self._transaction(write=True) as conn:
            await self._sql.claim_session(conn, self.session_id)
            return await self._sql.replace_ids(conn, self.session_id, pairs)

    # -- history heads (kept for EncryptedSession; opaque here) ----------------------------

    def _seed_engine(self) -> AsyncEngine:
        self._check_open()
        return self._engine

    def _seeds(self) -> Table:
        return self._tables.seeds

    async def _before_seeds(self) -> None:
        await self._ensure_ready()

    def _create_seeds(self, sync: Any, table: Table) -> None:
        if self._create_tables:
            table.create(sync, checkfirst=True)
        elif not sync.dialect.has_table(sync, table.name):
            raise MissingTablesError(
                f"EncryptedSession keeps each session's seed in table {table.name}, which the "
                f"database lacks; create it once with {type(self).__name__}(..., "
                "create_tables=True), or apply `encmem schema --url URL`",
                tables=[table.name],
            )

    @functools.cached_property
    def _heads(self) -> HeadStatements:
        return HeadStatements(self._tables.heads, self._engine.dialect, self.session_id)

    async def _has_heads(self) -> bool:
        """Whether the heads table exists (created with the others since encmem 0.3)."""
        key = (*self._tables.names, "heads")
        if key in self._state.ready:
            return True
        if await missing_tables(self._engine, (self._tables.heads.name,)):
            return False
        self._state.ready.add(key)
        return True

    async def _require_heads(self) -> None:
        await self._ensure_ready()
        if await self._has_heads():
            return
        if self._create_tables:
            await create_tables(self._engine, self._tables)
            return
        raise MissingTablesError(
            f"EncryptedSession keeps each session's history head in table "
            f"{self._tables.heads.name}, which the database lacks; create it once with "
            f"{type(self).__name__}(..., create_tables=True), or apply `encmem schema`",
            tables=[self._tables.heads.name],
        )

    def _current_branch(self) -> str:
        return MAIN

    def _head_branch(self, branch_id: str | None) -> str:
        if branch_id is not None and branch_id != MAIN:
            raise ValueError(f"{type(self).__name__} has one branch, 'main', not {branch_id!r}")
        return MAIN

    async def _branch_rows(
        self, conn: AsyncConnection, branch: str, limit: int | None, decode: Decode = decode_rows
    ) -> list[Any]:
        return decode(await self._sql.newest_rows(conn, self.session_id, limit, None))

    async def _append_rows(
        self, conn: AsyncConnection, branch: str, items: Sequence[Item], texts: list[str]
    ) -> None:
        await self._sql.insert_items(conn, self.session_id, texts)

    async def _delete_rows(self, conn: AsyncConnection, branch: str, ids: Sequence[int]) -> int:
        return await self._sql.delete_ids(conn, self.session_id, sorted(set(ids)))

    def _head_statements(self) -> HeadStatements:
        return self._heads

    async def _replace_pairs(self, conn: AsyncConnection, pairs: list[tuple[int, str]]) -> None:
        await self._sql.replace_ids(conn, self.session_id, pairs)

    async def _head_write(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """One write transaction under the session's writer lock (the session row)."""
        async with self._transaction(write=True) as conn:
            await self._sql.touch_session(conn, self.session_id)
            return await operation(conn)
