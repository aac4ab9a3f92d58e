"""The HistoryHead capability of encmem's SQLite sessions: items and their branch's head read
in one snapshot and written in one transaction (the head is opaque here).

A mixin of :class:`~encmem.backends.SQLiteSession`; the branch-aware parts (which rows are a
branch's tail, how items are appended and deleted) are the session's own methods.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from encmem._items import CorruptRow, Item
from encmem._protocol import (
    ChainBuild,
    HeadedItems,
    HeadedTexts,
    HeadUpdate,
    Presealed,
    SeedChanged,
)
from encmem._settings import SessionSettings, resolve_limit

from . import _heads as heads
from . import _sqlite_connection as connections
from ._rows import Decode, decode_rows, text_rows

T = TypeVar("T")


class HeadsOnSQLite:
    """History heads over the session's SQLite connection."""

    session_id: str
    messages_table: str
    session_settings: SessionSettings | None

    # What the session provides (SQLiteSession and AdvancedSQLiteSession differ in these).
    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    def _seeds_table(self) -> str:
        raise NotImplementedError

    def _current_branch(self) -> str:
        raise NotImplementedError

    def _head_branch(self, branch_id: str | None) -> str:
        raise NotImplementedError

    def _branch_tail(
        self, conn: sqlite3.Connection, branch: str, limit: int | None, decode: Decode = decode_rows
    ) -> list[Any]:
        raise NotImplementedError

    def _newest(self, conn: sqlite3.Connection, branch: str) -> Item | CorruptRow | None:
        raise NotImplementedError

    def _append(
        self, conn: sqlite3.Connection, branch: str, items: Sequence[Item], texts: Sequence[str]
    ) -> None:
        raise NotImplementedError

    def _delete_ids(self, conn: sqlite3.Connection, branch: str, ids: Sequence[int]) -> int:
        raise NotImplementedError

    def _replacement_rows(self, replacements: Mapping[int, Item]) -> list[tuple[str, int]]:
        raise NotImplementedError

    def _replace_rows(self, conn: sqlite3.Connection, rows: Sequence[tuple[str, int]]) -> int:
        raise NotImplementedError

    async def get_head_and_items(
        self, limit: int | None = None, *, branch_id: str | None = None
    ) -> HeadedItems:
        """The branch's stored head and newest ``limit`` items, in one read snapshot."""
        return HeadedItems(*await self._head_snapshot(limit, branch_id, decode_rows))

    async def get_head_and_texts(
        self, limit: int | None = None, *, branch_id: str | None = None
    ) -> HeadedTexts:
        """The branch's stored head and newest ``limit`` rows as text, in one read snapshot."""
        return HeadedTexts(*await self._head_snapshot(limit, branch_id, text_rows))

    async def _head_snapshot(
        self, limit: int | None, branch_id: str | None, decode: Decode
    ) -> tuple[str, str | None, list[Any], bool]:
        effective = resolve_limit(limit, self.session_settings)
        branch = self._head_branch(branch_id)

        def read(conn: sqlite3.Connection) -> tuple[str, str | None, list[Any], bool]:
            head = heads.select(conn, self.messages_table, self.session_id, branch)
            found = self._branch_tail(conn, branch, effective, decode) if effective != 0 else []
            others = head is None and heads.others(
                conn, self.messages_table, self.session_id, branch
            )
            return branch, head, found, others

        return await self._read(lambda conn: connections.snapshot(conn, read))

    async def append_chained(
        self,
        build: ChainBuild,
        *,
        seed: tuple[str, str] | None = None,
        presealed: Presealed | None = None,
    ) -> bool:
        """Append what ``build`` seals after reading the head under the writer lock (and,
        given a ``seed``, checking that the session's stored seed is still that one); or, in
        one statement less, ``presealed`` while the head is still the one it follows."""
        self._check_open()
        branch = self._current_branch()
        held = None if seed is None else (self._seeds_table(), *seed)

        def append(conn: sqlite3.Connection) -> bool:
            if (
                presealed is not None
                and presealed.branch == branch
                and heads.swap(
                    conn,
                    self.messages_table,
                    self.session_id,
                    branch,
                    presealed.after,
                    presealed.head,
                    held,
                )
            ):
                if presealed.texts:
                    self._append(conn, branch, presealed.items, presealed.texts)
                return True
            if seed is None:
                head = heads.select(conn, self.messages_table, self.session_id, branch)
            else:
                stored_seed, head = heads.select_with_seed(
                    conn, self.messages_table, self._seeds_table(), self.session_id, branch
                )
                if stored_seed != seed:
                    raise SeedChanged
            items, texts, new_head = build(branch, head, lambda: self._newest(conn, branch))
            if texts:
                self._append(conn, branch, items, texts)
            heads.store(conn, self.messages_table, self.session_id, branch, new_head)
            return False

        return await self._write(append)

    async def delete_with_head(
        self, ids: Sequence[int], update: HeadUpdate, *, branch_id: str | None = None
    ) -> int:
        """Delete items by id and change the branch's head, in one transaction."""
        wanted = [int(i) for i in ids]
        branch = self._head_branch(branch_id) if branch_id is not None else self._current_branch()

        def delete(conn: sqlite3.Connection) -> int:
            heads.update(conn, self.messages_table, self.session_id, branch, update)
            return self._delete_ids(conn, branch, wanted)

        return await self._write(delete)

    async def update_heads(
        self, updates: Mapping[str, HeadUpdate], replacements: Mapping[int, Item] | None = None
    ) -> None:
        """Replace items in place and the heads of these branches, in one transaction."""
        rows = self._replacement_rows(replacements or {})
        for branch in updates:
            self._head_branch(branch)

        def change(conn: sqlite3.Connection) -> None:
            if rows:
                self._replace_rows(conn, rows)
            for branch, update in updates.items():
                heads.update(conn, self.messages_table, self.session_id, branch, update)

        await self._write(change)

    async def list_head_branches(self) -> list[str]:
        """Every branch of the session that has a stored head."""
        return await self._read(
            lambda conn: heads.branches(conn, self.messages_table, self.session_id)
        )
