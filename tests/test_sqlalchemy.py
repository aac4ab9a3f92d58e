"""SQLAlchemySession beyond the shared contract: PostgreSQL at scale, engines, schema, races."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from encmem.backends._sqlalchemy import SQLAlchemySession
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from encmem import InvalidItemError
from encmem.errors import MissingTablesError, SessionClosedError

from .pg import drop_tables, pg_url, run_sync, unique_tables


def msg(n: int, role: str = "user") -> dict[str, Any]:
    return {"role": role, "content": f"message {n}"}


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


class Db:
    """One database for one test: a SQLite file or fresh tables on the PostgreSQL server."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        if kind == "pg":
            self.url = pg_url()
            self.tables = unique_tables()
            self.path: Path | None = None
        else:
            self.path = tmp / "db.sqlite"
            self.url = f"sqlite+aiosqlite:///{self.path}"
            self.tables = {"sessions_table": "agent_sessions", "messages_table": "agent_messages"}
        self.engines: list[AsyncEngine] = []
        self.sessions: list[SQLAlchemySession] = []
        self._shared: AsyncEngine | None = None

    @property
    def messages(self) -> str:
        return self.tables["messages_table"]

    @property
    def sessions_table(self) -> str:
        return self.tables["sessions_table"]

    def engine(self, **kwargs: Any) -> AsyncEngine:
        engine = create_async_engine(self.url, **kwargs)
        self.engines.append(engine)
        return engine

    @property
    def shared(self) -> AsyncEngine:
        if self._shared is None:
            self._shared = self.engine()
        return self._shared

    def session(
        self, session_id: str, engine: AsyncEngine | None = None, **kwargs: Any
    ) -> SQLAlchemySession:
        options: dict[str, Any] = {**self.tables, "create_tables": True, **kwargs}
        session = SQLAlchemySession(session_id, engine=engine or self.shared, **options)
        self.sessions.append(session)
        return session

    def query(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Look at the database directly (a plain sqlite3 connection, or a separate pg one)."""
        if self.path is not None:
            with sqlite3.connect(self.path) as conn:
                return list(conn.execute(statement, params or {}).fetchall())
        return run_sync(self.url, statement, params)

    async def aclose(self) -> None:
        for session in self.sessions:
            await session.close()
        for engine in self.engines:
            await engine.dispose()
        if self.kind == "pg":
            drop_tables(self.url, [self.messages, self.sessions_table])


@pytest.fixture(params=["sqlite", "pg"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    database = Db(request.param, tmp_path)
    try:
        yield database
    finally:
        await database.aclose()


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Db]:
    database = Db("pg", tmp_path)
    try:
        yield database
    finally:
        await database.aclose()


# -- scale and order ----------------------------------------------------------------------


async def test_fifty_sessions_of_twenty_turns_at_once_keep_every_item_in_order(pg: Db) -> None:
    engine = pg.engine(pool_size=10, max_overflow=10)
    ids = [sid() for _ in range(50)]
    sessions = [pg.session(session_id, engine) for session_id in ids]

    def turn(s: int, t: int) -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": f"{s}:{t}:question"},
            {"role": "assistant", "content": f"{s}:{t}:answer"},
        ]

    async def converse(s: int) -> None:
        for t in range(20):
            await sessions[s].add_items(turn(s, t))
            await asyncio.sleep(0)

    await asyncio.gather(*(converse(s) for s in range(50)))

    for s, session_id in enumerate(ids):
        reader = pg.session(session_id, pg.engine())
        expected = [item for t in range(20) for item in turn(s, t)]
        assert await reader.get_items() == expected
        stored = await reader.get_stored_items()
        assert [x.id for x in stored] == sorted(x.id for x in stored)
    total = pg.query(f"SELECT COUNT(*) FROM {pg.messages}")[0][0]
    assert total == 50 * 20 * 2
    assert pg.query(f"SELECT COUNT(*) FROM {pg.sessions_table}")[0][0] == 50


async def test_order_is_by_insertion_id_even_when_timestamps_disagree(db: Db) -> None:
    session = db.session(sid())
    for n in range(5):
        await session.add_items([msg(n)])
    # The newest row gets the oldest timestamp and the other way round.
    for n, stamp in ((4, "2001-01-01 00:00:00"), (0, "2099-01-01 00:00:00")):
        db.query(
            f"UPDATE {db.messages} SET created_at = '{stamp}' WHERE message_data LIKE :pattern",
            {"pattern": f'%"message {n}"%'},
        )
    stamps = db.query(f"SELECT created_at FROM {db.messages} ORDER BY id")
    assert str(stamps[0][0]).startswith("2099") and str(stamps[-1][0]).startswith("2001")
    assert await session.get_items() == [msg(n) for n in range(5)]
    assert await session.get_items(2) == [msg(3), msg(4)]
    assert await session.pop_item() == msg(4)


async def test_history_survives_reopening_with_a_new_engine(db: Db) -> None:
    session_id = sid()
    first_engine = db.engine()
    first = db.session(session_id, first_engine)
    await first.add_items([msg(1), msg(2, "assistant")])
    await first.add_items([msg(3)])
    await first.close()
    await first_engine.dispose()

    again = db.session(session_id, db.engine(), create_tables=False)
    assert await again.get_items() == [msg(1), msg(2, "assistant"), msg(3)]
    await again.add_items([msg(4)])
    assert await again.get_items(2) == [msg(3), msg(4)]


# -- table names and schema ---------------------------------------------------------------


ODD_NAMES = [
    "agent-sessions",
    "agent sessions",
    "x; DROP TABLE agent_messages; --",
    'quoted"name',
    "1starts_with_digit",
    "",
    "t" * 64,
    "tablé",
    "schema.table",
    None,
    42,
]


@pytest.mark.parametrize("name", ODD_NAMES, ids=repr)
@pytest.mark.parametrize("parameter", ["sessions_table", "messages_table"])
async def test_odd_table_names_are_refused_with_a_clear_error(
    parameter: str, name: Any, tmp_path: Path
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(ValueError, match=parameter) as caught:
            SQLAlchemySession("s", engine=engine, create_tables=True, **{parameter: name})
        assert "identifier" in str(caught.value)
        with pytest.raises(ValueError, match=parameter):
            SQLAlchemySession.from_url("s", url=engine.url, **{parameter: name})
    finally:
        await engine.dispose()
    assert not (tmp_path / "x.db").exists()  # refused before touching the database


async def test_longest_table_names_work(db: Db) -> None:
    tag = uuid.uuid4().hex
    db.tables = {"sessions_table": ("s" + tag * 2)[:63], "messages_table": ("m" + tag * 2)[:63]}
    session = db.session(sid())
    await session.add_items([msg(1), msg(2)])
    assert await session.get_items() == [msg(1), msg(2)]


async def test_missing_tables_are_a_clear_error_without_create_tables(db: Db) -> None:
    session = db.session(sid(), create_tables=False)
    for call in (session.get_items(), session.add_items([msg(1)]), session.pop_item()):
        with pytest.raises(MissingTablesError, match=r"create_tables=True"):
            await call
    await db.session(sid()).add_items([msg(0)])  # a create_tables=True session makes them
    await session.add_items([msg(1)])
    assert await session.get_items() == [msg(1)]


async def test_sessions_creating_the_tables_at_once_all_succeed(db: Db) -> None:
    engines = [db.engine() for _ in range(8)]
    sessions = [db.session(f"racer-{n}", engine) for n, engine in enumerate(engines)]
    await asyncio.gather(*(s.add_items([msg(n)]) for n, s in enumerate(sessions)))
    for n, session in enumerate(sessions):
        assert await session.get_items() == [msg(n)]


async def test_writers_creating_the_same_session_row_at_once_all_succeed(db: Db) -> None:
    await db.session("warm-up").add_items([msg(0)])  # tables exist; the session row does not
    session_id = sid()
    writers = [db.session(session_id, db.engine()) for _ in range(8)]
    await asyncio.gather(*(w.add_items([msg(n)]) for n, w in enumerate(writers)))
    rows = db.query(
        f"SELECT COUNT(*) FROM {db.sessions_table} WHERE session_id = :sid", {"sid": session_id}
    )
    assert rows[0][0] == 1
    got = await writers[0].get_items()
    assert sorted(item["content"] for item in got) == sorted(msg(n)["content"] for n in range(8))


async def test_a_database_written_by_the_sdk_opens_and_stays_readable_by_it(db: Db) -> None:
    from agents.extensions.memory import SQLAlchemySession as SdkSession

    session_id = sid()
    sdk_engine = db.engine()
    sdk = SdkSession(session_id, engine=sdk_engine, create_tables=True, **db.tables)
    await sdk.add_items([msg(1), {"role": "assistant", "content": "héllo ✓"}])

    ours = db.session(session_id, db.engine(), create_tables=False)
    assert await ours.get_items() == [msg(1), {"role": "assistant", "content": "héllo ✓"}]
    await ours.add_items([msg(3)])
    assert await sdk.get_items() == [msg(1), {"role": "assistant", "content": "héllo ✓"}, msg(3)]
    assert await ours.pop_item() == msg(3)
    assert await sdk.get_items(1) == [{"role": "assistant", "content": "héllo ✓"}]


# -- close() and async with ---------------------------------------------------------------


async def test_close_disposes_the_engine_from_url(tmp_path: Path) -> None:
    session = SQLAlchemySession.from_url(
        "s", url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", create_tables=True
    )
    await session.add_items([msg(1)])
    engine = session.engine
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    await session.close()
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    await session.close()  # idempotent


async def test_close_disposes_the_engine_from_url_on_postgres(pg: Db) -> None:
    app = f"encmem-{uuid.uuid4().hex[:10]}"
    session = SQLAlchemySession.from_url(
        sid(),
        url=pg.url,
        engine_kwargs={"connect_args": {"server_settings": {"application_name": app}}},
        create_tables=True,
        **pg.tables,
    )

    def connections() -> int:
        return int(
            pg.query(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = :app",
                {"app": app},
            )[0][0]
        )

    await session.add_items([msg(1)])
    assert connections() == 1
    await session.close()
    deadline = time.monotonic() + 10
    while connections() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert connections() == 0


async def test_close_leaves_a_callers_engine_alone(db: Db) -> None:
    session_id = sid()
    async with db.session(session_id) as session:
        await session.add_items([msg(1)])
    assert db.shared.pool.checkedin() >= 1  # type: ignore[attr-defined]
    assert await db.session(session_id).get_items() == [msg(1)]


async def test_async_with_closes_and_a_closed_session_refuses_everything(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    async with SQLAlchemySession.from_url("s", url=url, create_tables=True) as session:
        await session.add_items([msg(1)])
        engine = session.engine
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    calls = [
        lambda: session.get_items(),
        lambda: session.add_items([msg(2)]),
        lambda: session.pop_item(),
        lambda: session.clear_session(),
        lambda: session.get_stored_items(),
        lambda: session.delete_stored_items([1]),
        lambda: session.replace_stored_items({1: msg(9)}),
    ]
    for call in calls:
        with pytest.raises(SessionClosedError, match="closed"):
            await call()
    again = SQLAlchemySession.from_url("s", url=url)
    assert await again.get_items() == [msg(1)]  # nothing was written after close
    await again.close()


@pytest.mark.parametrize("how", ["close", "aclose", "async with"])
async def test_close_aclose_and_async_with_each_close_and_closing_again_is_harmless(
    db: Db, how: str
) -> None:
    session_id = sid()
    session = SQLAlchemySession.from_url(session_id, url=db.url, create_tables=True, **db.tables)
    engine = session.engine
    if how == "async with":
        async with session:
            await session.add_items([msg(1)])
    else:
        await session.add_items([msg(1)])
        await (session.close() if how == "close" else session.aclose())
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    with pytest.raises(SessionClosedError, match=r"is closed; create a new session"):
        await session.get_items()

    await session.close()
    await session.aclose()
    with pytest.raises(SessionClosedError, match="closed"):
        async with session:
            pass
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    assert await db.session(session_id).get_items() == [msg(1)]


async def test_a_store_on_a_sqlite_url_erases_for_real_and_closes_like_a_session(
    tmp_path: Path,
) -> None:
    from encmem.backends import open_store

    path = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{path}"
    canary = "erase-canary-7c1d"
    async with SQLAlchemySession.from_url("gone", url=url, create_tables=True) as gone:
        await gone.add_items([{"role": "user", "content": canary * 20}])
    async with SQLAlchemySession.from_url("stays", url=url) as stays:
        await stays.add_items([msg(1)])

    async with await open_store(url) as store:
        # The store's own connections are configured as the sessions' are, from the first one.
        async with store.engine.connect() as conn:  # type: ignore[attr-defined]
            for pragma in ("foreign_keys", "secure_delete"):
                assert (await conn.execute(text(f"PRAGMA {pragma}"))).scalar_one() == 1
        assert await store.erase_session("gone") == 2
        assert await store.session_ids() == ["stays"]
    await store.aclose()  # closing again is harmless
    assert canary.encode() not in path.read_bytes()
    async with SQLAlchemySession.from_url("stays", url=url) as stays:
        assert await stays.get_items() == [msg(1)]


async def test_from_url_passes_engine_kwargs(tmp_path: Path) -> None:
    session = SQLAlchemySession.from_url(
        "s",
        url=f"sqlite+aiosqlite:///{tmp_path / 'k.db'}",
        engine_kwargs={"pool_size": 3, "max_overflow": 0},
    )
    try:
        assert session.engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        await session.close()


async def test_a_sync_engine_is_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(TypeError, match="AsyncEngine"):
        SQLAlchemySession("s", engine=engine)  # type: ignore[arg-type]
    engine.dispose()


def test_repr_hides_the_password() -> None:
    session = SQLAlchemySession.from_url(
        "s", url="postgresql+asyncpg://user:hunter2@/db?host=/nonexistent"
    )
    assert "hunter2" not in repr(session)
    assert "'s'" in repr(session)


# -- writes, pops, clears -----------------------------------------------------------------


async def test_an_invalid_item_writes_nothing_not_even_the_session_row(db: Db) -> None:
    session = db.session(sid())
    await db.session("other").add_items([msg(0)])
    with pytest.raises(InvalidItemError, match="item 1"):
        await session.add_items([msg(1), {"bad": object()}, msg(2)])
    assert (
        db.query(
            f"SELECT COUNT(*) FROM {db.sessions_table} WHERE session_id = :s",
            {"s": session.session_id},
        )[0][0]
        == 0
    )
    assert await session.get_items() == []


async def test_concurrent_pops_each_take_a_different_item(db: Db) -> None:
    session_id = sid()
    await db.session(session_id).add_items([msg(n) for n in range(20)])
    poppers = [db.session(session_id) for _ in range(25)]
    popped = await asyncio.gather(*(p.pop_item() for p in poppers))
    taken = [item for item in popped if item is not None]
    assert sorted(item["content"] for item in taken) == sorted(msg(n)["content"] for n in range(20))
    assert popped.count(None) == 5
    assert await db.session(session_id).get_items() == []


async def test_clear_removes_the_session_row_and_only_this_session(db: Db) -> None:
    a, b = db.session(sid()), db.session(sid())
    await a.add_items([msg(1)])
    await b.add_items([msg(2)])
    await a.clear_session()
    rows = db.query(f"SELECT session_id FROM {db.sessions_table}")
    assert [row[0] for row in rows] == [b.session_id]
    assert await a.get_items() == []
    assert await b.get_items() == [msg(2)]


async def test_limits_are_validated(db: Db) -> None:
    session = db.session(sid(), session_settings={"limit": 2})
    await session.add_items([msg(n) for n in range(4)])
    assert await session.get_items() == [msg(2), msg(3)]
    assert await session.get_items(3) == [msg(1), msg(2), msg(3)]
    assert await session.get_items(0) == []
    with pytest.raises(ValueError, match="limit"):
        await session.get_items(-1)
    with pytest.raises(TypeError, match="limit"):
        await session.get_items("2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        db.session(sid(), session_settings={"limit": -3})


async def test_rows_that_are_not_json_objects_are_refused_and_never_logged(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    from encmem.errors import CorruptRowError

    session = db.session(sid())
    await session.add_items([msg(1)])
    db.query(
        f"INSERT INTO {db.messages} (session_id, message_data) VALUES (:s, :d)",
        {"s": session.session_id, "d": "secret-words not json"},
    )
    await session.add_items([msg(2)])
    with caplog.at_level(logging.DEBUG):
        for read in (session.get_items(), session.get_items(2)):
            with pytest.raises(CorruptRowError, match="not valid JSON") as caught:
                await read
            assert "secret" not in str(caught.value)
        assert await session.get_items(1) == [msg(2)]
        assert await session.pop_item() == msg(2)
        with pytest.raises(CorruptRowError):
            await session.pop_item()  # refused, and left in place
        assert len(db.query(f"SELECT id FROM {db.messages}")) == 2
    assert "secret" not in caplog.text


async def test_by_default_non_ascii_is_escaped_as_the_sdk_stores_it(db: Db) -> None:
    session = db.session(sid())
    await session.add_items([{"content": "héllo"}])
    raw = db.query(f"SELECT message_data FROM {db.messages}")[0][0]
    assert raw == json.dumps({"content": "héllo"}, separators=(",", ":"))
    assert await session.get_items() == [{"content": "héllo"}]


async def test_ensure_ascii_false_stores_text_as_it_is(db: Db) -> None:
    session = db.session(sid(), ensure_ascii=False)
    await session.add_items([{"content": "héllo"}])
    raw = db.query(f"SELECT message_data FROM {db.messages}")[0][0]
    assert raw == '{"content":"héllo"}'
    assert await session.get_items() == [{"content": "héllo"}]


# -- item addressing ----------------------------------------------------------------------


async def test_stored_items_carry_growing_ids_and_page_with_before_id(db: Db) -> None:
    session = db.session(sid())
    await session.add_items([msg(n) for n in range(6)])
    stored = await session.get_stored_items()
    ids = [x.id for x in stored]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert [x.item for x in stored] == [msg(n) for n in range(6)]
    page = await session.get_stored_items(2, before_id=ids[3])
    assert page == stored[1:3]
    assert await session.get_stored_items(before_id=ids[2]) == stored[:2]
    assert await session.get_stored_items(1) == stored[-1:]


async def test_delete_and_replace_by_id_touch_only_this_session(db: Db) -> None:
    mine, theirs = db.session(sid()), db.session(sid())
    await mine.add_items([msg(n) for n in range(4)])
    await theirs.add_items([msg(10)])
    my_ids = [x.id for x in await mine.get_stored_items()]
    their_id = (await theirs.get_stored_items())[0].id

    assert await mine.replace_stored_items({my_ids[1]: {"role": "user", "content": "new"}}) == 1
    assert await mine.replace_stored_items({their_id: msg(99)}) == 0
    after = await mine.get_stored_items()
    assert [x.id for x in after] == my_ids
    assert [x.item for x in after] == [msg(0), {"role": "user", "content": "new"}, msg(2), msg(3)]

    with pytest.raises(InvalidItemError):
        await mine.replace_stored_items({my_ids[0]: msg(7), my_ids[2]: {"x": {1, 2}}})
    assert [x.item for x in await mine.get_stored_items()] == [x.item for x in after]

    assert await mine.delete_stored_items([my_ids[0], my_ids[2], their_id, 10**9]) == 2
    assert await mine.get_items() == [{"role": "user", "content": "new"}, msg(3)]
    assert await theirs.get_items() == [msg(10)]
    assert await mine.delete_stored_items([]) == 0


async def test_replace_and_delete_many_ids_at_once(db: Db) -> None:
    session = db.session(sid())
    await session.add_items([msg(n) for n in range(2500)])
    stored = await session.get_stored_items()
    replaced = await session.replace_stored_items({x.id: {"n": i} for i, x in enumerate(stored)})
    assert replaced == 2500
    assert await session.get_items(3) == [{"n": 2497}, {"n": 2498}, {"n": 2499}]
    assert await session.delete_stored_items([x.id for x in stored[:2400]]) == 2400
    assert len(await session.get_items()) == 100
