"""The SQL of the heads table on SQLAlchemy: one opaque head per session and branch.

Statements are built once per session and run inside the caller's transaction, so a head
always changes together with the items it covers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from sqlalchemy import String, Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from encmem._items import Item
from encmem._protocol import (
    ChainBuild,
    HeadedItems,
    HeadedTexts,
    HeadUpdate,
    Presealed,
    SeedChanged,
)
from encmem._settings import SessionSettings, resolve_limit

from ._rows import Decode, decode_rows, text_rows

T = TypeVar("T")


def _upsert(table: Table, dialect: Dialect, values: dict[str, Any]) -> Executable | None:
    """INSERT ... ON CONFLICT DO UPDATE of a head, where the dialect has it."""
    keys = [table.c.session_id, table.c.branch_id]
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table).values(**values)
        return pg.on_conflict_do_update(index_elements=keys, set_={"head": pg.excluded.head})
    if dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table).values(**values)
        return lite.on_conflict_do_update(index_elements=keys, set_={"head": lite.excluded.head})
    return None


class HeadStatements:
    """Read, set and remove the heads of one session's branches."""

    def __init__(self, heads: Table, dialect: Dialect, session_id: str) -> None:
        h = heads
        branch = bindparam("branch", type_=String())
        mine = h.c.session_id == session_id
        self._table = h
        self._dialect = dialect
        self._session_id = session_id
        self._select = select(h.c.head).where(mine, h.c.branch_id == branch)
        self._branches = select(h.c.branch_id).where(mine).order_by(h.c.branch_id)
        self._delete = delete(h).where(mine, h.c.branch_id == branch)
        self._clear = delete(h).where(mine)
        self._update = update(h).where(mine, h.c.branch_id == branch)
        self._others = select(h.c.branch_id).where(mine, h.c.branch_id != branch).limit(1)

    async def read(self, conn: AsyncConnection, branch: str) -> str | None:
        found = (await conn.execute(self._select, {"branch": branch})).scalar()
        return None if found is None else str(found)

    async def store(self, conn: AsyncConnection, branch: str, head: str | None) -> None:
        """Set (None: remove) a branch's head."""
        if head is None:
            await conn.execute(self._delete, {"branch": branch})
            return
        values = {"session_id": self._session_id, "branch_id": branch, "head": head}
        upsert = _upsert(self._table, self._dialect, values)
        if upsert is not None:
            await conn.execute(upsert)
            return
        changed = await conn.execute(self._update.values(head=head), {"branch": branch})
        if not changed.rowcount:
            await conn.execute(insert(self._table).values(**values))

    async def change(self, conn: AsyncConnection, branch: str, update: HeadUpdate) -> None:
        """Replace a branch's head by what ``update`` makes of it."""
        old = await self.read(conn, branch)
        new = update(old)
        if new != old:
            await self.store(conn, branch, new)

    async def others(self, conn: AsyncConnection, branch: str) -> bool:
        """Whether another branch of the session has a head."""
        return (await conn.execute(self._others, {"branch": branch})).first() is not None

    async def branches(self, conn: AsyncConnection) -> list[str]:
        return [str(row[0]) for row in (await conn.execute(self._branches)).all()]

    async def clear(self, conn: AsyncConnection) -> None:
        await conn.execute(self._clear)


class HeadsOnSQLAlchemy:
    """The HistoryHead capability of the SQLAlchemy sessions (a mixin): items and their
    branch's head read as of one moment and written in one transaction."""

    session_id: str
    session_settings: SessionSettings | None

    # What the session provides (SQLAlchemySession and AdvancedSQLAlchemySession differ).
    def _check_open(self) -> None:
        raise NotImplementedError

    def _head_statements(self) -> HeadStatements:
        raise NotImplementedError

    async def _has_heads(self) -> bool:
        raise NotImplementedError

    async def _require_heads(self) -> None:
        raise NotImplementedError

    def _transaction(self, *, write: bool) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError

    def _encode(self, items: Sequence[object], *, built: list[str] | None = None) -> list[str]:
        raise NotImplementedError

    def _current_branch(self) -> str:
        raise NotImplementedError

    def _seeds(self) -> Table:
        raise NotImplementedError

    async def _hold_seed(self, conn: AsyncConnection, seed: tuple[str, str]) -> None:
        """SeedChanged unless ``seed`` (id, sealed form) is the session's stored seed; on
        PostgreSQL its row stays locked (FOR SHARE) until the append commits, so an erase
        waits for the append."""
        t = self._seeds()
        query = select(t.c.seed_id, t.c.sealed).where(t.c.session_id == self.session_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        row = (await conn.execute(query)).first()
        if row is None or (row[0], row[1]) != seed:
            raise SeedChanged

    def _head_branch(self, branch_id: str | None) -> str:
        raise NotImplementedError

    async def _branch_rows(
        self, conn: AsyncConnection, branch: str, limit: int | None, decode: Decode = decode_rows
    ) -> list[Any]:
        raise NotImplementedError

    async def _append_rows(
        self, conn: AsyncConnection, branch: str, items: Sequence[Item], texts: list[str]
    ) -> None:
        raise NotImplementedError

    async def _delete_rows(self, conn: AsyncConnection, branch: str, ids: Sequence[int]) -> int:
        raise NotImplementedError

    async def _replace_pairs(self, conn: AsyncConnection, pairs: list[tuple[int, str]]) -> None:
        raise NotImplementedError

    async def _head_write(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def get_head_and_items(
        self, limit: int | None = None, *, branch_id: str | None = None
    ) -> HeadedItems:
        """The branch's stored head and newest ``limit`` items, as of one moment: the head
        is read before and after the items, and the read is repeated if it moved."""
        return HeadedItems(*await self._head_snapshot(limit, branch_id, decode_rows))

    async def get_head_and_texts(
        self, limit: int | None = None, *, branch_id: str | None = None
    ) -> HeadedTexts:
        """:meth:`get_head_and_items` with the rows left as their stored JSON text."""
        return HeadedTexts(*await self._head_snapshot(limit, branch_id, text_rows))

    async def _head_snapshot(
        self, limit: int | None, branch_id: str | None, decode: Decode
    ) -> tuple[str, str | None, list[Any], bool]:
        effective = resolve_limit(limit, self.session_settings)
        branch = self._head_branch(branch_id)
        await self._require_heads()
        heads = self._head_statements()
        async with self._transaction(write=False) as conn:
            while True:
                head = await heads.read(conn, branch)
                rows = (
                    await self._branch_rows(conn, branch, effective, decode)
                    if effective != 0
                    else []
                )
                if await heads.read(conn, branch) == head:
                    others = head is None and await heads.others(conn, branch)
                    return branch, head, rows, others

    async def append_chained(
        self,
        build: ChainBuild,
        *,
        seed: tuple[str, str] | None = None,
        presealed: Presealed | None = None,
    ) -> bool:
        """Append what ``build`` seals after reading the head under the writer lock (and,
        given a ``seed``, checking that the session's stored seed is still that one). ``build``
        itself takes what was ``presealed`` when the head is still the one it follows."""
        self._check_open()
        await self._require_heads()
        branch, heads = self._current_branch(), self._head_statements()

        async def append(conn: AsyncConnection) -> None:
            if seed is not None:
                await self._hold_seed(conn, seed)
            head = await heads.read(conn, branch)
            # build asks for the newest item only when the branch has no head yet
            newest = await self._branch_rows(conn, branch, 1) if head is None else []
            items, texts, new_head = build(branch, head, lambda: newest[0].item if newest else None)
            texts = self._encode(items, built=texts)
            if texts:
                await self._append_rows(conn, branch, items, texts)
            await heads.store(conn, branch, new_head)

        await self._head_write(append)
        return False

    async def delete_with_head(
        self, ids: Sequence[int], update: HeadUpdate, *, branch_id: str | None = None
    ) -> int:
        """Delete items by id and change the branch's head, in one transaction."""
        wanted = [int(i) for i in ids]
        branch = self._current_branch() if branch_id is None else self._head_branch(branch_id)
        await self._require_heads()
        heads = self._head_statements()

        async def delete(conn: AsyncConnection) -> int:
            await heads.change(conn, branch, update)
            return await self._delete_rows(conn, branch, wanted) if wanted else 0

        return await self._head_write(delete)

    async def update_heads(
        self, updates: Mapping[str, HeadUpdate], replacements: Mapping[int, Item] | None = None
    ) -> None:
        """Replace items in place and the heads of these branches, in one transaction."""
        pairs = [
            (int(item_id), text)
            for item_id, text in zip(
                (replacements or {}).keys(),
                self._encode(list((replacements or {}).values())),
                strict=True,
            )
        ]
        branches = {self._head_branch(branch): update for branch, update in updates.items()}
        await self._require_heads()
        heads = self._head_statements()

        async def change(conn: AsyncConnection) -> None:
            if pairs:
                await self._replace_pairs(conn, pairs)
            for branch, change in branches.items():
                await heads.change(conn, branch, change)

        await self._head_write(change)

    async def list_head_branches(self) -> list[str]:
        """Every branch of the session that has a stored head."""
        if not await self._has_heads():
            return []
        async with self._transaction(write=False) as conn:
            return await self._head_statements().branches(conn)
