"""The behavioural contract every backend honours, plain and under EncryptedSession."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encmem import InvalidItemError

from .budget import examples
from .stores import Store
from .strategies import items as any_item
from .strategies import json_objects


def msg(n: int, role: str = "user") -> dict[str, Any]:
    return {"role": role, "content": f"message {n}"}


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


async def test_items_come_back_in_insertion_order(store: Store) -> None:
    session = await store.open(sid())
    await session.add_items([msg(0), msg(1)])
    await session.add_items([msg(2)])
    await session.add_items([msg(3), msg(4), msg(5)])
    assert await session.get_items() == [msg(i) for i in range(6)]


async def test_empty_session_reads_empty(store: Store) -> None:
    session = await store.open(sid())
    assert await session.get_items() == []
    assert await session.get_items(3) == []
    assert await session.pop_item() is None


async def test_add_nothing_writes_nothing(store: Store) -> None:
    session = await store.open(sid())
    await session.add_items([])
    assert await session.get_items() == []


@pytest.mark.parametrize("limit", [1, 2, 5, 9, 10, 50])
async def test_limit_returns_the_newest_in_order(store: Store, limit: int) -> None:
    session = await store.open(sid())
    await session.add_items([msg(i) for i in range(9)])
    assert await session.get_items(limit) == [msg(i) for i in range(9)][-limit:]


async def test_limit_zero_returns_nothing(store: Store) -> None:
    session = await store.open(sid())
    await session.add_items([msg(0)])
    assert await session.get_items(0) == []


@pytest.mark.parametrize("bad", [-1, -100])
async def test_negative_limit_is_a_value_error(store: Store, bad: int) -> None:
    session = await store.open(sid())
    await session.add_items([msg(0)])
    with pytest.raises(ValueError, match="limit"):
        await session.get_items(bad)


@pytest.mark.parametrize("bad", [1.5, "3", True])
async def test_non_int_limit_is_a_type_error(store: Store, bad: Any) -> None:
    session = await store.open(sid())
    with pytest.raises(TypeError, match="limit"):
        await session.get_items(bad)


async def test_session_settings_limit_is_the_default(store: Store) -> None:
    session = await store.open(sid(), session_settings={"limit": 2})
    await session.add_items([msg(i) for i in range(5)])
    assert await session.get_items() == [msg(3), msg(4)]
    assert await session.get_items(4) == [msg(1), msg(2), msg(3), msg(4)]
    assert session.session_settings.limit == 2


async def test_pop_returns_newest_first_until_empty(store: Store) -> None:
    session = await store.open(sid())
    await session.add_items([msg(0), msg(1, "assistant"), msg(2)])
    assert await session.pop_item() == msg(2)
    assert await session.pop_item() == msg(1, "assistant")
    assert await session.get_items() == [msg(0)]
    assert await session.pop_item() == msg(0)
    assert await session.pop_item() is None
    assert await session.get_items() == []


async def test_clear_empties_only_this_session(store: Store) -> None:
    a, b = await store.open(sid()), await store.open(sid())
    await a.add_items([msg(0), msg(1)])
    await b.add_items([msg(7)])
    await a.clear_session()
    assert await a.get_items() == []
    assert await b.get_items() == [msg(7)]
    await a.add_items([msg(2)])
    assert await a.get_items() == [msg(2)]


async def test_sessions_are_isolated(store: Store) -> None:
    a, b = await store.open(sid()), await store.open(sid())
    await a.add_items([msg(1)])
    await b.add_items([msg(2)])
    await a.add_items([msg(3)])
    assert await a.get_items() == [msg(1), msg(3)]
    assert await b.get_items() == [msg(2)]
    assert await b.pop_item() == msg(2)
    assert await a.get_items() == [msg(1), msg(3)]


async def test_history_persists_across_reopen(store: Store) -> None:
    session_id = sid()
    first = await store.open(session_id)
    await first.add_items([msg(0), msg(1)])
    closer = getattr(first, "close", None)
    if closer is not None:
        result = closer()
        if hasattr(result, "__await__"):
            await result
    again = await store.open(session_id)
    assert await again.get_items() == [msg(0), msg(1)]
    await again.add_items([msg(2)])
    assert await again.get_items(2) == [msg(1), msg(2)]


@pytest.mark.parametrize(
    "bad_item",
    [
        "a string",
        ["a", "list"],
        42,
        {"role": "user", "content": object()},
        {"role": "user", "score": float("nan")},
        {"role": "user", "score": float("inf")},
        {1: "non-string key"},
        {"text": "lone surrogate \ud800"},
    ],
    ids=["str", "list", "int", "object", "nan", "inf", "int-key", "surrogate"],
)
async def test_bad_item_writes_nothing(store: Store, bad_item: Any) -> None:
    session = await store.open(sid())
    await session.add_items([msg(0)])
    with pytest.raises(InvalidItemError, match="item 1"):
        await session.add_items([msg(1), bad_item, msg(2)])
    assert await session.get_items() == [msg(0)]


async def test_bad_item_error_is_a_type_error(store: Store) -> None:
    session = await store.open(sid())
    with pytest.raises(TypeError):
        await session.add_items([{"content": {1, 2}}])


async def test_concurrent_writers_on_one_session_lose_nothing(store: Store) -> None:
    session_id = sid()
    writers = [await store.open(session_id) for _ in range(4)]

    async def write(w: int) -> None:
        for turn in range(5):
            await writers[w].add_items(
                [{"role": "user", "content": f"{w}-{turn}-{k}"} for k in range(3)]
            )

    await asyncio.gather(*(write(w) for w in range(4)))
    got = await writers[0].get_items()
    assert len(got) == 60
    for w in range(4):
        mine = [item["content"] for item in got if item["content"].startswith(f"{w}-")]
        assert mine == [f"{w}-{t}-{k}" for t in range(5) for k in range(3)]


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(any_item, min_size=1, max_size=4))
async def test_any_json_object_round_trips_exactly(
    store: Store, batch: list[dict[str, Any]]
) -> None:
    session = await store.open(sid())
    await session.add_items(batch)
    assert await session.get_items() == batch
    assert await session.get_items(1) == batch[-1:]
    assert await session.pop_item() == batch[-1]


@settings(
    max_examples=examples(10),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(item=json_objects)
async def test_large_and_nested_items_round_trip(store: Store, item: dict[str, Any]) -> None:
    session = await store.open(sid())
    big = {"role": "assistant", "content": "x" * 200_000, "payload": item}
    await session.add_items([big, item])
    assert await session.get_items() == [big, item]
