"""The attack matrix of tamper-evident history on the real PostgreSQL server.

The attacks of tests/history_attacks.py, done with plain SQL on a connection of the
attacker's own (tests/history_attacks_pg.py), x ``SQLAlchemySession`` and
``AdvancedSQLAlchemySession`` on postgresql+asyncpg x raise / skip mode x full read /
``get_items(limit=2)`` / ``verify_history()`` / turn query, asserted as the SQLite matrix
(tests/test_history_attacks.py) asserts them: the right error and ``kind``, nothing deleted
or changed, and skip mode returning only true items in their true order. Then a whole-store
rollback that only an anchor catches, and a hypothesis model of legitimate operations.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encmem import EncryptedSession, HistoryTamperedError, Keyring, TamperedItemError, generate_key

from .budget import examples
from .history_attacks import ATTACKS, SID, TRUE_MAIN, Attack, attacks_for
from .history_attacks_pg import PG_BACKENDS, Attacker, PgConnection, PgTemplate, build, tables
from .pg import pg_url
from .stores_advanced_sqlalchemy import PgSchema
from .test_history_attacks import (
    KEYRING,
    READS,
    _check_error,
    _check_skipped,
    _read,
    _truth,
    _undetectable,
)
from .test_history_properties import TTL, Clock, Model, Run, _apply, _check_clean, _close

pytestmark = pytest.mark.pg

Stored = dict[str, list[tuple[Any, ...]]]
Attacked = Callable[[str, Attack], tuple[PgTemplate, Stored]]


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    """A connection of the attacker's own, for the module."""
    own = Attacker(pg_url())
    try:
        yield own
    finally:
        own.close()


@pytest.fixture(scope="module")
def attacked(attacker: Attacker) -> Iterator[Attacked]:
    """One attacked store per (backend, attack), shared by the reads and modes of that attack
    (every test asserts that its read changed nothing); a backend's stores are built together
    on first use."""
    built: dict[str, dict[str, tuple[PgTemplate, Stored]]] = {}

    def get(backend: str, chosen: Attack) -> tuple[PgTemplate, Stored]:
        if backend not in built:
            spec = PG_BACKENDS[backend]
            chosen_ones = attacks_for(spec)  # type: ignore[arg-type]
            templates = build(spec, KEYRING, attacker, len(chosen_ones))
            pairs = list(zip(chosen_ones, templates, strict=True))
            stores = built[backend] = {a.name: (template, {}) for a, template in pairs}
            for a, template in pairs:
                attacker.attack(template, a)
                stores[a.name] = (template, attacker.snapshot(template.schema))
        return built[backend][chosen.name]

    yield get
    for stores in built.values():
        for template, _ in stores.values():
            template.schema.drop()


def _cases() -> list[Any]:
    return [
        pytest.param(name, chosen, read, id=f"{name}-{chosen.name.replace(' ', '_')}-{read}")
        for name, backend in PG_BACKENDS.items()
        for chosen in attacks_for(backend)  # type: ignore[arg-type]
        for read in READS
        if read != "turns" or backend.advanced
    ]


def _session(template: PgTemplate, mode: str) -> tuple[Any, EncryptedSession]:
    underlying = template.open()
    session = EncryptedSession(
        underlying_session=underlying, encryption_key=KEYRING, ttl=None, on_invalid=mode
    )
    return underlying, session


@pytest.mark.parametrize(("backend", "chosen", "read"), _cases())
@pytest.mark.parametrize("mode", ["raise", "skip"])
async def test_attack_is_detected_on_postgresql(
    attacker: Attacker,
    attacked: Attacked,
    caplog: pytest.LogCaptureFixture,
    backend: str,
    chosen: Attack,
    read: str,
    mode: str,
) -> None:
    template, before = attacked(backend, chosen)
    assert before, "the attacked store was not built"
    underlying, session = _session(template, mode)
    try:
        if _undetectable(chosen, read):
            assert await _read(session, read) == _truth(read)
        elif mode == "raise" or read == "verify":  # verify_history() never skips
            with pytest.raises(TamperedItemError) as caught:
                await _read(session, read)
            _check_error(caught.value, chosen, before)
        else:
            with caplog.at_level(logging.WARNING, logger="encmem"):
                found = await _read(session, read)
            _check_skipped(found, chosen, read, caplog)
    finally:
        await underlying.close()
    assert attacker.snapshot(template.schema) == before, "a read changed the store"


def test_the_pg_matrix_covers_the_attacks_of_the_issue() -> None:
    """Every attack the issue lists (and the SQLite matrix runs) runs here on both backends."""
    names = {chosen.name for chosen in ATTACKS}
    assert {
        "reorder rows",
        "duplicate a row",
        "delete from the middle",
        "re-insert a popped row",
        "cut the tail",
        "delete the head",
        "copy from a branch",
        "assistant message made a user turn",
        "user turn hidden",
        "roll back a row",
    } <= names
    cases = {(p.values[0], p.values[1].name) for p in _cases()}
    for name, backend in PG_BACKENDS.items():
        for chosen in ATTACKS:
            assert ((name, chosen.name) in cases) == (backend.advanced or not chosen.advanced_only)


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(PG_BACKENDS))
@pytest.mark.parametrize("mode", ["raise", "skip"])
async def test_pop_never_takes_an_item_the_head_does_not_name(
    attacker: Attacker, backend: str, mode: str
) -> None:
    """pop_item() checks the newest item against the head: when an attack touched the newest
    row or the head it refuses and deletes nothing, in either mode; when the attack lies
    deeper, it pops the true newest item. Every attack, each on a store of its own."""
    spec = PG_BACKENDS[backend]
    chosen_ones = attacks_for(spec)  # type: ignore[arg-type]
    templates = build(spec, KEYRING, attacker, len(chosen_ones))
    try:
        for chosen, template in zip(chosen_ones, templates, strict=True):
            attacker.attack(template, chosen)
            before = attacker.snapshot(template.schema)
            underlying, session = _session(template, mode)
            try:
                if chosen.depth == 1 and not chosen.structure_only:
                    with pytest.raises(HistoryTamperedError) as caught:
                        await session.pop_item()
                    assert caught.value.kind in chosen.kinds | {"head mismatch"}, chosen.name
                    assert attacker.snapshot(template.schema) == before, chosen.name
                else:
                    assert await session.pop_item() == TRUE_MAIN[-1], chosen.name
                    after = attacker.snapshot(template.schema)["agent_messages"]
                    assert len(after) == len(before["agent_messages"]) - 1, chosen.name
            finally:
                await underlying.close()
    finally:
        for template in templates:
            template.schema.drop()


@pytest.mark.parametrize("backend", list(PG_BACKENDS))
async def test_two_writers_racing_on_postgresql_lose_nothing_and_verify(backend: str) -> None:
    """Two sessions on engines of their own append to one new session at once (the first
    writes race for the session row and the head): every item is stored once, in each
    writer's order, and the chain verifies."""
    spec, schema = PG_BACKENDS[backend], PgSchema()
    opened = [
        spec.cls.from_url(SID, url=schema.url, engine_kwargs=kwargs, create_tables=True)
        for kwargs in (schema.engine_kwargs(), schema.engine_kwargs(pool_size=2))
    ]
    try:
        writers = [
            EncryptedSession(underlying_session=u, encryption_key=KEYRING, ttl=None) for u in opened
        ]
        await asyncio.gather(*(w.get_items(1) for w in writers))  # tables made, no rows yet

        async def write(name: str, writer: EncryptedSession) -> list[str]:
            contents = []
            for n in range(12):
                batch = [f"{name}{n}.{k}" for k in range(1 + n % 2)]
                await writer.add_items([{"role": "user", "content": c} for c in batch])
                contents += batch
            return contents

        a, b = await asyncio.gather(write("a", writers[0]), write("b", writers[1]))
        stored = [item["content"] for item in await writers[0].get_items()]
        assert sorted(stored) == sorted(a + b)
        assert [c for c in stored if c.startswith("a")] == a
        assert [c for c in stored if c.startswith("b")] == b
        for writer in writers:
            assert await writer.verify_history() == len(a) + len(b)
    finally:
        for underlying in opened:
            await underlying.close()
        schema.drop()


# -- a whole-store rollback: consistent, so only an anchor kept elsewhere catches it -----------


def _save(conn: PgConnection, schema: PgSchema) -> list[str]:
    """Copy every table of the schema aside (``bk_<table>``); return the tables, parents first."""
    names = tables(conn, schema)
    first = ["agent_sessions", "agent_messages"]
    order = [*first, *(name for name in names if name not in first)]
    assert sorted(order) == names, names
    for name in order:
        conn.execute(f"CREATE TABLE bk_{name} AS SELECT * FROM {name}")
    return order


def _restore(conn: PgConnection, order: list[str]) -> None:
    """Put every table back as :func:`_save` found it, rows and heads together."""
    conn.execute(f"TRUNCATE {', '.join(order)}")
    for name in order:
        conn.execute(f"INSERT INTO {name} SELECT * FROM bk_{name}")
        conn.execute(f"DROP TABLE bk_{name}")


@pytest.mark.parametrize("backend", list(PG_BACKENDS))
async def test_a_rolled_back_store_is_caught_by_an_anchor_only(
    attacker: Attacker, backend: str
) -> None:
    """Rows and heads rolled back together are a consistent older history: nothing inside the
    database can tell (documented); an anchor kept elsewhere can."""
    (template,) = build(PG_BACKENDS[backend], KEYRING, attacker)
    schema = template.schema
    try:
        underlying, session = _session(template, "raise")
        try:
            old_anchor = await session.history_head()
            order = attacker.transaction(schema, lambda conn: _save(conn, schema))
            await session.add_items([{"role": "user", "content": "m7"}])
            anchor = await session.history_head()
            assert anchor != old_anchor
            assert await session.verify_history(anchor) == len(TRUE_MAIN) + 1
        finally:
            await underlying.close()
        attacker.transaction(schema, lambda conn: _restore(conn, order))
        before = attacker.snapshot(schema)
        underlying, session = _session(template, "skip")
        try:
            assert await session.verify_history() == len(TRUE_MAIN)
            assert await session.verify_history(old_anchor) == len(TRUE_MAIN)
            assert await session.get_items() == TRUE_MAIN
            with pytest.raises(HistoryTamperedError) as caught:
                await session.verify_history(anchor)
            assert caught.value.kind == "head mismatch" and caught.value.session_id == SID
        finally:
            await underlying.close()
        assert attacker.snapshot(schema) == before
    finally:
        schema.drop()


# -- legitimate operations on PostgreSQL keep verifying, against a model ------------------------

legitimate = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from([0, 1]),
            st.lists(st.booleans(), min_size=1, max_size=3),
        ),
        st.tuples(st.just("pop")),
        st.tuples(st.just("tick"), st.sampled_from([1, 70, 150])),
        st.tuples(st.just("purge")),
        st.tuples(st.just("rotate")),
        st.tuples(st.just("branch"), st.integers(0, 5)),
        st.tuples(st.just("switch"), st.integers(0, 5)),
        st.tuples(st.just("clear")),
    ),
    max_size=10,
)


async def _play(schema: PgSchema, backend: str, ops: list[tuple[Any, ...]]) -> None:
    spec = PG_BACKENDS[backend]
    clock = Clock()
    keys = {"k0": generate_key()}
    backends = [spec.open(schema, SID), spec.open(schema, SID)]
    writers = [
        EncryptedSession(underlying_session=b, encryption_key=Keyring(keys), ttl=TTL, clock=clock)
        for b in backends
    ]
    run = Run(None, spec.advanced, writers, backends, Model(clock), keys=keys)  # type: ignore[arg-type]
    try:
        counter = [0]
        for op in ops:
            await _apply(run, op, counter)
        await _check_clean(run)
    finally:
        await _close(run)


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(PG_BACKENDS))
@settings(max_examples=examples(8), deadline=None)
@given(ops=legitimate)
def test_legitimate_operations_keep_verifying_on_postgresql(
    backend: str, ops: list[tuple[Any, ...]]
) -> None:
    schema = PgSchema()
    try:
        asyncio.run(_play(schema, backend, ops))
    finally:
        schema.drop()
