"""The SQL a SQLAlchemySession runs, built once per session over its tables.

SQLAlchemy reuses the compiled form of a statement object, so the hot statements are made
once and run with parameters. Deletes and replacements by id go in chunks, far below any
driver's bind-parameter limit. Dialect flags are read when a statement runs, since some
dialects learn them from the server on the first connection.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import (
    BigInteger,
    Insert,
    String,
    Text,
    bindparam,
    column,
    delete,
    func,
    insert,
    select,
    update,
    values,
)
from sqlalchemy.engine import Dialect, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import BindParameter, ColumnElement

from ._sqlalchemy_schema import SessionTables

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

T = TypeVar("T")

#: ids per DELETE ... IN (...) / rows per UPDATE ... FROM (VALUES ...): far below any
#: driver's bind-parameter limit (32767 on PostgreSQL, 32766 on SQLite).
CHUNK = 1000


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _upsert_session(
    tables: SessionTables, dialect: Dialect, sid: BindParameter[str]
) -> Insert | None:
    """INSERT ... ON CONFLICT DO UPDATE where the dialect has it (PostgreSQL, SQLite)."""
    s = tables.sessions
    upsert: PgInsert | SqliteInsert
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        upsert = pg_insert(s)
    elif dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        upsert = sqlite_insert(s)
    else:
        return None
    return upsert.values(session_id=sid).on_conflict_do_update(
        index_elements=[s.c.session_id], set_={"updated_at": func.current_timestamp()}
    )


class SessionStatements:
    """Every statement of one session's reads and writes, each run inside a caller's transaction."""

    def __init__(self, tables: SessionTables, dialect: Dialect) -> None:
        s, m = tables.sessions, tables.messages
        sid: BindParameter[str] = bindparam("sid", type_=String())
        self._dialect = dialect
        self._messages = m
        self._upsert = _upsert_session(tables, dialect, sid)
        self._touch = (
            update(s).where(s.c.session_id == sid).values(updated_at=func.current_timestamp())
        )
        self._insert_session = insert(s).values(session_id=sid)
        self._insert_messages = insert(m)
        # SQLite's writer lock already serialises writers; elsewhere they lock the session row.
        self._lock_session = (
            None
            if dialect.name == "sqlite"
            else select(s.c.session_id).where(s.c.session_id == sid).with_for_update()
        )
        self._newest = (
            select(m.c.id, m.c.message_data).where(m.c.session_id == sid).order_by(m.c.id.desc())
        )
        newest_id: ColumnElement[int] = (
            select(m.c.id)
            .where(m.c.session_id == sid)
            .order_by(m.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        self._pop_returning = (
            delete(m).where(m.c.id == newest_id).returning(m.c.id, m.c.message_data)
        )
        self._newest_for_update = self._newest.limit(1).with_for_update()
        self._delete_message = delete(m).where(m.c.id == bindparam("mid"))
        self._delete_ids = delete(m).where(
            m.c.session_id == sid, m.c.id.in_(bindparam("ids", expanding=True))
        )
        self._replace_one = (
            update(m)
            .where(m.c.id == bindparam("mid"), m.c.session_id == sid)
            .values(message_data=bindparam("data"))
        )
        self._clear_messages = delete(m).where(m.c.session_id == sid)
        self._clear_session = delete(s).where(s.c.session_id == sid)

    # -- the session row --------------------------------------------------------------------

    async def touch_session(self, conn: AsyncConnection, session_id: str) -> None:
        """Create the session row or touch its updated_at: one round trip where supported."""
        params = {"sid": session_id}
        if self._upsert is not None:
            await conn.execute(self._upsert, params)
            return
        # Generic dialects: update first; insert when missing, tolerating a concurrent insert.
        if (await conn.execute(self._touch, params)).rowcount:
            return
        try:
            async with conn.begin_nested():
                await conn.execute(self._insert_session, params)
        except IntegrityError:
            await conn.execute(self._touch, params)

    async def claim_session(self, conn: AsyncConnection, session_id: str) -> None:
        """Serialise with other writers of this session (no-op on SQLite: its lock does it)."""
        if self._lock_session is not None:
            await conn.execute(self._lock_session, {"sid": session_id})

    # -- items ------------------------------------------------------------------------------

    async def insert_items(self, conn: AsyncConnection, session_id: str, texts: list[str]) -> None:
        """One batched insert of stored texts, in order."""
        rows = [{"session_id": session_id, "message_data": text} for text in texts]
        await conn.execute(self._insert_messages, rows)

    async def newest_rows(
        self, conn: AsyncConnection, session_id: str, limit: int | None, before_id: int | None
    ) -> Sequence[Row[int, str]]:
        """(id, text) rows, newest first: the newest ``limit`` (None: all) below ``before_id``."""
        query = self._newest
        if before_id is not None:
            query = query.where(self._messages.c.id < before_id)
        if limit is not None:
            query = query.limit(limit)
        return (await conn.execute(query, {"sid": session_id})).all()

    async def pop_newest(self, conn: AsyncConnection, session_id: str) -> Row[int, str] | None:
        """Delete the newest row of the session and return it; None when there is none."""
        params = {"sid": session_id}
        if self._dialect.delete_returning:
            return (await conn.execute(self._pop_returning, params)).first()
        row: Row[int, str] | None = (await conn.execute(self._newest_for_update, params)).first()
        if row is not None:
            await conn.execute(self._delete_message, {"mid": row[0]})
        return row

    async def delete_ids(self, conn: AsyncConnection, session_id: str, ids: Sequence[int]) -> int:
        """Delete rows of the session by id; return how many went."""
        deleted = 0
        for chunk in _chunks(ids):
            params = {"sid": session_id, "ids": list(chunk)}
            deleted += (await conn.execute(self._delete_ids, params)).rowcount
        return deleted

    async def replace_ids(
        self, conn: AsyncConnection, session_id: str, pairs: Sequence[tuple[int, str]]
    ) -> int:
        """Overwrite the text of rows of the session by id; return how many were replaced."""
        if self._dialect.name == "postgresql":
            return await self._replace_from_values(conn, session_id, pairs)
        params = [{"mid": item_id, "sid": session_id, "data": text} for item_id, text in pairs]
        if self._dialect.supports_sane_multi_rowcount:
            return (await conn.execute(self._replace_one, params)).rowcount
        replaced = 0
        for one in params:
            replaced += (await conn.execute(self._replace_one, one)).rowcount
        return replaced

    async def _replace_from_values(
        self, conn: AsyncConnection, session_id: str, pairs: Sequence[tuple[int, str]]
    ) -> int:
        # One UPDATE ... FROM (VALUES ...) per chunk: one round trip, a true row count.
        m = self._messages
        replaced = 0
        for chunk in _chunks(pairs):
            rows = values(column("id", BigInteger), column("data", Text), name="replacement").data(
                list(chunk)
            )
            statement = (
                update(m)
                .where(m.c.id == rows.c.id, m.c.session_id == session_id)
                .values(message_data=rows.c.data)
            )
            replaced += (await conn.execute(statement)).rowcount
        return replaced

    async def clear(self, conn: AsyncConnection, session_id: str) -> None:
        """Delete every row of the session, then its session row."""
        params = {"sid": session_id}
        await conn.execute(self._clear_messages, params)
        await conn.execute(self._clear_session, params)
