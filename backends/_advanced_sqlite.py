"""AdvancedSQLiteSession: branches, turns and token usage on top of SQLiteSession.

A drop-in for the Agents SDK's ``AdvancedSQLiteSession`` (same constructor, methods, return
shapes and the seed's ``message_structure`` / ``turn_usage`` schema) that also works when
wrapped in :class:`encmem.EncryptedSession`: items are classified by their ``role`` / ``type``
/ tool-name fields, which envelopes carry in the clear, and the content-aware queries are the
shared ones of :mod:`encmem._turns` over :meth:`get_user_turn_items`.

Each operation is one job on the shared connection thread, one transaction for writes, so a
message and its structure rows are written (or removed) together.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from encmem._items import CorruptRow, Item, encode_items
from encmem._protocol import ForkHead, StoredItem, TurnRow
from encmem._settings import SessionSettings, resolve_limit
from encmem.errors import BranchError, MissingTablesError

from . import _advanced_analytics as analytics
from . import _advanced_queries as queries
from . import _advanced_schema as schema
from . import _heads as heads
from . import _sqlite_connection as connections
from ._advanced_content import (
    ContentQueries,
    check_branch_id,
    check_branch_point,
    check_deletable,
    require_live,
    run_usage,
)
from ._advanced_queries import MAIN, Scope
from ._rows import Decode, decode_rows, text_rows
from ._sqlite import SQLiteSession

__all__ = ["AdvancedSQLiteSession", "BranchError"]

_module_logger = logging.getLogger("encmem.backends.advanced_sqlite")


class AdvancedSQLiteSession(ContentQueries, SQLiteSession):
    """SQLite history with conversation branches, turn structure and per-turn token usage."""

    def __init__(
        self,
        *,
        session_id: str,
        db_path: str | Path = ":memory:",
        create_tables: bool = False,
        logger: logging.Logger | None = None,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
    ) -> None:
        super().__init__(
            session_id,
            db_path,
            sessions_table=sessions_table,
            messages_table=messages_table,
            session_settings=session_settings,
        )
        self._create_tables = bool(create_tables)
        self._logger = logger if logger is not None else _module_logger
        self._branch = MAIN

    @property
    def current_branch_id(self) -> str:
        """The branch that reads, writes and pops use by default."""
        return self._branch

    @property
    def _current_branch_id(self) -> str:
        # The Agents SDK's name for it, kept for code written against the SDK.
        return self._branch

    @property
    def _scope(self) -> Scope:
        return Scope(self.session_id, self.sessions_table, self.messages_table)

    def _target(self, branch_id: str | None) -> str:
        return self._branch if branch_id is None else check_branch_id(branch_id)

    # -- schema ---------------------------------------------------------------------------

    def _schema_statements(self) -> list[str]:
        return [
            *super()._schema_statements(),
            *schema.statements(self.sessions_table, self.messages_table),
        ]

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        if not self._create_tables:
            missing = schema.missing_tables(conn, self.sessions_table, self.messages_table)
            if missing:
                raise MissingTablesError(
                    f"the database {str(self.db_path)!r} has no {', '.join(missing)} table(s); "
                    "open it once with AdvancedSQLiteSession(..., create_tables=True) to create "
                    "them"
                )

        def create(conn: sqlite3.Connection) -> None:
            fresh = not schema.table_exists(conn, schema.BRANCHES)
            for statement in self._schema_statements():
                conn.execute(statement)
            if fresh:
                schema.backfill_branches(conn, self.sessions_table)

        connections.immediate(conn, create)

    # -- the Session protocol -------------------------------------------------------------

    async def add_items(self, items: list[Item]) -> None:
        """Append items to the current branch: messages and structure rows in one transaction."""
        texts = encode_items(items)
        self._check_open()
        if not texts:
            return
        stored, branch = list(items), self._branch
        await self._write(lambda conn: self._append(conn, branch, stored, texts))

    def _append(
        self, conn: sqlite3.Connection, branch: str, items: Sequence[Item], texts: Sequence[str]
    ) -> None:
        """Messages and their structure rows at the end of ``branch`` (caller's transaction)."""
        ids = self._insert(conn, texts)
        queries.require_writable_branch(conn, self._scope, branch)
        queries.insert_structure(conn, self._scope, branch, ids, items)

    async def get_items(self, limit: int | None = None, branch_id: str | None = None) -> list[Item]:
        """Items of the current branch (or ``branch_id``), oldest first; the newest ``limit``."""
        effective = resolve_limit(limit, self.session_settings)
        if effective == 0:
            return []
        scope, branch = self._scope, self._target(branch_id)
        rows = await self._read(
            lambda conn: queries.select_tail(conn, scope, branch, effective, decode=text_rows)
        )
        return self._known_items.items(self.session_id, rows)

    async def pop_item(self) -> Item | None:
        """Remove and return the newest item of the current branch (None when it is empty)."""
        scope, branch = self._scope, self._branch
        item: Item | None = await self._write(lambda conn: queries.pop_newest(conn, scope, branch))
        return item

    async def clear_session(self) -> None:
        """Delete every item, branch and usage row of the session; back on ``main``."""
        scope = self._scope
        await self._write(lambda conn: queries.clear(conn, scope))
        self._branch = MAIN
        await self._wipe_residue()

    # -- item addressing (current branch unless told) -------------------------------------

    def _current_branch(self) -> str:
        return self._branch

    def _head_branch(self, branch_id: str | None) -> str:
        return self._target(branch_id)

    def _branch_tail(
        self, conn: sqlite3.Connection, branch: str, limit: int | None, decode: Decode = decode_rows
    ) -> list[Any]:
        return queries.select_tail(conn, self._scope, branch, limit, decode=decode)

    def _newest(self, conn: sqlite3.Connection, branch: str) -> Item | CorruptRow | None:
        rows = queries.select_tail(conn, self._scope, branch, 1)
        return rows[0].item if rows else None

    def _delete_ids(self, conn: sqlite3.Connection, branch: str, ids: Sequence[int]) -> int:
        return queries.delete_items(conn, self._scope, branch, ids)

    def _replace_rows(self, conn: sqlite3.Connection, rows: Sequence[tuple[str, int]]) -> int:
        return queries.replace_items(conn, self._scope, rows)

    async def get_stored_items(
        self,
        limit: int | None = None,
        *,
        before_id: int | None = None,
        branch_id: str | None = None,
    ) -> list[StoredItem]:
        """The newest ``limit`` items of the branch older than ``before_id``, oldest first."""
        effective = resolve_limit(limit, self.session_settings)
        if effective == 0:
            return []
        scope, branch = self._scope, self._target(branch_id)
        before = None if before_id is None else int(before_id)
        found: list[StoredItem] = await self._read(
            lambda conn: queries.select_tail(conn, scope, branch, effective, before)
        )
        return found

    async def delete_stored_items(self, ids: Sequence[int], *, branch_id: str | None = None) -> int:
        """Remove items from the current branch (or ``branch_id``); a message no branch uses
        any more goes too."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return 0
        branch = self._target(branch_id)
        deleted: int = await self._write(lambda conn: self._delete_ids(conn, branch, wanted))
        return deleted

    async def replace_stored_items(self, replacements: Mapping[int, Item]) -> int:
        """Overwrite items in place (every branch sharing them sees the new text)."""
        rows = self._replacement_rows(replacements)
        if not rows:
            return 0
        replaced: int = await self._write(lambda conn: self._replace_rows(conn, rows))
        return replaced

    async def get_user_turn_items(self, branch_id: str | None = None) -> list[TurnRow]:
        """Every user turn of the branch with its user item as stored, in turn order."""
        scope, branch = self._scope, self._target(branch_id)
        rows: list[TurnRow] = await self._read(
            lambda conn: analytics.user_turn_rows(conn, scope, branch)
        )
        return rows


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
        scope, source = self._scope, self._branch

        def create(conn: sqlite3.Connection) -> str:
            branch = queries.create_branch(conn, scope, source, turn_number, branch_name)
            if fork is not None:
                messages = self.messages_table
                left_out = queries.turn_item(conn, scope, source, turn_number)
                source_head = heads.select(conn, messages, self.session_id, source)
                new_head = fork(source, branch, source_head, left_out)
                heads.store(conn, messages, self.session_id, branch, new_head)
            return branch

        created: str = await self._write(create)
        self._branch = created
        self._logger.debug("created branch %r from turn %d of %r", created, turn_number, source)
        return created

    async def switch_to_branch(self, branch_id: str) -> None:
        """Make ``branch_id`` the current branch; ValueError if it does not exist."""
        check_branch_id(branch_id)
        scope = self._scope
        state: str = await self._read(lambda conn: queries.branch_state(conn, scope, branch_id))
        require_live(state, branch_id)
        self._branch = branch_id

    async def delete_branch(self, branch_id: str, force: bool = False) -> None:
        """Delete a branch (never ``main``; the current one only with ``force``, then on main)."""
        current = check_deletable(branch_id, self._branch, force)
        scope = self._scope
        rows, usage = await self._write(lambda conn: queries.delete_branch(conn, scope, branch_id))
        if current:
            self._branch = MAIN
        self._logger.info(
            "deleted branch %r (%d structure rows, %d usage rows)", branch_id, rows, usage
        )

    async def list_branches(self) -> list[dict[str, Any]]:
        """Every live branch: id, message count, user turns, is_current, created_at."""
        scope, current = self._scope, self._branch
        found: list[dict[str, Any]] = await self._read(
            lambda conn: queries.list_branches(conn, scope, current)
        )
        return found

    # -- structure and usage --------------------------------------------------------------

    async def get_conversation_by_turns(
        self, branch_id: str | None = None
    ) -> dict[int, list[dict[str, str | None]]]:
        """``{turn: [{"type", "tool_name"}, ...]}`` for the branch, in order."""
        scope, branch = self._scope, self._target(branch_id)
        found: dict[int, list[dict[str, str | None]]] = await self._read(
            lambda conn: analytics.conversation_by_turns(conn, scope, branch)
        )
        return found

    async def get_tool_usage(self, branch_id: str | None = None) -> list[tuple[str, int, int]]:
        """``[(tool_name, count, turn), ...]`` for the branch, by turn."""
        scope, branch = self._scope, self._target(branch_id)
        found: list[tuple[str, int, int]] = await self._read(
            lambda conn: analytics.tool_usage(conn, scope, branch)
        )
        return found

    async def store_run_usage(self, result: Any) -> None:
        """Add a run's token usage to the current turn of the current branch.

        Reads ``result.context_wrapper.usage``. Calling it twice for one turn adds up; on an
        empty branch nothing is recorded. Failures raise (nothing is swallowed).
        """
        numbers = run_usage(result)
        if numbers is None:
            return
        scope, branch = self._scope, self._branch
        turn: int | None = await self._write(
            lambda conn: analytics.store_usage(conn, scope, branch, numbers)
        )
        if turn is None:
            self._logger.debug("no usage stored: branch %r has no items yet", branch)

    async def get_session_usage(self, branch_id: str | None = None) -> dict[str, int] | None:
        """Usage summed over every branch (or ``branch_id``); None when nothing was stored."""
        scope = self._scope
        branch = None if branch_id is None else check_branch_id(branch_id)
        found: dict[str, int] | None = await self._read(
            lambda conn: analytics.session_usage(conn, scope, branch)
        )
        return found

    async def get_turn_usage(
        self, user_turn_number: int | None = None, branch_id: str | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """One turn's usage as a dict ({} if none), or every turn's as a list."""
        scope, branch = self._scope, self._target(branch_id)
        found: list[dict[str, Any]] | dict[str, Any] = await self._read(
            lambda conn: analytics.turn_usage(conn, scope, branch, user_turn_number)
        )
        return found
