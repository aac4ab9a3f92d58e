"""Random add / pop / branch / switch / delete / clear against a model of branches as lists.

After every step, every branch the model knows reads back exactly, plain and encrypted.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encmem import EncryptedSession, Keyring

from . import stores as _stores  # noqa: F401  (the store registry loads before its members)
from .budget import examples
from .conftest import TEST_KEY
from .stores_advanced import structure_problems
from .stores_advanced_sqlalchemy import ADVANCED_PLACES, Place

NAMES = ["a", "b", "main", None]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.sampled_from(["user", "assistant", "tool"]),
                                           min_size=1, max_size=4)),
        st.tuples(st.just("pop")),
        st.tuples(st.just("branch"), st.integers(min_value=0, max_value=4),
                  st.sampled_from(NAMES)),
        st.tuples(st.just("switch"), st.sampled_from(["a", "b", "main", "zzz"])),
        st.tuples(st.just("delete"), st.sampled_from(["a", "b", "main"]), st.booleans()),
        st.tuples(st.just("clear")),
    ),
    max_size=18,
)


class Model:
    """Branches as lists of items, the current branch and the names ever used."""

    def __init__(self) -> None:
        self.branches: dict[str, list[dict[str, Any]]] = {"main": []}
        self.current = "main"
        self.used: set[str] = set()

    def user_positions(self) -> list[int]:
        return [i for i, item in enumerate(self.branches[self.current])
                if item.get("role") == "user"]


def make_item(kind: str, n: int) -> dict[str, Any]:
    if kind == "tool":
        return {"type": "function_call", "name": "tool", "call_id": f"c{n}", "arguments": "{}"}
    return {"role": kind, "content": f"{kind} {n}"}


async def step(session: Any, model: Model, op: tuple[Any, ...], counter: Any) -> None:
    kind = op[0]
    if kind == "add":
        batch = [make_item(k, next(counter)) for k in op[1]]
        await session.add_items(batch)
        model.branches[model.current].extend(batch)
    elif kind == "pop":
        expected = model.branches[model.current].pop() if model.branches[model.current] else None
        assert await session.pop_item() == expected
    elif kind == "branch":
        _, turn, name = op
        positions = model.user_positions()
        taken = name is not None and (name == "main" or name in model.used)
        if not 1 <= turn <= len(positions) or taken:
            with pytest.raises(ValueError):
                await session.create_branch_from_turn(turn, name)
            return
        created = await session.create_branch_from_turn(turn, name)
        assert name is None or created == name
        assert created not in model.branches and created not in model.used
        cut = positions[turn - 1]
        model.branches[created] = list(model.branches[model.current][:cut])
        model.used.add(created)
        model.current = created
    elif kind == "switch":
        if op[1] in model.branches:
            await session.switch_to_branch(op[1])
            model.current = op[1]
        else:
            with pytest.raises(ValueError):
                await session.switch_to_branch(op[1])
    elif kind == "delete":
        _, name, force = op
        refused = name == "main" or name not in model.branches
        refused = refused or (name == model.current and not force)
        if refused:
            with pytest.raises(ValueError):
                await session.delete_branch(name, force=force)
            return
        await session.delete_branch(name, force=force)
        del model.branches[name]
        if model.current == name:
            model.current = "main"
    elif kind == "clear":
        await session.clear_session()
        model.branches = {"main": []}
        model.current = "main"
        model.used = set()


async def check(session: Any, model: Model) -> None:
    for branch, items in model.branches.items():
        assert await session.get_items(branch_id=branch) == items, branch
        assert await session.get_items(2, branch_id=branch) == items[-2:], branch
    assert await session.get_items() == model.branches[model.current]
    listed = await session.list_branches()
    if listed:  # a session nobody has written to has no branches yet
        assert {b["branch_id"] for b in listed} == set(model.branches)
        assert [b["branch_id"] for b in listed if b["is_current"]] == [model.current]
    turns = await session.get_conversation_turns()
    assert [t["full_content"] for t in turns] == [
        item["content"] for item in model.branches[model.current] if item.get("role") == "user"
    ]


async def run(place: Place, ops: list[tuple[Any, ...]], encrypted: bool) -> None:
    backend = place.backend(uuid.uuid4().hex)
    session: Any = backend
    if encrypted:
        keyring = Keyring({"test-1": TEST_KEY})
        session = EncryptedSession(underlying_session=backend, encryption_key=keyring)
    model, counter = Model(), itertools.count()
    try:
        for op in ops:
            await step(session, model, op, counter)
            await check(session, model)
    finally:
        await backend.close()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize(
    "where",
    [
        pytest.param(where, id=where[0], marks=[pytest.mark.slow] if where[1] != "native" else [])
        for where in ADVANCED_PLACES
    ],
)
def test_random_operations_match_the_model(
    tmp_path: Path, where: tuple[str, str], encrypted: bool
) -> None:
    place = Place(where[1], tmp_path, "model")
    # Over a database driver each example costs more; fewer of them search as far.
    budget = examples(60 if where[1] == "native" else 20)

    @settings(
        max_examples=budget,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ops=operations)
    def matches(ops: list[tuple[Any, ...]]) -> None:
        asyncio.run(run(place, ops, encrypted))
        if ops and place.schema is None:
            assert structure_problems(place.path) == []

    try:
        matches()
    finally:
        place.drop()
