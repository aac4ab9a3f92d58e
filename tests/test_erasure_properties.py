"""Crypto-shredding under any sequence of add / erase / rotate / backup / restore (issue 16).

Three sessions share one SQLite data store; their seeds live in a separate SQLiteKeyStore,
which a restore never touches. A "backup" copies the data store's files; a "restore" copies
them back, bringing back rows of sessions erased since. The model keeps each session's rows
as (seed generation, content) and the generation its key store holds now (None once erased).
A session whose rows are all of the current generation reads exactly its model contents;
one holding a row of a destroyed generation never reads: SessionErasedError when the key
store holds no seed for it, TamperedItemError (the parent class: "sealed under another seed
than the session's") when the session was written again after the erase.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import AdvancedSQLiteSession, SQLiteKeyStore, SQLiteSession, open_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encmem import (
    EncryptedSession,
    Keyring,
    SessionErasedError,
    TamperedItemError,
    erase_session,
    generate_key,
    rotate_store,
)

from .budget import examples
from .test_erasure import copy_database

SESSIONS = ("alpha-0000001", "bravo-0000002", "charlie-00003")

operation = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2), st.integers(1, 3)),
    st.tuples(st.just("erase"), st.integers(0, 2)),
    st.tuples(st.just("rotate")),
    st.tuples(st.just("backup")),
    st.tuples(st.just("restore")),
)


def scripts(part: int) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Random operations around one backup and one later restore (so every run has both)."""
    parts = st.lists(operation, max_size=part)
    return st.builds(
        lambda a, b, c: [*a, ("backup",), *b, ("restore",), *c], parts, parts, parts
    )


Rows = dict[str, list[tuple[int, str]]]


@dataclass
class Model:
    rows: Rows = field(default_factory=lambda: {sid: [] for sid in SESSIONS})
    seed: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(SESSIONS))
    backup: Rows | None = None
    # Erased sessions whose restored rows a rotation went over: it gives them a new seed
    # (test_rotating_restored_leftovers_keeps_them_reported_as_erased, an xfail): the model
    # accepts either outcome for them until their next write or erase.
    maybe_seeded: set[str] = field(default_factory=set)
    generations: int = 0
    written: int = 0

    def add(self, session_id: str, count: int) -> list[str]:
        generation = self.seed[session_id]
        if generation is None:  # the first write after an erase makes a new seed
            self.maybe_seeded.discard(session_id)
            self.generations += 1
            generation = self.seed[session_id] = self.generations
        texts = [f"{session_id} #{self.written + n}" for n in range(count)]
        self.written += count
        self.rows[session_id] += [(generation, text) for text in texts]
        return texts

    def readable(self, session_id: str) -> bool:
        return all(gen == self.seed[session_id] for gen, _ in self.rows[session_id])

    def destroyed(self) -> set[str]:
        """Every text sealed under a seed that no longer exists (what must never be read)."""
        live = set(self.seed.values())
        every = [*self.rows.values(), *(self.backup or {}).values()]
        return {text for rows in every for gen, text in rows if gen not in live}


@dataclass
class Run:
    folder: Path
    kind: str
    key_store: SQLiteKeyStore
    keyring: Keyring = field(default_factory=lambda: Keyring(generate_key()))
    model: Model = field(default_factory=Model)

    @property
    def live(self) -> Path:
        return self.folder / "store.db"

    def session(self, session_id: str, **options: Any) -> EncryptedSession:
        if self.kind == "advanced":
            inner: SQLiteSession = AdvancedSQLiteSession(
                session_id=session_id, db_path=self.live, create_tables=True
            )
        else:
            inner = SQLiteSession(session_id, self.live)
        return EncryptedSession(
            session_id, inner, self.keyring, ttl=None, key_store=self.key_store, **options
        )


async def apply(run: Run, op: tuple[Any, ...]) -> None:
    model = run.model
    if op[0] == "add":
        session_id = SESSIONS[op[1]]
        texts = model.add(session_id, op[2])
        async with run.session(session_id) as session:
            await session.add_items([{"role": "user", "content": t} for t in texts])
    elif op[0] == "erase":
        session_id = SESSIONS[op[1]]
        async with await open_store(run.live) as store:
            receipt = await erase_session(store, session_id, key_store=run.key_store)
        assert receipt.complete, receipt.as_dict()
        if session_id not in model.maybe_seeded:
            assert receipt.seed_destroyed == (model.seed[session_id] is not None)
        model.maybe_seeded.discard(session_id)
        assert receipt.rows_removed.get("agent_messages", 0) == len(model.rows[session_id])
        model.rows[session_id], model.seed[session_id] = [], None
    elif op[0] == "rotate":
        run.keyring = run.keyring.with_primary(generate_key())
        async with await open_store(run.live) as store:
            await rotate_store(store, run.keyring, key_store=run.key_store)
        model.maybe_seeded |= {s for s in SESSIONS if model.rows[s] and model.seed[s] is None}
    elif op[0] == "backup":
        copy_database(run.live, run.folder / "backup.db")
        model.backup = {sid: list(rows) for sid, rows in model.rows.items()}
    elif op[0] == "restore" and model.backup is not None:
        copy_database(run.folder / "backup.db", run.live)
        model.rows = {sid: list(rows) for sid, rows in model.backup.items()}


async def check(run: Run) -> None:
    """Every session reads as the model says; no destroyed text is ever returned."""
    model, never = run.model, run.model.destroyed()
    for session_id in SESSIONS:
        async with run.session(session_id) as session:
            if model.readable(session_id):
                items = await session.get_items()
                assert [i["content"] for i in items] == [t for _, t in model.rows[session_id]]
                continue
            erased = model.seed[session_id] is None and session_id not in model.maybe_seeded
            expected = SessionErasedError if erased else TamperedItemError
            with pytest.raises(expected):
                await session.get_items()
        async with run.session(session_id, on_invalid="skip") as session:
            returned = {i["content"] for i in await session.get_items()}
        assert not returned & never, f"{session_id} read erased items back"


async def play(folder: Path, kind: str, ops: list[tuple[Any, ...]]) -> None:
    async with SQLiteKeyStore(folder / "keys.db") as key_store:
        run = Run(folder, kind, key_store)
        for index in range(len(SESSIONS)):  # every session starts with items
            await apply(run, ("add", index, 2))
        for op in ops:
            await apply(run, op)
            await check(run)


def run_in_folder(kind: str, ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(play(Path(folder), kind, ops))


PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(PROPERTY, max_examples=examples(25))
@given(ops=scripts(4))
def test_erased_sessions_never_read_and_the_others_always_do(ops: list[tuple[Any, ...]]) -> None:
    run_in_folder("sqlite", ops)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "advanced"])
@settings(PROPERTY, max_examples=examples(60))
@given(ops=scripts(8))
def test_longer_runs_on_both_sqlite_backends(kind: str, ops: list[tuple[Any, ...]]) -> None:
    run_in_folder(kind, ops)



async def test_rotating_restored_leftovers_keeps_them_reported_as_erased(tmp_path: Path) -> None:
    """The shortest run the property above found: backup, erase, restore, rotate."""
    async with SQLiteKeyStore(tmp_path / "keys.db") as key_store:
        run = Run(tmp_path, "sqlite", key_store)
        await apply(run, ("add", 0, 2))
        for op in [("backup",), ("erase", 0), ("restore",)]:
            await apply(run, op)
        assert await key_store.get_seed(SESSIONS[0]) is None
        run.keyring = run.keyring.with_primary(generate_key())
        async with await open_store(run.live) as store:
            rotated = await rotate_store(store, run.keyring, key_store=key_store)
        assert (rotated["changed"], rotated["unreadable"]) == (0, 2)  # nothing re-sealed
        async with run.session(SESSIONS[0]) as session:
            with pytest.raises(TamperedItemError) as refused:
                await session.get_items()
        assert await key_store.get_seed(SESSIONS[0]) is None, "rotation made a seed"
        assert isinstance(refused.value, SessionErasedError)
