"""Tamper-evident history under any sequence of legitimate operations, checked against a model.

Operations: add (by the session, or by a second EncryptedSession object on the same session
and file), pop, tick the injected clock, purge expired items, rotate to a new primary key,
branch from a turn and switch branches (advanced backend), clear. Afterwards every branch
reads back as the model says and ``verify_history()`` is clean; the same run followed by any
one attack (raw ``sqlite3``, no key) is detected.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encmem import (
    EncryptedSession,
    HistoryTamperedError,
    Keyring,
    TamperedItemError,
    generate_key,
)

from .budget import examples
from .history_attacks import (
    BACKENDS,
    HEADED,
    HEADS,
    MESSAGES,
    SID,
    STRUCTURE,
    append_structure,
    connect,
    snapshot,
)

TTL = 100
START = 1_900_000_000

operation = st.one_of(
    st.tuples(
        st.just("add"), st.sampled_from([0, 1]), st.lists(st.booleans(), min_size=1, max_size=3)
    ),
    st.tuples(st.just("pop")),
    st.tuples(st.just("tick"), st.sampled_from([1, 40, 70, 150])),
    st.tuples(st.just("purge")),
    st.tuples(st.just("rotate")),
    st.tuples(st.just("branch"), st.integers(0, 5)),
    st.tuples(st.just("switch"), st.integers(0, 5)),
    st.tuples(st.just("clear")),
)
operations = st.lists(operation, max_size=12)


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


@dataclass
class Model:
    """Each branch's items as (content, seal second), oldest first, expired ones included
    until a purge or a pop removes them."""

    clock: Clock
    branches: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: {"main": []})
    current: str = "main"
    roles: dict[str, str] = field(default_factory=dict)

    def expired(self, sealed: int) -> bool:
        return self.clock.now >= sealed + TTL + 1

    def live(self, branch: str) -> list[dict[str, str]]:
        return [
            {"role": self.roles[c], "content": c}
            for c, sealed in self.branches[branch]
            if not self.expired(sealed)
        ]

    def pop(self) -> dict[str, str] | None:
        items = self.branches[self.current]
        while items:
            content, sealed = items.pop()
            if not self.expired(sealed):
                return {"role": self.roles[content], "content": content}
        return None


@dataclass
class Run:
    """A store, its two writers, the model, and every row text the session ever stored."""

    path: Path
    advanced: bool
    writers: list[EncryptedSession]
    backends: list[Any]
    model: Model
    ever: set[str] = field(default_factory=set)
    keys: dict[str, str] = field(default_factory=lambda: {"k0": generate_key()})

    @property
    def main(self) -> EncryptedSession:
        return self.writers[0]

    def remember_rows(self) -> None:
        with connect(self.path) as conn:
            rows = conn.execute(f"SELECT message_data FROM {MESSAGES} WHERE session_id = ?", (SID,))
            self.ever.update(str(r[0]) for r in rows)


async def _apply(run: Run, op: tuple[Any, ...], counter: list[int]) -> None:
    model, kind = run.model, op[0]
    if kind == "add":
        writer, roles = op[1], op[2]
        items = []
        for user in roles:
            counter[0] += 1
            content = f"i{counter[0]}"
            model.roles[content] = "user" if user else "assistant"
            items.append({"role": model.roles[content], "content": content})
        await run.writers[writer].add_items(items)
        branch = model.current if writer == 0 else "main"
        model.branches[branch] += [(i["content"], int(model.clock.now)) for i in items]
    elif kind == "pop":
        assert await run.main.pop_item() == model.pop()
    elif kind == "tick":
        model.clock.now += op[1]
    elif kind == "purge":
        await run.main.purge_expired()
        for name, items in model.branches.items():
            model.branches[name] = [(c, s) for c, s in items if not model.expired(s)]
    elif kind == "rotate":
        kid = f"k{len(run.keys)}"
        run.keys = {kid: generate_key(), **run.keys}
        for writer in run.writers:
            writer.keyring = Keyring(run.keys)
        await run.main.rotate_keys()
    elif kind == "branch" and run.advanced:
        turns = await run.main.get_conversation_turns()
        if turns:
            chosen = turns[op[1] % len(turns)]
            name = await run.main.create_branch_from_turn(chosen["turn"])
            items = model.branches[model.current]
            cut = [c for c, _ in items].index(chosen["full_content"])
            model.branches[name], model.current = items[:cut], name
    elif kind == "switch" and run.advanced:
        name = (
            op[1] if isinstance(op[1], str) else sorted(model.branches)[op[1] % len(model.branches)]
        )
        await run.backends[0].switch_to_branch(name)
        model.current = name
    elif kind == "clear":
        await run.main.clear_session()
        model.branches, model.current = {"main": []}, "main"


async def _play(path: Path, backend: str, ops: list[tuple[Any, ...]]) -> Run:
    spec = BACKENDS[backend]
    clock = Clock()
    backends = [spec.open(path, SID), spec.open(path, SID)]
    keys = {"k0": generate_key()}
    writers = [
        EncryptedSession(underlying_session=b, encryption_key=Keyring(keys), ttl=TTL, clock=clock)
        for b in backends
    ]
    run = Run(path, spec.advanced, writers, backends, Model(clock), keys=keys)
    for writer in writers:
        await writer.get_items(1)  # connections open, tables created
    counter = [0]
    for op in ops:
        await _apply(run, op, counter)
        run.remember_rows()
    return run


async def _check_clean(run: Run) -> None:
    for name in run.model.branches if run.advanced else ["main"]:
        branch = name if run.advanced else None
        assert await run.main.get_items(branch_id=branch) == run.model.live(name), name
        assert await run.main.verify_history(branch_id=branch) == len(run.model.branches[name])
        anchor = await run.main.history_head(branch)
        assert await run.main.verify_history(anchor, branch_id=branch) == len(
            run.model.branches[name]
        )


async def _close(run: Run) -> None:
    for backend in run.backends:
        await backend.close()


def _run_with_file(job: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(job(Path(folder) / "history.db"))


PROPERTY = settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("backend", HEADED)
@PROPERTY
@given(ops=operations)
def test_legitimate_operations_keep_verifying(backend: str, ops: list[tuple[Any, ...]]) -> None:
    async def job(path: Path) -> None:
        run = await _play(path, backend, ops)
        try:
            await _check_clean(run)
        finally:
            await _close(run)

    _run_with_file(job)


# -- the same runs, then one attack --------------------------------------------------------------


def _main_rows(conn: sqlite3.Connection, advanced: bool) -> list[tuple[int, str]]:
    if advanced:
        query = (
            f"SELECT m.id, m.message_data FROM {STRUCTURE} s JOIN {MESSAGES} m "
            "ON m.id = s.message_id WHERE s.session_id = ? AND s.branch_id = 'main' "
            "ORDER BY s.sequence_number"
        )
    else:
        query = f"SELECT id, message_data FROM {MESSAGES} WHERE session_id = ? ORDER BY id"
    return [(int(i), str(text)) for i, text in conn.execute(query, (SID,))]


def _append(conn: sqlite3.Connection, advanced: bool, text: str) -> None:
    cursor = conn.execute(
        f"INSERT INTO {MESSAGES} (session_id, message_data) VALUES (?, ?)", (SID, text)
    )
    if advanced:
        role = json.loads(text).get("role", "message")
        append_structure(conn, int(cursor.lastrowid or 0), role, "main")


def _attacks(conn: sqlite3.Connection, run: Run) -> dict[str, Any]:
    """The attacks that apply to this store: name -> apply(draw)."""
    rows = _main_rows(conn, run.advanced)
    texts = {text for _, text in rows}
    index = st.integers(0, len(rows) - 1)
    found: dict[str, Any] = {}

    def swap(draw: Any) -> None:
        i, j = draw(st.lists(index, min_size=2, max_size=2, unique=True))
        for (item_id, _), (_, text) in ((rows[i], rows[j]), (rows[j], rows[i])):
            conn.execute(f"UPDATE {MESSAGES} SET message_data = ? WHERE id = ?", (text, item_id))

    def delete(draw: Any) -> None:
        item_id = rows[draw(index)][0]
        if run.advanced:
            conn.execute(
                f"DELETE FROM {STRUCTURE} WHERE message_id = ? AND branch_id = 'main'", (item_id,)
            )
        else:
            conn.execute(f"DELETE FROM {MESSAGES} WHERE id = ?", (item_id,))

    def retype(draw: Any) -> None:
        item_id = rows[draw(index)][0]
        conn.execute(
            f"UPDATE {STRUCTURE} SET message_type = CASE message_type WHEN 'user' "
            "THEN 'assistant' ELSE 'user' END WHERE message_id = ? AND branch_id = 'main'",
            (item_id,),
        )

    if len(rows) >= 2:
        found["reorder rows"] = swap
    if rows:
        found["duplicate a row"] = lambda draw: _append(conn, run.advanced, rows[draw(index)][1])
        found["delete a row"] = delete
        found["delete the head"] = lambda draw: conn.execute(
            f"DELETE FROM {HEADS} WHERE session_id = ? AND branch_id = 'main'", (SID,)
        )
    leftovers = sorted(run.ever - {t for _, t in rows})
    if leftovers:
        found["re-insert an old row"] = lambda draw: _append(
            conn, run.advanced, draw(st.sampled_from(leftovers))
        )
    if run.advanced:
        elsewhere = sorted(
            str(r[0])
            for r in conn.execute(
                f"SELECT m.message_data FROM {STRUCTURE} s JOIN {MESSAGES} m "
                "ON m.id = s.message_id WHERE s.session_id = ? AND s.branch_id != 'main'",
                (SID,),
            )
            if str(r[0]) not in texts
        )
        if elsewhere:
            found["copy from a branch"] = lambda draw: _append(
                conn, True, draw(st.sampled_from(elsewhere))
            )
        if rows:
            found["retype a message"] = retype
    return found


async def _detected(run: Run, name: str) -> None:
    """A fresh reader in raise mode sees the attack; nothing in the store changes."""
    before = snapshot(run.path)
    backend = BACKENDS["advanced-sqlite" if run.advanced else "sqlite"].open(run.path, SID)
    reader = EncryptedSession(
        underlying_session=backend,
        encryption_key=Keyring(run.keys),
        ttl=TTL,
        clock=run.model.clock,
    )
    try:
        if name == "retype a message":  # structure rows: checked by the turn queries
            with pytest.raises(HistoryTamperedError) as caught:
                await reader.get_conversation_turns(branch_id="main")
            assert caught.value.kind == "forged structure"
        else:
            with pytest.raises(TamperedItemError) as caught:
                await reader.verify_history(branch_id="main" if run.advanced else None)
            if isinstance(caught.value, HistoryTamperedError):
                assert caught.value.kind in HistoryTamperedError.KINDS
    finally:
        await backend.close()
    assert snapshot(run.path) == before


ATTACKS = {
    "reorder rows": [],
    "duplicate a row": [],
    "delete a row": [],
    "delete the head": [],
    "re-insert an old row": [("add", 0, [True]), ("pop",)],
    "copy from a branch": [
        ("add", 0, [True, False, True]),
        ("branch", 1),
        ("add", 0, [False]),
        ("switch", "main"),
    ],
    "retype a message": [],
}
"""Each attack, and the operations that make sure the store has what it needs (after the
generated ones; a final write by the second writer makes sure main holds two items)."""
ADVANCED_ONLY = {"copy from a branch", "retype a message"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "name"),
    [
        (backend, name)
        for backend in HEADED
        for name in ATTACKS
        if BACKENDS[backend].advanced or name not in ADVANCED_ONLY
    ],
)
@settings(PROPERTY, max_examples=examples(15))
@given(ops=operations, data=st.data())
def test_any_single_attack_after_legitimate_operations_is_detected(
    backend: str, name: str, ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    async def job(path: Path) -> None:
        run = await _play(path, backend, [*ops, *ATTACKS[name], ("add", 1, [True, False])])
        try:
            await _check_clean(run)
        finally:
            await _close(run)
        with connect(path) as conn:
            _attacks(conn, run)[name](data.draw)
        await _detected(run, name)

    _run_with_file(job)
