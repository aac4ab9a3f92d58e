"""Runner.run with a scripted model and a tool, through EncryptedSession(AdvancedSQLiteSession)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.usage import Usage

from encmem import EncryptedSession, Keyring

from .stores_advanced_sqlalchemy import ADVANCED_PLACES, Place


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def step(output: Any, requests: int, input_tokens: int, output_tokens: int) -> ModelStep:
    usage = Usage(
        requests=requests,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
    )
    return ModelStep(output=[output], usage=usage)


async def conversation(session: Any) -> dict[str, Any]:
    model = ScriptedModel(
        [
            step(function_call("get_weather", {"city": "Paris"}, call_id="c1"), 1, 50, 10),
            step(assistant_message("Sunny in Paris."), 1, 70, 8),
            step(assistant_message("Bring sunglasses."), 1, 90, 5),
            step(assistant_message("Try Lyon instead."), 1, 40, 4),
        ]
    )
    agent = Agent(name="weather", model=model, tools=[get_weather])
    first = await Runner.run(agent, "What's the weather in Paris?", session=session)
    await session.store_run_usage(first)
    second = await Runner.run(agent, "What should I wear?", session=session)
    await session.store_run_usage(second)
    before_branch = {
        "turns": [(t["turn"], t["full_content"]) for t in await session.get_conversation_turns()],
        "tools": await session.get_tool_usage(),
        "usage": await session.get_session_usage(),
        "turn 1": await session.get_turn_usage(1),
        "by turns": await session.get_conversation_by_turns(),
        "final": second.final_output,
    }
    await session.create_branch_from_content("wear", "elsewhere")
    third = await Runner.run(agent, "Somewhere else?", session=session)
    await session.store_run_usage(third)
    model.assert_complete()
    return {
        **before_branch,
        "branch turns": [t["full_content"] for t in await session.get_conversation_turns()],
        "branch items": len(await session.get_items()),
        "all usage": await session.get_session_usage(),
        "branch usage": await session.get_turn_usage(branch_id="elsewhere"),
        "branches": [(b["branch_id"], b["user_turns"]) for b in await session.list_branches()],
    }


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
@pytest.mark.parametrize("where", ADVANCED_PLACES, ids=[kind for kind, _ in ADVANCED_PLACES])
async def test_runner_turns_tools_and_usage(
    tmp_path: Path, keyring: Keyring, where: tuple[str, str], encrypted: bool
) -> None:
    place = Place(where[1], tmp_path, "chat")
    backend = place.backend("chat")
    session: Any = (
        EncryptedSession(underlying_session=backend, encryption_key=keyring)
        if encrypted
        else backend
    )
    try:
        seen = await conversation(session)
        if encrypted:
            raw = await backend.get_items()
            assert raw and all(item.get("__enc__") == 1 for item in raw)
    finally:
        await backend.close()
        place.drop()

    assert seen["final"] == "Bring sunglasses."
    assert seen["turns"] == [(1, "What's the weather in Paris?"), (2, "What should I wear?")]
    assert seen["tools"] == [("get_weather", 1, 1)]
    assert seen["usage"] == {
        "requests": 3, "input_tokens": 210, "output_tokens": 23, "total_tokens": 233,
        "total_turns": 2,
    }
    assert seen["turn 1"]["requests"] == 2 and seen["turn 1"]["total_tokens"] == 138
    assert [entry["type"] for entry in seen["by turns"][1]] == [
        "user", "function_call", "function_call_output", "assistant",
    ]
    assert seen["branch turns"] == ["What's the weather in Paris?", "Somewhere else?"]
    assert seen["branch items"] == 6
    assert seen["all usage"]["total_tokens"] == 233 + 44
    assert [(u["user_turn_number"], u["total_tokens"]) for u in seen["branch usage"]] == [(2, 44)]
    assert seen["branches"] == [("main", 2), ("elsewhere", 2)]
