"""AdvancedSQLAlchemySession: branches, turns and token usage on any SQLAlchemy async engine.

The whole :class:`~encmem.backends.AdvancedSQLiteSession` API, return shapes and schema
(``message_structure``, ``turn_usage``, ``session_branches`` and their indexes) on top of
:class:`~encmem.backends.SQLAlchemySession`, for PostgreSQL (asyncpg) and SQLite (aiosqlite).
Like AdvancedSQLiteSession it classifies items by the fields an envelope carries in the clear,
so under :class:`encmem.EncryptedSession` every feature gives the answers it gives plain.

Writes are one transaction each (:meth:`AdvancedSQLAlchemySession._write`), taken after the
session's writer lock: the session-row upsert for ``add_items`` (as SQLAlchemySession does),
a row lock or SQLite's writer lock otherwise. PostgreSQL may still ask for a transaction to be
run again (a serialization failure under a stricter isolation level, a deadlock); that happens
inside, a few times, and never reaches the caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from encmem._items import Item
from encmem._protocol import ForkHead, StoredItem, TurnRow
from encmem._settings import SessionSettings, resolve_limit

from . import _advanced_sqlalchemy_analytics as analytics
from . import _sqlalchemy_schema as base_schema
from ._advanced_content import (
    ContentQueries,
    check_branch_id,
    check_branch_point,
    check_deletable,
    require_live,
)
from ._advanced_queries import MAIN
from ._advanced_schema import BRANCHES
from ._advanced_sqlalchemy_queries import AdvancedQueries
from ._advanced_sqlalchemy_schema import AdvancedTables, create_advanced_tables
from ._advanced_sqlalchemy_usage import UsageReports
from ._rows import Decode, decode_rows, plain_items
from ._sqlalchemy import SQLAlchemySession
from ._sqlalchemy_ddl import missing_tables_error
from ._sqlalchemy_schema import SessionTables
from ._sqlalchemy_statements import SessionStatements

__all__ = ["AdvancedSQLAlchemySession"]

_module_logger = logging.getLogger("encmem.backends.advanced_sqlalchemy")

T = TypeVar("T")

#: SQLSTATEs after which PostgreSQL expects the transaction to be run again
_RETRYABLE = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_ATTEMPTS = 10
#: marks the advanced tables as ready in the engine's shared state
_ADVANCED = "+advanced"


def _retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE


class AdvancedSQLAlchemySession(ContentQueries, SQLAlchemySession, UsageReports):
    """SQLAlchemy history with conversation branches, turn structure and per-turn token usage."""

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
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(
            session_id,
            engine=engine,
            create_tables=create_tables,
            sessions_table=sessions_table,
            messages_table=messages_table,
            session_settings=session_settings,
            ensure_ascii=ensure_ascii,
        )
        self._tables, self._sql, self._advanced = self._shared_tables()
        self._q = AdvancedQueries(self._advanced, session_id)
        self._logger = logger if logger is not None else _module_logger
        self._branch = MAIN

    def _shared_tables(self) -> tuple[SessionTables, SessionStatements, AdvancedTables]:
        """The engine's table and statement objects for these table names, made once."""
        key = ("advanced", self.sessions_table, self.messages_table)
        found = self._state.shared.get(key)
        if not isinstance(found, tuple):
            dialect = self._engine.dialect
            tables = SessionTables(self.sessions_table, self.messages_table, dialect)
            found = (tables, SessionStatements(tables, dialect), AdvancedTables(tables, dialect))
            self._state.shared[key] = found
        return found

    @property
    def current_branch_id(self) -> str:
        """The branch that reads, writes and pops use by default."""
        return self._branch

    @property
    def _current_branch_id(self) -> str:
        # The Agents SDK's name for it, kept for code written against the SDK.
        return self._branch

    def _target(self, branch_id: str | None) -> str:
        return self._branch if branch_id is None else check_branch_id(branch_id)

    # -- schema and transactions ----------------------------------------------------------

    async def _ensure_ready(self) -> None:
        """Create or check every table once per engine (under a lock, so once, not racing)."""
        self._check_open()
        key = (self.sessions_table, self.messages_table + _ADVANCED)
        state = self._state
        if key in state.ready:
            return
        async with state.lock("schema"):
            if key in state.ready:
                return
            if self._create_tables:
                await base_schema.create_tables(self._engine, self._tables)
                await create_advanced_tables(self._engine, self._advanced)
            else:
                await self._require_advanced_tables()
            state.ready.update((self._tables.names, key))

    async def _require_advanced_tables(self) -> None:
        """Refuse a database without the tables; add the branch table an SDK database lacks."""
        engine = self._engine
        missing = await base_schema.missing_tables(engine, self._advanced.required())
        if missing:
            raise missing_tables_error(self, missing)
        if await base_schema.missing_tables(engine, (BRANCHES,)):
            await create_advanced_tables(engine, self._advanced)

    async def _write(
        self, operation: Callable[[AsyncConnection], Awaitable[T]], *, upsert: bool = False
    ) -> T:
        """Run ``operation`` in one write transaction, after taking the session's writer lock.

        ``upsert`` takes the lock by creating or touching the session row (writes that add
        items); otherwise an existing row is locked. Retried when PostgreSQL asks for it.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._transaction(write=True) as conn:
                    if upsert:
                        await self._sql.touch_session(conn, self.session_id)
                    else:
                        await self._q.claim(conn)
                    return await operation(conn)
            except DBAPIError as exc:
                if attempt == _ATTEMPTS or not _retryable(exc):
                    raise
                self._logger.debug("transaction of %r run again (%s)", self.session_id, attempt)
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- what the history heads of SQLAlchemySession need to know about branches ----------

    def _current_branch(self) -> str:
        return self._branch

    def _head_branch(self, branch_id: str | None) -> str:
        return self._target(branch_id)

    async def _branch_rows(
        self, conn: AsyncConnection, branch: str, limit: int | None, decode: Decode = decode_rows
    ) -> list[Any]:
        return await self._q.select_tail(conn, branch, limit, None, decode)

    async def _append_rows(
        self, conn: AsyncConnection, branch: str, items: Sequence[Item], texts: list[str]
    ) -> None:
        await self._q.require_writable_branch(conn, branch)
        ids = await self._q.insert_messages(conn, texts)
        await self._q.insert_structure(conn, branch, ids, list(items))

    async def _delete_rows(self, conn: AsyncConnection, branch: str, ids: Sequence[int]) -> int:
        return await self._q.delete_items(conn, branch, list(ids))

    async def _head_write(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        return await self._write(operation, upsert=True)

    async def _read(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self._transaction(write=False) as conn:
            return await operation(conn)

    # -- the Session protocol -------------------------------------------------------------

    async def add_items(self, items: list[Item]) -> None:
        """Append items to the current branch: messages and structure rows in one transaction."""
        texts = self._encode(items)
        self._check_open()
        if not texts:
            return
        stored, branch, q = list(items), self._branch, self._q

        async def add(conn: AsyncConnection) -> None:
            await q.require_writable_branch(conn, branch)
            ids = await q.insert_messages(conn, texts)
            await q.insert_structure(conn, branch, ids, stored)

        await self._write(add, upsert=True)

    async def get_items(self, limit: int | None = None, branch_id: str | None = None) -> list[Item]:
        """Items of the current branch (or ``branch_id``), oldest first; the newest ``limit``."""
        return plain_items(self.session_id, await self.get_stored_items(limit, branch_id=branch_id))

    async def pop_item(self) -> Item | None:
        """Remove and return the newest item of the current branch (None when it is empty)."""
        branch, q = self._branch, self._q
        return await self._write(lambda conn: q.pop_newest(conn, branch))

    async def clear_session(self) -> None:
        """Delete every item, branch and usage row of the session; back on ``main``."""
        q, heads = self._q, self._heads if await self._has_heads() else None

        async def clear(conn: AsyncConnection) -> None:
            if heads is not None:
                await heads.clear(conn)
            await q.clear(conn)

        await self._write(clear)
        self._branch = MAIN

    # -- item addressing (current branch unless told) -------------------------------------

    async def get_stored_items(
        self,
        limit: int | None = None,
        *,
        before_id: int | None = None,
        branch_id: str | None = None,
    ) -> list[StoredItem]:
        """The newest ``limit`` items of the branch older than ``before_id``, oldest first."""
        effective = resolve_limit(limit, self.session_settings)
        if before_id is not None and (
            isinstance(before_id, bool) or not isinstance(before_id, int)
        ):
            raise TypeError(f"before_id must be an int or None, not {type(before_id).__name__}")
        branch, q = self._target(branch_id), self._q
        self._check_open()
        if effective == 0:
            return []
        return await self._read(lambda conn: q.select_tail(conn, branch, effective, before_id))

    async def delete_stored_items(self, ids: Sequence[int], *, branch_id: str | None = None) -> int:
        """Remove items from the current branch (or ``branch_id``); a message no branch uses
        any more goes too."""
        wanted = [int(i) for i in ids]
        branch, q = self._target(branch_id), self._q
        self._check_open()
        if not wanted:
            return 0
        return await self._write(lambda conn: q.delete_items(conn, branch, wanted))

    async def replace_stored_items(self, replacements: Mapping[int, Item]) -> int:
        """Overwrite items in place (every branch sharing them sees the new text)."""
        ids = [int(item_id) for item_id in replacements]
        pairs = list(zip(ids, self._encode(list(replacements.values())), strict=True))
        self._check_open()
        if not pairs:
            return 0
        return await self._write(lambda conn: self._sql.replace_ids(conn, self.session_id, pairs))

    async def get_user_turn_items(self, branch_id: str | None = None) -> list[TurnRow]:
        """Every user turn of the branch with its user item as stored, in turn order."""
        branch, q = self._target(branch_id), self._q
        return await self._read(lambda conn: analytics.user_turn_rows(conn, q, branch))


    # -- branches -------------------------------------------------------------------------

    async def create_branch_from_turn(
        self, turn_number: int, branch_name: str | None = None, *, fork: ForkHead | None = None
    ) -> str:
        """Branch before user turn ``turn_number`` of the current branch and switch to it.

        The new branch holds the turns before ``turn_number`` (none for turn 1: an empty
        branch, listed and switchable). Returns its id, ``branch_name`` or a generated one.
        ``fork`` (EncryptedSession's) makes the new branch's history head in the same
        transaction.
        """
        check_branch_point(turn_number, branch_name)
        source, q = self._branch, self._q
        if fork is not None:
            await self._require_heads()

        async def create(conn: AsyncConnection) -> str:
            branch = await q.create_branch(conn, source, turn_number, branch_name)
            if fork is not None:
                turns = await analytics.user_turn_rows(conn, q, source)
                left_out = next(row.item for row in turns if row.turn == turn_number)
                source_head = await self._heads.read(conn, source)
                await self._heads.store(conn, branch, fork(source, branch, source_head, left_out))
            return branch

        created = await self._write(create)
        self._branch = created
        self._logger.debug("created branch %r from turn %d of %r", created, turn_number, source)
        return created

    async def switch_to_branch(self, branch_id: str) -> None:
        """Make ``branch_id`` the current branch; ValueError if it does not exist."""
        check_branch_id(branch_id)
        q = self._q
        require_live(await self._read(lambda conn: q.branch_state(conn, branch_id)), branch_id)
        self._branch = branch_id

    async def delete_branch(self, branch_id: str, force: bool = False) -> None:
        """Delete a branch (never ``main``; the current one only with ``force``, then on main)."""
        current = check_deletable(branch_id, self._branch, force)
        q, heads = self._q, self._heads if await self._has_heads() else None

        async def delete(conn: AsyncConnection) -> tuple[int, int]:
            if heads is not None:
                await heads.store(conn, branch_id, None)
            return await q.delete_branch(conn, branch_id)

        rows, usage = await self._write(delete)
        if current:
            self._branch = MAIN
        self._logger.info(
            "deleted branch %r (%d structure rows, %d usage rows)", branch_id, rows, usage
        )

    async def list_branches(self) -> list[dict[str, Any]]:
        """Every live branch: id, message count, user turns, is_current, created_at."""
        current, q = self._branch, self._q
        return await self._read(lambda conn: q.list_branches(conn, current))
