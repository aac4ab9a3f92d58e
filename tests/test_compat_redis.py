"""The Agents SDK's RedisSession, with its own key TTL, under encmem's EncryptedSession.

Both expiries apply and the shorter one decides what a read returns:

- encmem's ``ttl`` is per item, counted from when the item was sealed: an old item drops out
  of reads while newer ones stay (the item stays in Redis until Redis drops the key or a
  ``pop_item`` meets it);
- RedisSession's ``ttl`` is per session, counted from the last write (every ``add_items``
  moves the expiry of all the session's keys): when it passes, Redis deletes the whole
  history at once, however fresh encmem would consider it.

Real Redis (ENCMEM_TEST_REDIS_URL); encmem's clock is injected, Redis's expiry is waited for
(about a second).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
from agents import Agent, Runner
from agents.extensions.memory import RedisSession
from agents.testing import ScriptedModel, assistant_message

from encmem import EncryptedSession

from .conftest import TEST_KEY
from .stores_sdk import server_url

pytestmark = pytest.mark.redis


class Clock:
    """encmem's injectable clock, starting at the real time so Fernet timestamps agree."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def raw() -> AsyncIterator[Any]:
    client = redis.from_url(server_url("ENCMEM_TEST_REDIS_URL", "Redis"))
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"encmem-test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def cleanup(raw: Any, prefix: str) -> AsyncIterator[list[Any]]:
    sessions: list[Any] = []
    yield sessions
    for session in sessions:
        await session.close()
    keys = [key async for key in raw.scan_iter(match=f"{prefix}:*")]
    if keys:
        await raw.delete(*keys)


def redis_session(prefix: str, ttl: int | None, opened: list[Any]) -> RedisSession:
    session = RedisSession.from_url(
        "conv", url=server_url("ENCMEM_TEST_REDIS_URL", "Redis"), key_prefix=prefix, ttl=ttl
    )
    opened.append(session)
    return session


def msg(n: int) -> dict[str, Any]:
    return {"role": "user", "content": f"message {n}"}


async def wait_until_gone(raw: Any, key: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await raw.exists(key):
        assert time.monotonic() < deadline, f"Redis did not expire {key} within {timeout} s"
        await asyncio.sleep(0.05)


async def test_redis_stores_only_envelopes(raw: Any, prefix: str, cleanup: list[Any]) -> None:
    session = EncryptedSession(
        underlying_session=redis_session(prefix, None, cleanup), encryption_key=TEST_KEY
    )
    call = {"type": "function_call", "name": "lookup", "call_id": "c", "arguments": "{}"}
    await session.add_items([msg(0), call])
    stored = [json.loads(x) for x in await raw.lrange(f"{prefix}:conv:messages", 0, -1)]
    assert [item["__enc__"] for item in stored] == [1, 1]
    assert stored[0]["role"] == "user" and stored[1]["name"] == "lookup"
    assert "message 0" not in json.dumps(stored)
    assert await session.get_items() == [msg(0), call]


async def test_encmem_ttl_shorter_drops_old_items_while_redis_keeps_them(
    raw: Any, prefix: str, cleanup: list[Any]
) -> None:
    clock = Clock()
    underlying = redis_session(prefix, 3600, cleanup)
    session = EncryptedSession(
        underlying_session=underlying, encryption_key=TEST_KEY, ttl=60, clock=clock
    )
    await session.add_items([msg(0), msg(1)])
    clock.now += 45
    await session.add_items([msg(2)])
    clock.now += 30  # the first two are 75 s old, the third 30 s
    assert await session.get_items() == [msg(2)]
    assert await session.get_items(5) == [msg(2)]
    # Redis still holds all three (its TTL is an hour away) ...
    assert await raw.llen(f"{prefix}:conv:messages") == 3
    assert await raw.ttl(f"{prefix}:conv:messages") > 3000
    # ... and pop_item discards the expired ones it meets on its way.
    assert await session.pop_item() == msg(2)
    assert await session.pop_item() is None
    assert await raw.llen(f"{prefix}:conv:messages") == 0


async def test_redis_ttl_shorter_deletes_the_whole_history(
    raw: Any, prefix: str, cleanup: list[Any]
) -> None:
    clock = Clock()
    underlying = redis_session(prefix, 1, cleanup)
    session = EncryptedSession(
        underlying_session=underlying, encryption_key=TEST_KEY, ttl=600, clock=clock
    )
    await session.add_items([msg(0), msg(1)])
    assert await session.get_items() == [msg(0), msg(1)]
    await wait_until_gone(raw, f"{prefix}:conv:messages")
    # encmem's clock has not moved: the items would be fresh, but Redis deleted them.
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.add_items([msg(2)])  # the session goes on with a new history
    assert await session.get_items() == [msg(2)]


async def test_redis_ttl_restarts_on_every_write_encmem_ttl_does_not(
    raw: Any, prefix: str, cleanup: list[Any]
) -> None:
    clock = Clock()
    underlying = redis_session(prefix, 2, cleanup)
    session = EncryptedSession(
        underlying_session=underlying, encryption_key=TEST_KEY, ttl=100, clock=clock
    )
    key = f"{prefix}:conv:messages"
    await session.add_items([msg(0)])
    before = await raw.pttl(key)
    await asyncio.sleep(0.3)
    clock.now += 90
    await session.add_items([msg(1)])
    assert await raw.pttl(key) > before - 100  # Redis's expiry moved with the write
    clock.now += 20  # msg(0) is 110 s old for encmem, msg(1) 20 s
    assert await session.get_items() == [msg(1)]
    assert await raw.llen(key) == 2
    await wait_until_gone(raw, key)
    assert await session.get_items() == []


async def test_runner_through_encrypted_redis(prefix: str, cleanup: list[Any]) -> None:
    model = ScriptedModel([[assistant_message("Paris.")], [assistant_message("France.")]])
    agent = Agent(name="Assistant", model=model)
    session = EncryptedSession(
        underlying_session=redis_session(prefix, 600, cleanup), encryption_key=TEST_KEY
    )
    await Runner.run(agent, "Which city?", session=session)
    result = await Runner.run(agent, "Which country?", session=session)
    assert result.final_output == "France."
    assert "Which city?" in json.dumps(model.calls[-1].input, default=str)
    assert len(await session.get_items()) == 4
