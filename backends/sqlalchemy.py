"""SQLAlchemySession: conversation history on SQLAlchemy's async engine (PostgreSQL and friends).

Same constructor, ``from_url`` and schema as the Agents SDK's ``SQLAlchemySession``, so a
database written by the SDK opens here unchanged. On top of it: ``await session.close()`` and
``async with`` (an engine made by ``from_url`` is disposed, a caller's engine is left alone),
order by insertion id, safe concurrent first use (table creation and session-row creation),
validated table names, limits and items, the item-addressing capability, and an ``add_items``
that costs one transaction: one session upsert plus one batched insert.

Isolation: the PostgreSQL default, READ COMMITTED, is assumed. Writers of one session serialise
on its ``agent_sessions`` row; on SQLite the database's own writer lock (plus an in-process lock
per engine, which saves busy-waiting) does the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    TIMESTAMP,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    column,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
    values,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import SingletonThreadPool, StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.expression import BindParameter, Executable

from encmem.errors import MissingTablesError, SessionClosedError
from encmem.items import Item, check_session_id, decode_stored, encode_item, encode_items
from encmem.protocol import StoredItem
from encmem.settings import SessionSettings, make_settings, resolve_limit

from ._identifiers import check_table_name
from ._rows import decode_rows, plain_item, plain_items

logger = logging.getLogger("encmem.backends.sqlalchemy")

#: ids per DELETE ... IN (...) / rows per UPDATE ... FROM (VALUES ...): far below any
#: driver's bind-parameter limit (32767 on PostgreSQL, 32766 on SQLite).
_CHUNK = 1000
_SQLITE_BUSY_TIMEOUT_MS = 30_000


class _EngineState:
    """What sessions sharing one engine share: schemas known ready, and asyncio locks."""

    def __init__(self) -> None:
        self.ready: set[tuple[str, str]] = set()
        self.sqlite_configured = False
        self._locks: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}

    def lock(self, name: str) -> asyncio.Lock:
        """The lock ``name`` for the running loop (an asyncio.Lock belongs to one loop)."""
        loop = asyncio.get_running_loop()
        entry = self._locks.get(name)
        if entry is None or entry[0] is not loop:
            entry = (loop, asyncio.Lock())
            self._locks[name] = entry
        return entry[1]


# Keyed by the sync engine, so the state goes when the engine does.
_STATES: weakref.WeakKeyDictionary[Engine, _EngineState] = weakref.WeakKeyDictionary()


def _state_for(engine: AsyncEngine) -> _EngineState:
    state = _STATES.get(engine.sync_engine)
    if state is None:
        state = _EngineState()
        _STATES[engine.sync_engine] = state
    return state


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    """Per SQLite connection: enforced foreign keys, wiped deletes, WAL, a patient busy wait."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        # Switching to WAL takes a lock the busy handler does not wait for: retry it.
        deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    finally:
        cursor.close()


def _index_name(messages_table: str, limit: int) -> str:
    """``idx_<table>_session_id``, shortened with a hash when it exceeds the dialect's limit."""
    name = f"idx_{messages_table}_session_id"
    if len(name) <= limit:
        return name
    digest = hashlib.blake2b(messages_table.encode(), digest_size=6).hexdigest()
    return f"idx_{messages_table[: max(1, limit - 30)]}_{digest}_sid"


def _advisory_key(*names: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock, from the table names."""
    digest = hashlib.blake2b("\0".join(("encmem-schema", *names)).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class SQLAlchemySession:
    """Conversation history in any database SQLAlchemy's async engine reaches, one row per item."""

    def __init__(
        self,
        session_id: str,
        *,
        engine: AsyncEngine,
        create_tables: bool = False,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: SessionSettings | dict[str, Any] | None = None,
        ensure_ascii: bool = False,
    ) -> None:
        check_session_id(session_id)
        if not isinstance(engine, AsyncEngine):
            raise TypeError(
                f"engine must be a sqlalchemy AsyncEngine (create_async_engine(...)), "
                f"not {type(engine).__name__}; or use SQLAlchemySession.from_url(...)"
            )
        self.session_id = session_id
        self.sessions_table = check_table_name(sessions_table, "sessions_table")
        self.messages_table = check_table_name(messages_table, "messages_table")
        self.session_settings: SessionSettings | None = make_settings(session_settings)
        self._engine = engine
        self._create_tables = bool(create_tables)
        self._ensure_ascii = bool(ensure_ascii)
        self._owns_engine = False
        self._closed = False
        self._state = _state_for(engine)

        dialect = engine.dialect
        self._dialect_name: str = dialect.name
        is_sqlite = dialect.name == "sqlite"
        # SQLite has one writer at a time anyway: queueing in-process beats its busy-wait.
        # A single shared connection (in-memory databases) must not interleave at all.
        self._lock_writes = is_sqlite
        self._lock_reads = isinstance(engine.sync_engine.pool, (StaticPool, SingletonThreadPool))
        # SQLite's writer lock already serialises; elsewhere writers lock the session row.
        self._lock_session_row = not is_sqlite
        if is_sqlite and not self._state.sqlite_configured:
            event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
            self._state.sqlite_configured = True

        self._metadata = MetaData()
        self._sessions = Table(
            self.sessions_table,
            self._metadata,
            Column("session_id", String, primary_key=True),
            Column(
                "created_at",
                TIMESTAMP(timezone=False),
                server_default=sql_text("CURRENT_TIMESTAMP"),
                nullable=False,
            ),
            Column(
                "updated_at",
                TIMESTAMP(timezone=False),
                server_default=sql_text("CURRENT_TIMESTAMP"),
                nullable=False,
            ),
        )
        self._messages = Table(
            self.messages_table,
            self._metadata,
            # BIGSERIAL on PostgreSQL; SQLite needs INTEGER for its AUTOINCREMENT rowid alias.
            Column(
                "id",
                BigInteger().with_variant(Integer(), "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            Column(
                "session_id",
                String,
                ForeignKey(f"{self.sessions_table}.session_id", ondelete="CASCADE"),
                nullable=False,
            ),
            Column("message_data", Text, nullable=False),
            Column(
                "created_at",
                TIMESTAMP(timezone=False),
                server_default=sql_text("CURRENT_TIMESTAMP"),
                nullable=False,
            ),
            sqlite_autoincrement=True,
        )
        self._index = Index(
            _index_name(self.messages_table, dialect.max_identifier_length or 63),
            self._messages.c.session_id,
            self._messages.c.id,
        )
        self._build_statements()

    @classmethod
    def from_url(
        cls,
        session_id: str,
        *,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SQLAlchemySession:
        """A session on a new engine for ``url``; ``close()`` disposes that engine."""
        engine = create_async_engine(url, **(engine_kwargs or {}))
        try:
            session = cls(session_id, engine=engine, **kwargs)
        except BaseException:
            # No connection was opened yet; dropping the pool is all there is to undo.
            engine.sync_engine.dispose(close=False)
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

    # -- statements -----------------------------------------------------------------------

    def _build_statements(self) -> None:
        """Build the hot statements once; SQLAlchemy then reuses their compiled form."""
        s, m = self._sessions, self._messages
        sid: BindParameter[str] = bindparam("sid", type_=String())
        now = func.current_timestamp()
        upsert: Any = None
        if self._dialect_name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            upsert = pg_insert(s).values(session_id=sid)
        elif self._dialect_name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            upsert = sqlite_insert(s).values(session_id=sid)
        self._upsert_session: Any = (
            None
            if upsert is None
            else upsert.on_conflict_do_update(
                index_elements=[s.c.session_id], set_={"updated_at": now}
            )
        )
        self._touch_session = update(s).where(s.c.session_id == sid).values(updated_at=now)
        self._insert_session = insert(s).values(session_id=sid)
        self._insert_messages = insert(m)
        self._lock_session = select(s.c.session_id).where(s.c.session_id == sid).with_for_update()
        tail_id = (
            select(m.c.id)
            .where(m.c.session_id == sid)
            .order_by(m.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        self._pop_returning = delete(m).where(m.c.id == tail_id).returning(m.c.id, m.c.message_data)
        self._select_tail_for_update = (
            select(m.c.id, m.c.message_data)
            .where(m.c.session_id == sid)
            .order_by(m.c.id.desc())
            .limit(1)
            .with_for_update()
        )
        self._delete_message = delete(m).where(m.c.id == bindparam("mid"))
        self._clear_messages = delete(m).where(m.c.session_id == sid)
        self._clear_session = delete(s).where(s.c.session_id == sid)

    # -- engine, schema and transactions --------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(
                f"{type(self).__name__} {self.session_id!r} is closed; create a new session"
            )

    async def _ensure_ready(self) -> None:
        """Create or check the tables once per engine (under a lock, so once, not racing)."""
        self._check_open()
        key = (self.sessions_table, self.messages_table)
        state = self._state
        if key in state.ready:
            return
        async with state.lock("schema"):
            if key in state.ready:
                return
            if self._create_tables:
                await self._create_schema()
            else:
                await self._check_schema()
            state.ready.add(key)

    async def _create_schema(self) -> None:
        """CREATE ... IF NOT EXISTS, safe against other processes doing the same at once."""
        statements: list[Executable] = [
            CreateTable(self._sessions, if_not_exists=True),
            CreateTable(self._messages, if_not_exists=True),
            CreateIndex(self._index, if_not_exists=True),
        ]
        for attempt in (1, 2):
            try:
                async with self._engine.begin() as conn:
                    if self._dialect_name == "postgresql":
                        # IF NOT EXISTS still races on pg_type's unique index; an advisory lock
                        # held to commit makes concurrent creators take turns.
                        key = _advisory_key(self.sessions_table, self.messages_table)
                        await conn.execute(select(func.pg_advisory_xact_lock(key)))
                    for statement in statements:
                        await conn.execute(statement)
                return
            except IntegrityError:
                # Dialects without the lock: a concurrent creator won; its tables will do.
                if attempt == 2 or self._dialect_name == "postgresql":
                    raise

    async def _check_schema(self) -> None:
        names = (self.sessions_table, self.messages_table)

        def missing_tables(sync_conn: Connection) -> list[str]:
            inspector = inspect(sync_conn)
            return [name for name in names if not inspector.has_table(name)]

        async with self._engine.connect() as conn:
            missing = await conn.run_sync(missing_tables)
        if missing:
            raise MissingTablesError(
                f"table(s) {', '.join(missing)} missing from the database and "
                f"{type(self).__name__} was made with create_tables=False; pass "
                "create_tables=True to create them, or create them with your migrations"
            )

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction: committed on success (writes), rolled back otherwise."""
        await self._ensure_ready()
        locked = self._lock_writes if write else self._lock_reads
        lock = self._state.lock("io") if locked else None
        if lock is not None:
            await lock.acquire()
        try:
            if write:
                async with self._engine.begin() as conn:
                    yield conn
            else:
                async with self._engine.connect() as conn:
                    yield conn
        finally:
            if lock is not None:
                lock.release()

    async def _claim_session(self, conn: AsyncConnection) -> None:
        """Serialise with other writers of this session (no-op on SQLite: its lock does it)."""
        if self._lock_session_row:
            await conn.execute(self._lock_session, {"sid": self.session_id})

    async def _upsert(self, conn: AsyncConnection) -> None:
        """Create the session row or touch its updated_at: one round trip where supported."""
        params = {"sid": self.session_id}
        if self._upsert_session is not None:
            await conn.execute(self._upsert_session, params)
            return
        # Generic dialects: update first; insert when missing, tolerating a concurrent insert.
        result = await conn.execute(self._touch_session, params)
        if result.rowcount:
            return
        try:
            async with conn.begin_nested():
                await conn.execute(self._insert_session, params)
        except IntegrityError:
            await conn.execute(self._touch_session, params)

    async def close(self) -> None:
        """Close the session; dispose the engine if ``from_url`` made it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> SQLAlchemySession:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- rows -----------------------------------------------------------------------------

    def _decode_rows(self, rows: Sequence[Any]) -> list[StoredItem]:
        return decode_rows(rows)

    async def _select_tail(
        self, conn: AsyncConnection, limit: int | None, before_id: int | None
    ) -> list[StoredItem]:
        m = self._messages
        query = (
            select(m.c.id, m.c.message_data)
            .where(m.c.session_id == self.session_id)
            .order_by(m.c.id.desc())
        )
        if limit is None:
            if before_id is not None:
                query = query.where(m.c.id < before_id)
            rows = (await conn.execute(query)).all()
            return self._decode_rows(rows)
        result: list[StoredItem] = []
        bound = before_id
        while len(result) < limit:
            want = limit - len(result)
            page = query if bound is None else query.where(m.c.id < bound)
            rows = (await conn.execute(page.limit(want))).all()
            if not rows:
                break
            result = self._decode_rows(rows) + result
            if len(rows) < want:
                break
            # Rows that were not JSON objects were skipped: read further back to fill up.
            bound = int(rows[-1][0])
        return result

    def _encode(self, items: Sequence[object]) -> list[str]:
        texts = encode_items(items)
        if self._ensure_ascii:
            # Validated above; re-encoded only for callers who asked for the SDK's format.
            texts = [json.dumps(item, ensure_ascii=True, separators=(",", ":")) for item in items]
        return texts

    # -- the Session protocol -------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The session's items, oldest first; with ``limit``, the newest ``limit`` of them."""
        return plain_items(self.session_id, await self.get_stored_items(limit))

    async def add_items(self, items: list[Any]) -> None:
        """Append items in one transaction; nothing is written if any item is invalid."""
        texts = self._encode(items)
        self._check_open()
        if not texts:
            return
        sid = self.session_id
        async with self._transaction(write=True) as conn:
            # The upsert comes first: it takes the session row's lock, so concurrent writers
            # of one session commit their batches in id order.
            await self._upsert(conn)
            rows = [{"session_id": sid, "message_data": text} for text in texts]
            await conn.execute(self._insert_messages, rows)

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item; None when the session is empty."""
        params = {"sid": self.session_id}
        async with self._transaction(write=True) as conn:
            await self._claim_session(conn)
            if self._engine.dialect.delete_returning:
                row = (await conn.execute(self._pop_returning, params)).first()
            else:
                row = (await conn.execute(self._select_tail_for_update, params)).first()
                if row is not None:
                    await conn.execute(self._delete_message, {"mid": row[0]})
            if row is None:
                return None
            # A row holding no item raises here, which rolls the delete back.
            return plain_item(self.session_id, row[0], decode_stored(row[1]))

    async def clear_session(self) -> None:
        """Delete every item of the session and its session row."""
        params = {"sid": self.session_id}
        async with self._transaction(write=True) as conn:
            await self._claim_session(conn)
            await conn.execute(self._clear_messages, params)
            await conn.execute(self._clear_session, params)

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
            return await self._select_tail(conn, effective, before_id)

    async def delete_stored_items(self, ids: Sequence[int]) -> int:
        """Delete items of this session by id; return how many rows went."""
        wanted = sorted({int(i) for i in ids})
        self._check_open()
        if not wanted:
            return 0
        m = self._messages
        deleted = 0
        async with self._transaction(write=True) as conn:
            await self._claim_session(conn)
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                result = await conn.execute(
                    delete(m).where(m.c.session_id == self.session_id, m.c.id.in_(chunk))
                )
                deleted += result.rowcount
        return deleted

    async def replace_stored_items(self, replacements: Mapping[int, Item]) -> int:
        """Overwrite items in place by id (same id, same position); return the count."""
        pairs = [
            (int(item_id), encode_item(item, index))
            for index, (item_id, item) in enumerate(replacements.items())
        ]
        if self._ensure_ascii:
            pairs = [
                (item_id, json.dumps(json.loads(text), ensure_ascii=True, separators=(",", ":")))
                for item_id, text in pairs
            ]
        self._check_open()
        if not pairs:
            return 0
        m = self._messages
        replaced = 0
        async with self._transaction(write=True) as conn:
            await self._claim_session(conn)
            if self._dialect_name == "postgresql":
                # One UPDATE ... FROM (VALUES ...) per chunk: one round trip, a true row count.
                for start in range(0, len(pairs), _CHUNK):
                    chunk = pairs[start : start + _CHUNK]
                    rows = values(
                        column("id", BigInteger), column("data", Text), name="replacement"
                    ).data(chunk)
                    result = await conn.execute(
                        update(m)
                        .where(m.c.id == rows.c.id, m.c.session_id == self.session_id)
                        .values(message_data=rows.c.data)
                    )
                    replaced += result.rowcount
            else:
                statement = (
                    update(m)
                    .where(m.c.id == bindparam("mid"), m.c.session_id == bindparam("sid"))
                    .values(message_data=bindparam("data"))
                )
                params = [
                    {"mid": item_id, "sid": self.session_id, "data": text}
                    for item_id, text in pairs
                ]
                if self._engine.dialect.supports_sane_multi_rowcount:
                    replaced = (await conn.execute(statement, params)).rowcount
                else:
                    for one in params:
                        replaced += (await conn.execute(statement, one)).rowcount
        return replaced
