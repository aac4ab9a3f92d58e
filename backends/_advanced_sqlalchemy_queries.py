"""The branch and item SQL of AdvancedSQLAlchemySession, for one session, on any async engine.

Every method runs inside a transaction its caller opened (and, for writes, after the caller
took the session's writer lock), so a message and its structure rows are written or removed
together. As in :mod:`._advanced_queries`, reads of the newest items and pops seek the
``(session_id, branch_id, sequence_number)`` index; the "is this message still used" checks
seek ``(message_id, branch_id)``. Content is never logged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    String,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import ColumnElement

from encmem._items import CorruptRow, Item, decode_stored
from encmem.errors import BranchError

from . import _advanced_items as classify
from ._advanced_queries import MAIN
from ._advanced_schema import BRANCHES
from ._advanced_sqlalchemy_schema import AdvancedTables, utc_now
from ._rows import Decode, decode_rows, plain_item

T = TypeVar("T")
#: ids per IN (...): far below any driver's bind-parameter limit
CHUNK = 1000


def _chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def stamp(value: object) -> Any:
    """A stored timestamp as AdvancedSQLiteSession returns it: ``YYYY-MM-DD HH:MM:SS`` text."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return value


async def insert_or_ignore(conn: AsyncConnection, table: Table, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless its key is taken; whether it was inserted."""
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        statement: Any
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            statement = pg_insert(table).values(**row).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            statement = sqlite_insert(table).values(**row).on_conflict_do_nothing()
        inserted = await conn.execute(statement.returning(literal_column("1")))
        return inserted.first() is not None
    try:
        async with conn.begin_nested():
            await conn.execute(insert(table).values(**row))
    except IntegrityError:
        return False
    return True


class AdvancedQueries:
    """The branch and item statements of one session, each run in a caller's transaction."""

    def __init__(self, tables: AdvancedTables, session_id: str) -> None:
        self.t = tables
        self.sid = session_id
        s, m = tables.structure, tables.base.messages
        self._s, self._m = s, m
        self._mine = s.c.session_id == session_id
        self.joined = s.join(m, and_(m.c.id == s.c.message_id, m.c.session_id == s.c.session_id))

    def in_branch(self, branch: str) -> ColumnElement[bool]:
        return and_(self._mine, self._s.c.branch_id == branch)

    # -- the writer lock ----------------------------------------------------------------------

    async def claim(self, conn: AsyncConnection) -> None:
        """Serialise with the session's other writers before reading anything.

        PostgreSQL: lock the session row. SQLite: a write that changes nothing, which takes
        the database's writer lock (a read first could not be upgraded under a concurrent
        writer in another process).
        """
        sessions = self.t.base.sessions
        if conn.dialect.name == "sqlite":
            statement: Any = (
                update(sessions)
                .where(sessions.c.session_id == self.sid, literal(False))
                .values(session_id=sessions.c.session_id)
            )
        else:
            statement = (
                select(sessions.c.session_id)
                .where(sessions.c.session_id == self.sid)
                .with_for_update()
            )
        await conn.execute(statement)

    # -- branches ---------------------------------------------------------------------------

    async def branch_state(self, conn: AsyncConnection, branch: str) -> str:
        """``live``, ``deleted`` or ``missing``; ``main`` is live whenever the session exists."""
        b = self.t.branches
        query = select(b.c.deleted_at).where(b.c.session_id == self.sid, b.c.branch_id == branch)
        row = (await conn.execute(query)).first()
        if row is None:
            return "live" if branch == MAIN else "missing"
        return "live" if row[0] is None else "deleted"

    async def require_writable_branch(self, conn: AsyncConnection, branch: str) -> None:
        """Register ``main`` on first write; refuse to write into a branch that is gone."""
        if branch == MAIN:
            await insert_or_ignore(conn, self.t.branches, {"session_id": self.sid,
                                                           "branch_id": MAIN})
            return
        if await self.branch_state(conn, branch) != "live":
            raise BranchError(
                f"the current branch {branch!r} no longer exists (it was deleted, or the session "
                "was cleared); call switch_to_branch('main') or another listed branch"
            )

    async def reserve_branch(self, conn: AsyncConnection, name: str | None, turn: int) -> str:
        """Claim a branch id: ``name``, or a generated one that is still free."""
        branches = self.t.branches

        async def claim(candidate: str) -> bool:
            row = {"session_id": self.sid, "branch_id": candidate}
            return await insert_or_ignore(conn, branches, row)

        if name is not None:
            if name == MAIN or not await claim(name):
                raise BranchError(
                    f"branch name {name!r} is already used in this session (deleted branches "
                    "keep their names); choose another name or pass branch_name=None"
                )
            return name
        base = f"branch_from_turn_{turn}_{int(time.time())}"
        candidate, suffix = base, 1
        while not await claim(candidate):
            suffix += 1
            candidate = f"{base}_{suffix}"
        return candidate

    async def create_branch(
        self, conn: AsyncConnection, source: str, turn: int, name: str | None
    ) -> str:
        """A new branch sharing the messages of ``source`` before user turn ``turn``; its id."""
        s = self._s
        found = select(s.c.id).where(
            self.in_branch(source), s.c.branch_turn_number == turn, s.c.message_type == "user"
        )
        if (await conn.execute(found.limit(1))).first() is None:
            raise BranchError(
                f"turn {turn} is not a user turn of branch {source!r}; "
                "get_conversation_turns() lists the turns you can branch from"
            )
        target = await self.reserve_branch(conn, name, turn)
        copied = ("message_id", "message_type", "sequence_number", "user_turn_number",
                  "branch_turn_number", "tool_name", "created_at")  # fmt: skip
        rows = (
            select(s.c.session_id, literal(target, String), *(s.c[c] for c in copied))
            .where(self.in_branch(source), s.c.branch_turn_number < turn)
            .order_by(s.c.sequence_number)
        )
        await conn.execute(insert(s).from_select(["session_id", "branch_id", *copied], rows))
        return target

    async def delete_branch(self, conn: AsyncConnection, branch: str) -> tuple[int, int]:
        """Drop a branch's rows, usage and now-unused messages; keep its name reserved."""
        if await self.branch_state(conn, branch) != "live":
            raise BranchError(
                f"branch {branch!r} does not exist; list_branches() shows the branches"
            )
        u, b, s = self.t.usage, self.t.branches, self._s
        usage = await conn.execute(
            delete(u).where(u.c.session_id == self.sid, u.c.branch_id == branch)
        )
        ids = list((await conn.execute(select(s.c.message_id).where(self.in_branch(branch))))
                   .scalars())  # fmt: skip
        await conn.execute(delete(s).where(self.in_branch(branch)))
        await self.drop_unused_messages(conn, ids)
        await conn.execute(
            update(b)
            .where(b.c.session_id == self.sid, b.c.branch_id == branch)
            .values(deleted_at=utc_now(conn.dialect))
        )
        return len(ids), int(usage.rowcount)

    async def list_branches(self, conn: AsyncConnection, current: str) -> list[dict[str, Any]]:
        """Every live branch with its message and user-turn counts, in creation order."""
        s, b = self._s, self.t.branches
        of_branch = and_(s.c.session_id == b.c.session_id, s.c.branch_id == b.c.branch_id)
        messages = select(func.count()).where(of_branch).scalar_subquery()
        users = select(func.count()).where(of_branch, s.c.message_type == "user")
        order: list[Any] = (
            [literal_column(f"{BRANCHES}.rowid")]
            if conn.dialect.name == "sqlite"
            else [b.c.created_at, b.c.branch_id]
        )
        query = (
            select(b.c.branch_id, messages, users.scalar_subquery(), b.c.created_at)
            .where(b.c.session_id == self.sid, b.c.deleted_at.is_(None))
            .order_by(*order)
        )
        return [
            {
                "branch_id": branch,
                "message_count": int(count),
                "user_turns": int(user_turns),
                "is_current": branch == current,
                "created_at": stamp(created),
            }
            for branch, count, user_turns, created in await conn.execute(query)
        ]

    # -- items --------------------------------------------------------------------------------

    async def insert_messages(self, conn: AsyncConnection, texts: Sequence[str]) -> list[int]:
        """Insert stored texts in order (one batched statement); their new ids, in order."""
        m = self._m
        statement = insert(m).returning(m.c.id, sort_by_parameter_order=True)
        rows = [{"session_id": self.sid, "message_data": text} for text in texts]
        return [int(i) for i in (await conn.execute(statement, rows)).scalars()]

    async def insert_structure(
        self, conn: AsyncConnection, branch: str, ids: Sequence[int], stored: Sequence[Item]
    ) -> None:
        """Structure rows for freshly inserted messages, continuing the branch's numbering."""
        s = self._s
        last_row = await conn.execute(
            select(s.c.sequence_number, s.c.user_turn_number, s.c.branch_turn_number)
            .where(self.in_branch(branch))
            .order_by(s.c.sequence_number.desc())
            .limit(1)
        )
        last = last_row.first()
        sequence, turn, branch_turn = (int(v or 0) for v in (last or (0, 0, 0)))
        rows = []
        for message_id, item in zip(ids, stored, strict=True):
            kind = classify.classify(item)
            sequence += 1
            turn += kind.is_user
            branch_turn += kind.is_user
            rows.append({
                "session_id": self.sid, "message_id": message_id, "branch_id": branch,
                "message_type": kind.message_type, "sequence_number": sequence,
                "user_turn_number": turn, "branch_turn_number": branch_turn,
                "tool_name": kind.tool_name,
            })  # fmt: skip
        await conn.execute(insert(s), rows)

    async def _bound(self, conn: AsyncConnection, branch: str, before_id: int) -> int:
        """The sequence number below which ``before_id``'s older items lie."""
        s = self._s
        row = (
            await conn.execute(
                select(s.c.sequence_number).where(
                    s.c.message_id == before_id, s.c.branch_id == branch, self._mine
                )
            )
        ).first()
        if row is not None:
            return int(row[0])
        # The row went away between two pages (a concurrent pop): fall back on id order,
        # which follows position within a branch.
        older = select(func.max(s.c.sequence_number)).where(
            self.in_branch(branch), s.c.message_id < before_id
        )
        found = (await conn.execute(older)).scalar()
        return 0 if found is None else int(found) + 1

    async def select_tail(
        self,
        conn: AsyncConnection,
        branch: str,
        limit: int | None,
        before_id: int | None,
        decode: Decode = decode_rows,
    ) -> list[Any]:
        """The newest ``limit`` items of ``branch`` (all when None) older than ``before_id``."""
        s, m = self._s, self._m
        query = (
            select(s.c.message_id, m.c.message_data)
            .select_from(self.joined)
            .where(self.in_branch(branch))
            .order_by(s.c.sequence_number.desc())
        )
        if before_id is not None:
            query = query.where(s.c.sequence_number < await self._bound(conn, branch, before_id))
        if limit is not None:
            query = query.limit(limit)
        return decode((await conn.execute(query)).all())

    async def drop_unused_messages(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        """Delete the messages no branch refers to any more (one index seek each)."""
        s, m = self._s, self._m
        unused = ~exists().where(s.c.message_id == m.c.id)
        for chunk in _chunks(list(ids)):
            await conn.execute(
                delete(m).where(m.c.id.in_(chunk), m.c.session_id == self.sid, unused)
            )

    async def drop_empty_turn_usage(
        self, conn: AsyncConnection, branch: str, turns: Iterable[int | None]
    ) -> None:
        """Delete the usage rows of turns that have no message left on ``branch``."""
        wanted = sorted({t for t in turns if t is not None})
        if not wanted:
            return
        s, u = self._s, self.t.usage
        empty = ~exists().where(
            s.c.session_id == u.c.session_id,
            s.c.branch_id == u.c.branch_id,
            s.c.user_turn_number == u.c.user_turn_number,
        )
        for chunk in _chunks(wanted):
            await conn.execute(
                delete(u).where(
                    u.c.session_id == self.sid,
                    u.c.branch_id == branch,
                    u.c.user_turn_number.in_(chunk),
                    empty,
                )
            )

    async def pop_newest(self, conn: AsyncConnection, branch: str) -> Item | None:
        """Remove the newest item of ``branch`` (and its message if no other branch has it)."""
        s, m = self._s, self._m
        newest = (
            select(s.c.id, s.c.message_id, s.c.user_turn_number, m.c.message_data)
            .select_from(s.outerjoin(m, m.c.id == s.c.message_id))
            .where(self.in_branch(branch))
            .order_by(s.c.sequence_number.desc())
            .limit(1)
        )
        row = (await conn.execute(newest)).first()
        if row is None:
            return None
        row_id, message_id, turn, data = row
        await conn.execute(delete(s).where(s.c.id == row_id))
        await self.drop_unused_messages(conn, [message_id])
        await self.drop_empty_turn_usage(conn, branch, [turn])
        value = CorruptRow("its message row is missing") if data is None else decode_stored(data)
        # A row holding no item raises here, which rolls the pop back.
        return plain_item(self.sid, int(message_id), value)

    async def delete_items(self, conn: AsyncConnection, branch: str, ids: Sequence[int]) -> int:
        """Remove items from ``branch`` by message id; return how many left the branch."""
        s = self._s
        removed: list[int] = []
        turns: list[int | None] = []
        for chunk in _chunks(sorted(set(ids))):
            where = and_(self.in_branch(branch), s.c.message_id.in_(chunk))
            found = (await conn.execute(select(s.c.message_id, s.c.user_turn_number)
                                        .where(where))).all()  # fmt: skip
            await conn.execute(delete(s).where(where))
            removed.extend(int(row[0]) for row in found)
            turns.extend(row[1] for row in found)
        await self.drop_unused_messages(conn, removed)
        await self.drop_empty_turn_usage(conn, branch, turns)
        return len(removed)

    async def clear(self, conn: AsyncConnection) -> None:
        """Delete everything of the session: usage, structure, branches, messages, session row."""
        t = self.t
        for table in (t.usage, t.structure, t.branches, t.base.messages, t.base.sessions):
            await conn.execute(delete(table).where(table.c.session_id == self.sid))
