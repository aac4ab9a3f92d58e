"""Reads that remember what they authenticated still see everything that happened since.

A session object keeps the rows it opened (by storage id and exact stored text) and the
history it last found sound, so a read on every turn decrypts and checks only what is new.
Here two EncryptedSession objects on one session, each over a backend of its own (its own
connection, as two processes have), take turns at random: add, pop, read the whole history
or a tail, tick the clock past the TTL, purge, rotate to a new key, clear. Every read must
return what a model of the history says, by the clock at that read, and as fresh objects:
changing what a read returned never changes what the next read returns.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encmem import EncryptedSession, Keyring, generate_key

from .budget import examples
from .history_attacks import BACKENDS, HEADED, SID

TTL = 100
START = 1_900_000_000
KEYS = [generate_key() for _ in range(4)]

who = st.sampled_from([0, 1])
operation = st.one_of(
    st.tuples(st.just("add"), who, st.integers(1, 4)),
    st.tuples(st.just("pop"), who),
    st.tuples(st.just("read"), who),
    st.tuples(st.just("tail"), who, st.integers(1, 6)),
    st.tuples(st.just("tick"), st.sampled_from([1, 40, 70, 150])),
    st.tuples(st.just("purge"), who),
    st.tuples(st.just("rotate"), who),
    st.tuples(st.just("clear"), who),
)


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


def item(number: int) -> dict[str, Any]:
    """An item with nested parts, so that a shallow copy would share them."""
    return {
        "role": "user" if number % 2 else "assistant",
        "content": [{"type": "input_text", "text": f"t{number}", "tags": [number]}],
    }


def keyring(primary: int) -> Keyring:
    """Every key, with key ``primary`` first (the one new items are sealed under)."""
    order = [primary, *(n for n in range(len(KEYS)) if n != primary)]
    return Keyring({f"k{n}": KEYS[n] for n in order})


class Model:
    """The history as (item number, seal second), oldest first, expired ones included until
    a purge or a pop removes them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.items: list[tuple[int, int]] = []

    def expired(self, sealed: int) -> bool:
        return self.clock.now >= sealed + TTL + 1

    def live(self) -> list[dict[str, Any]]:
        return [item(n) for n, sealed in self.items if not self.expired(sealed)]

    def pop(self) -> dict[str, Any] | None:
        while self.items:
            number, sealed = self.items.pop()
            if not self.expired(sealed):
                return item(number)
        return None


def _spoil(items: list[Any]) -> None:
    """What a caller may do to what it was given: change it, top to bottom."""
    for found in items:
        found["role"] = "spoiled"
        found["content"][0]["tags"].append("spoiled")
        found["content"].append({"type": "spoiled"})


async def _play(path: Path, backend: str, ops: list[tuple[Any, ...]]) -> None:
    clock, counter, primary = Clock(), [0], [0]
    backends = [BACKENDS[backend].open(path, SID) for _ in range(2)]
    sessions = [
        EncryptedSession(SID, b, keyring(0), ttl=TTL, clock=clock, plaintext_cache=64)
        for b in backends
    ]
    model = Model(clock)
    try:
        for op in ops:
            kind, session = op[0], sessions[op[1]] if len(op) > 1 and op[0] != "tick" else None
            if kind == "add":
                assert session is not None
                numbers = [counter[0] + n + 1 for n in range(op[2])]
                counter[0] += op[2]
                await session.add_items([item(n) for n in numbers])
                model.items += [(n, int(clock.now)) for n in numbers]
            elif kind == "pop":
                assert session is not None
                assert await session.pop_item() == model.pop()
            elif kind == "read":
                assert session is not None
                found = await session.get_items()
                assert found == model.live()
                _spoil(found)
            elif kind == "tail":
                assert session is not None
                found = await session.get_items(op[2])
                assert found == model.live()[-op[2] :]
                _spoil(found)
            elif kind == "tick":
                clock.now += op[1]
            elif kind == "purge":
                assert session is not None
                await session.purge_expired()
                model.items = [(n, s) for n, s in model.items if not model.expired(s)]
            elif kind == "rotate":
                assert session is not None
                primary[0] = (primary[0] + 1) % len(KEYS)
                session.keyring = keyring(primary[0])
                await session.rotate_keys()
            elif kind == "clear":
                assert session is not None
                await session.clear_session()
                model.items = []
        for session in sessions:  # both, after everything: the whole history, twice
            assert await session.get_items() == model.live()
            assert await session.get_items() == model.live()
    finally:
        for backend_session in backends:
            await backend_session.close()


@pytest.mark.parametrize("backend", HEADED)
@settings(
    max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(ops=st.lists(operation, max_size=16))
def test_two_objects_see_each_others_changes(backend: str, ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_play(Path(folder) / "history.db", backend, ops))


@pytest.mark.parametrize("backend", HEADED)
def test_a_long_history_read_every_turn_matches_a_fresh_reader(
    tmp_path: Path, backend: str
) -> None:
    """More rows than the kept plaintexts: the oldest are opened again on every read, and
    what the reader remembers gives the same answer as a reader that remembers nothing."""

    async def play() -> None:
        path = tmp_path / "long.db"
        backends = [BACKENDS[backend].open(path, SID) for _ in range(2)]
        writer = EncryptedSession(SID, backends[0], keyring(0), ttl=None, plaintext_cache=16)
        try:
            for turn in range(12):
                await writer.add_items([item(turn * 3 + n) for n in range(3)])
                remembered = await writer.get_items()
                fresh = EncryptedSession(
                    SID, backends[1], keyring(0), ttl=None, plaintext_cache=0
                )
                assert remembered == await fresh.get_items()
                assert len(remembered) == (turn + 1) * 3
        finally:
            for backend_session in backends:
                await backend_session.close()

    asyncio.run(play())


plain_operation = st.one_of(
    st.tuples(st.just("add"), who, st.integers(1, 4)),
    st.tuples(st.just("pop"), who),
    st.tuples(st.just("read"), who),
    st.tuples(st.just("tail"), who, st.integers(1, 6)),
    st.tuples(st.just("clear"), who),
)


@pytest.mark.parametrize("backend", ["sqlite", "advanced-sqlite"])
@settings(
    max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(ops=st.lists(plain_operation, max_size=16))
def test_plain_sessions_see_each_others_changes(backend: str, ops: list[tuple[Any, ...]]) -> None:
    """The same for two plain sessions, which keep the items they decoded the same way."""

    async def play(path: Path) -> None:
        sessions = [BACKENDS[backend].open(path, SID) for _ in range(2)]
        model: list[int] = []
        counter = 0
        try:
            for kind, who_, *rest in ops:
                session = sessions[who_]
                if kind == "add":
                    numbers = list(range(counter + 1, counter + 1 + rest[0]))
                    counter += rest[0]
                    await session.add_items([item(n) for n in numbers])
                    model += numbers
                elif kind == "pop":
                    assert await session.pop_item() == (item(model.pop()) if model else None)
                elif kind == "clear":
                    await session.clear_session()
                    model = []
                else:
                    limit = rest[0] if kind == "tail" else None
                    expected = [item(n) for n in model]
                    found = await session.get_items(limit)
                    assert found == (expected[-limit:] if limit else expected)
                    _spoil(found)
            for session in sessions:
                assert await session.get_items() == [item(n) for n in model]
        finally:
            for session in sessions:
                await session.close()

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(play(Path(folder) / "plain.db"))
