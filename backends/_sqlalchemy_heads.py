"""The SQL of the heads table on SQLAlchemy: one opaque head per session and branch.

Statements are built once per session and run inside the caller's transaction, so a head
always changes together with the items it covers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from encmem._protocol import HeadUpdate


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
