"""The Agents SDK's AdvancedSQLiteSession under encmem's EncryptedSession, and under its own.

encmem's envelope keeps ``role``, ``type`` and the tool name in the clear, so the SDK class
classifies a sealed item exactly as the plaintext one: turns, branches, tool analytics and
run usage keep working. The SDK's own EncryptedSession stores bare ``{"__enc__", "v", "kid",
"payload"}`` envelopes: every item becomes ``other`` in turn 0, nothing can be branched, no
tool is counted and each ``store_run_usage`` overwrites the last. The content-aware methods
(``get_conversation_turns``, ``find_turns_by_content``, ``create_branch_from_content``) need
the plaintext: the SDK class would read them from stored JSON, which is ciphertext, so
encmem's decorator answers them only over a backend with the UserTurnSource capability and
raises UnsupportedOperation for the SDK class.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner, function_tool
from agents.extensions.memory import AdvancedSQLiteSession
from agents.extensions.memory import EncryptedSession as SDKEncryptedSession
from agents.testing import ScriptedModel, assistant_message, function_call

from encmem import EncryptedSession, UnsupportedOperation

from .conftest import TEST_KEY


@function_tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


def scripted_agent() -> Agent[Any]:
    model = ScriptedModel(
        [
            [function_call("get_weather", {"city": "Paris"}, call_id="call-1")],
            [assistant_message("It is sunny in Paris.")],
            [assistant_message("You asked about Paris.")],
        ]
    )
    return Agent(name="Assistant", model=model, tools=[get_weather])


@pytest.fixture
async def sdk_advanced(tmp_path: Path) -> AsyncIterator[AdvancedSQLiteSession]:
    session = AdvancedSQLiteSession(
        session_id="conv", db_path=str(tmp_path / "advanced.db"), create_tables=True
    )
    yield session
    session.close()


async def two_runs(session: Any) -> None:
    """Two Runner turns, the first with a tool call, each followed by store_run_usage."""
    agent = scripted_agent()
    first = await Runner.run(agent, "What is the weather in Paris?", session=session)
    await session.store_run_usage(first)
    second = await Runner.run(agent, "Which city did I ask about?", session=session)
    await session.store_run_usage(second)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def reply(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


# -- through encmem's EncryptedSession -------------------------------------------------------


async def test_turns_tools_and_usage_work_through_encmem(
    sdk_advanced: AdvancedSQLiteSession, tmp_path: Path
) -> None:
    session = EncryptedSession(underlying_session=sdk_advanced, encryption_key=TEST_KEY)
    await two_runs(session)

    assert await session.get_conversation_by_turns() == {
        1: [
            {"type": "user", "tool_name": None},
            {"type": "function_call", "tool_name": "get_weather"},
            {"type": "function_call_output", "tool_name": None},
            {"type": "assistant", "tool_name": None},
        ],
        2: [{"type": "user", "tool_name": None}, {"type": "assistant", "tool_name": None}],
    }
    assert await session.get_tool_usage() == [("get_weather", 1, 1)]
    usage = await session.get_session_usage()
    assert usage is not None
    assert usage["requests"] == 3 and usage["total_turns"] == 2  # accumulated, one row a turn
    assert [row["user_turn_number"] for row in await session.get_turn_usage()] == [1, 2]
    history = await session.get_items()
    assert history[0] == user("What is the weather in Paris?")
    # ... and the database holds only envelopes.
    stored = sqlite3.connect(tmp_path / "advanced.db").execute(
        "SELECT message_data FROM agent_messages"
    )
    rows = [json.loads(row[0]) for row in stored]
    assert len(rows) == 6 and all(row["__enc__"] == 1 and row["v"] == 3 for row in rows)
    assert not any("Paris" in json.dumps(row) for row in rows)


async def test_branching_works_through_encmem(sdk_advanced: AdvancedSQLiteSession) -> None:
    session = EncryptedSession(underlying_session=sdk_advanced, encryption_key=TEST_KEY)
    await session.add_items([user("one"), reply("1")])
    await session.add_items([user("two"), reply("2")])

    assert await session.create_branch_from_turn(2, "alt") == "alt"
    assert await session.get_items() == [user("one"), reply("1")]
    await session.add_items([user("two, differently")])
    assert await session.get_items() == [user("one"), reply("1"), user("two, differently")]
    branches = {b["branch_id"]: b for b in await session.list_branches()}
    assert set(branches) == {"main", "alt"}
    assert branches["alt"]["is_current"] and branches["alt"]["user_turns"] == 2
    assert branches["main"]["message_count"] == 4
    assert list(await session.get_conversation_by_turns("main")) == [1, 2]

    await session.switch_to_branch("main")
    assert await session.get_items() == [user("one"), reply("1"), user("two"), reply("2")]
    assert await session.pop_item() == reply("2")
    await session.delete_branch("alt")
    assert [b["branch_id"] for b in await session.list_branches()] == ["main"]
    assert await session.get_items() == [user("one"), reply("1"), user("two")]


async def test_content_aware_queries_are_unsupported_through_encmem(
    sdk_advanced: AdvancedSQLiteSession,
) -> None:
    session = EncryptedSession(underlying_session=sdk_advanced, encryption_key=TEST_KEY)
    await session.add_items([user("hello Paris"), reply("hi")])
    with pytest.raises(UnsupportedOperation, match="UserTurnSource"):
        await session.get_conversation_turns()
    with pytest.raises(UnsupportedOperation, match="UserTurnSource"):
        await session.find_turns_by_content("Paris")
    with pytest.raises(UnsupportedOperation, match="UserTurnSource"):
        await session.create_branch_from_content("Paris")
    assert [b["branch_id"] for b in await session.list_branches()] == ["main"]


async def test_the_sdk_class_asked_directly_sees_only_envelopes(
    sdk_advanced: AdvancedSQLiteSession,
) -> None:
    """Going around the decorator leaks nothing: the SDK's own queries read ciphertext."""
    session = EncryptedSession(underlying_session=sdk_advanced, encryption_key=TEST_KEY)
    await session.add_items([user("hello Paris"), reply("hi")])
    turns = await sdk_advanced.get_conversation_turns()
    assert [(t["turn"], t["full_content"]) for t in turns] == [(1, "")]
    assert await sdk_advanced.find_turns_by_content("Paris") == []


async def test_reading_another_branch_through_encmem(
    sdk_advanced: AdvancedSQLiteSession,
) -> None:
    session = EncryptedSession(underlying_session=sdk_advanced, encryption_key=TEST_KEY)
    await session.add_items([user("one"), reply("1"), user("two")])
    await session.create_branch_from_turn(2, "alt")
    assert await session.get_items(branch_id="main") == [user("one"), reply("1"), user("two")]


# -- the SDK's own EncryptedSession, for contrast ------------------------------------------


async def test_the_sdks_encrypted_session_breaks_turns_tools_usage_and_branches(
    sdk_advanced: AdvancedSQLiteSession,
) -> None:
    session = SDKEncryptedSession("conv", sdk_advanced, TEST_KEY, ttl=600)
    await two_runs(session)

    assert len(await session.get_items()) == 6  # the history itself reads back
    # ... but every stored item is "other", in one turn 0:
    assert await session.get_conversation_by_turns() == {
        0: [{"type": "other", "tool_name": None}] * 6
    }
    assert await session.get_tool_usage() == []
    branches = await session.list_branches()
    assert [(b["branch_id"], b["user_turns"]) for b in branches] == [("main", 0)]
    # store_run_usage overwrote the first run with the second, in a phantom turn 0:
    usage = await session.get_session_usage()
    assert usage is not None
    assert usage["requests"] == 1 and usage["total_turns"] == 1
    assert [row["user_turn_number"] for row in await session.get_turn_usage()] == [0]
    # No user turn exists, so nothing can be branched from:
    with pytest.raises(ValueError, match="does not contain a user message"):
        await session.create_branch_from_turn(1, "alt")
    assert await session.get_conversation_turns() == []
    assert await session.find_turns_by_content("Paris") == []
    with pytest.raises(ValueError, match="No user turns found"):
        await session.create_branch_from_content("Paris")
