"""The attacks of tests/history_attacks.py on the real PostgreSQL server, done with plain SQL.

Each store lives in a schema of its own on the test server (the connections' ``search_path``),
so the tables keep the names the attacks use (``agent_messages``, ``message_structure``,
``agent_messages_heads``). An attack runs on a connection of its own, outside the code under
test, in one transaction: :class:`PgConnection` gives it the few ``sqlite3.Connection``
calls the attacks of tests/history_attacks.py make (``execute`` with ``?`` parameters,
``fetchone`` / ``fetchall``, ``lastrowid``), translated for PostgreSQL, so both matrices run
the very same attacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from encmem.backends import AdvancedSQLAlchemySession, SQLAlchemySession

from encmem import EncryptedSession, Keyring

from .history_attacks import (
    BRANCH_X,
    MESSAGES,
    OTHER,
    SID,
    TRUE_MAIN,
    Attack,
    _ids,
    message,
)
from .stores_advanced_sqlalchemy import PgSchema

T = TypeVar("T")


@dataclass(frozen=True)
class PgBackend:
    """An encmem backend with history heads, on PostgreSQL through asyncpg."""

    name: str
    advanced: bool
    cls: Any

    def open(self, schema: PgSchema, sid: str) -> Any:
        return self.cls.from_url(
            sid, url=schema.url, engine_kwargs=schema.engine_kwargs(), create_tables=True
        )


PG_BACKENDS = {
    "sqlalchemy-pg": PgBackend("sqlalchemy-pg", False, SQLAlchemySession),
    "advanced-sqlalchemy-pg": PgBackend("advanced-sqlalchemy-pg", True, AdvancedSQLAlchemySession),
}


@dataclass
class PgTemplate:
    """A built store in its schema, and what an attacker can find in it (as
    :class:`tests.history_attacks.Template`: ``ids`` by content, raw ``leftovers``)."""

    backend: PgBackend
    schema: PgSchema
    ids: dict[str, int] = field(default_factory=dict)
    leftovers: dict[str, str] = field(default_factory=dict)

    def open(self, sid: str = SID) -> Any:
        return self.backend.open(self.schema, sid)


# -- a connection of the attacker's own --------------------------------------------------------


class _Cursor:
    def __init__(self, rows: list[tuple[Any, ...]], lastrowid: int | None) -> None:
        self.rows, self.lastrowid = rows, lastrowid

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def __iter__(self) -> Any:
        return iter(self.rows)


class PgConnection:
    """What the attacks use of ``sqlite3.Connection``, on one PostgreSQL transaction."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: Any) -> None:
        self.loop, self.conn = loop, conn

    def wait(self, step: Any) -> Any:
        return self.loop.run_until_complete(step)

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> _Cursor:
        from sqlalchemy import text

        parts = statement.split("?")
        assert len(parts) == len(params) + 1, statement
        sql = parts[0] + "".join(f":p{i}{part}" for i, part in enumerate(parts[1:]))
        inserts_item = sql.lstrip().startswith(f"INSERT INTO {MESSAGES} (")
        if inserts_item:
            sql += " RETURNING id"
        bind = {f"p{i}": value for i, value in enumerate(params)}
        result = self.wait(self.conn.execute(text(sql), bind))
        rows = [tuple(row) for row in result.all()] if result.returns_rows else []
        return _Cursor(rows, int(rows[0][0]) if inserts_item else None)


class Attacker:
    """The attacker's own connection to the server, kept on a thread of its own (so callable
    from inside a running event loop) and used one transaction at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attacker")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: Any = None
        self._conn: Any = None

    def _connection(self) -> PgConnection:
        """The open connection (made on first use), on the attacker's thread."""
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            # Statements are not cached: the same text names another schema's tables next time.
            self._engine = create_async_engine(
                self.url,
                poolclass=NullPool,
                connect_args={"prepared_statement_cache_size": 0},
            )
            self._conn = self._loop.run_until_complete(self._engine.connect())
        return PgConnection(self._loop, self._conn)

    def transaction(self, schema: PgSchema, job: Callable[[PgConnection], T]) -> T:
        """Run ``job`` in ``schema``, in one transaction, committed if it returns."""

        def run() -> T:
            conn = self._connection()
            conn.wait(conn.conn.begin())
            try:
                conn.execute(f"SET LOCAL search_path TO {schema.name}")
                value = job(conn)
            except BaseException:
                conn.wait(conn.conn.rollback())
                raise
            conn.wait(conn.conn.commit())
            return value

        return self._thread.submit(run).result(timeout=60)

    def attack(self, template: PgTemplate, chosen: Attack) -> None:
        """Apply ``chosen`` to the store in one transaction, as an attacker with psql would."""
        self.transaction(template.schema, lambda conn: chosen.apply(conn, template))  # type: ignore[arg-type]

    def snapshot(self, schema: PgSchema) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table of the schema (to show that a read changed nothing)."""

        def rows(conn: PgConnection) -> dict[str, list[tuple[Any, ...]]]:
            return {
                table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                for table in tables(conn, schema)
            }

        return self.transaction(schema, rows)

    def last_row(self, schema: PgSchema) -> tuple[int, str]:
        query = f"SELECT id, message_data FROM {MESSAGES} ORDER BY id DESC LIMIT 1"
        row = self.transaction(schema, lambda conn: conn.execute(query).fetchone())
        assert row is not None
        return int(row[0]), str(row[1])

    def close(self) -> None:
        def run() -> None:
            if self._loop is not None:
                self._loop.run_until_complete(self._conn.close())
                self._loop.run_until_complete(self._engine.dispose())
                self._loop.close()

        self._thread.submit(run).result(timeout=60)
        self._thread.shutdown()


def tables(conn: PgConnection, schema: PgSchema) -> list[str]:
    """The schema's tables, by name."""
    query = "SELECT tablename FROM pg_tables WHERE schemaname = ? ORDER BY tablename"
    return [str(row[0]) for row in conn.execute(query, (schema.name,)).fetchall()]


# -- the store the attacks expect ----------------------------------------------------------------


async def fill(
    backend: PgBackend, schema: PgSchema, keyring: Keyring, attacker: Attacker
) -> PgTemplate:
    """The store of tests/history_attacks.py's docstring, in ``schema``: main ``m1``..``m6``,
    the popped ``m7``, ``m5-old`` and ``m6-old``, session ``other``, and (advanced) branch ``x``
    from turn 2."""
    template = PgTemplate(backend, schema)
    underlying, other = template.open(), template.open("other")
    try:
        s = EncryptedSession(underlying_session=underlying, encryption_key=keyring, ttl=None)
        o = EncryptedSession(underlying_session=other, encryption_key=keyring, ttl=None)
        await s.add_items(TRUE_MAIN[:2])
        await s.add_items(TRUE_MAIN[2:4])
        for then in (TRUE_MAIN[4], TRUE_MAIN[5], None):  # a popped item before each of these
            popped = f"{then['content']}-old" if then else "m7"
            await s.add_items([message(popped, then["role"] if then else "user")])
            template.leftovers[popped] = (await asyncio.to_thread(attacker.last_row, schema))[1]
            assert (await s.pop_item())["content"] == popped
            if then is not None:
                await s.add_items([then])
        await o.add_items(OTHER)
        template.ids.update(await _ids(other, o, None))
        if backend.advanced:
            assert await s.create_branch_from_turn(2, "x") == "x"
            await s.add_items(BRANCH_X[2:])
            template.ids.update(await _ids(underlying, s, "x"))
            await underlying.switch_to_branch("main")
        template.ids.update(await _ids(underlying, s, None))
        assert await s.get_items() == TRUE_MAIN
        assert await s.verify_history() == len(TRUE_MAIN)
    finally:
        await underlying.close()
        await other.close()
    return template


def build(
    backend: PgBackend, keyring: Keyring, attacker: Attacker, count: int = 1
) -> list[PgTemplate]:
    """``count`` stores, each in a fresh schema, filled a few at a time (callable from inside
    a running event loop)."""
    schemas: list[PgSchema] = []
    try:
        schemas += [PgSchema() for _ in range(count)]

        async def fill_all() -> list[PgTemplate]:
            gate = asyncio.Semaphore(6)

            async def one(schema: PgSchema) -> PgTemplate:
                async with gate:
                    return await fill(backend, schema, keyring, attacker)

            return list(await asyncio.gather(*(one(schema) for schema in schemas)))

        with ThreadPoolExecutor(max_workers=1) as thread:
            return thread.submit(asyncio.run, fill_all()).result()
    except BaseException:
        for schema in schemas:
            schema.drop()
        raise
