"""Side by side with the Agents SDK: its stores, its envelopes, its Runner."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

agents = pytest.importorskip("agents")

from agents import Agent, Runner, function_tool  # noqa: E402
from agents.extensions.memory import EncryptedSession as SDKEncryptedSession  # noqa: E402
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402
from encmem.backends import SQLiteSession  # noqa: E402

from encmem import EncryptedSession, Keyring, TamperedItemError, generate_key  # noqa: E402

from .conftest import TEST_KEY  # noqa: E402

ITEMS = [
    {"role": "user", "content": "Wie ist das Wetter in Zürich?"},
    {
        "type": "function_call",
        "name": "get_weather",
        "call_id": "c1",
        "arguments": '{"city": "Zürich"}',
    },
    {"type": "function_call_output", "call_id": "c1", "output": "sunny, 21°C"},
    {
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Sonnig.", "annotations": []}],
    },
]


async def test_wrapping_the_sdks_sqlite_session(tmp_path: Path) -> None:
    underlying = agents.SQLiteSession("s", str(tmp_path / "sdk.db"))
    session = EncryptedSession(underlying_session=underlying, encryption_key=TEST_KEY)
    await session.add_items(ITEMS[:2])
    await session.add_items(ITEMS[2:])
    assert await session.get_items() == ITEMS
    assert await session.get_items(2) == ITEMS[2:]
    assert await session.pop_item() == ITEMS[3]
    raw = await underlying.get_items()
    assert all(item["__enc__"] == 1 and item["v"] == 3 for item in raw)
    assert "Zürich" not in json.dumps(raw, ensure_ascii=False)
    await session.clear_session()
    assert await session.get_items() == []
    underlying.close()


async def test_sdk_v1_envelopes_read_back_through_encmem(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    key = generate_key()
    sdk = SDKEncryptedSession("s", agents.SQLiteSession("s", str(path)), key, ttl=600)
    await sdk.add_items(ITEMS)
    sdk.underlying_session.close()
    ours = EncryptedSession(underlying_session=SQLiteSession("s", path), encryption_key=key)
    assert await ours.get_items() == ITEMS
    await ours.add_items([{"role": "user", "content": "new"}])
    stored = [
        json.loads(r[0])
        for r in sqlite3.connect(path).execute(
            "SELECT message_data FROM agent_messages ORDER BY id"
        )
    ]
    assert [item["v"] for item in stored] == [1, 1, 1, 1, 4]
    assert await ours.pop_item() == {"role": "user", "content": "new"}
    assert await ours.pop_item() == ITEMS[3]


async def test_sdk_v1_envelopes_with_a_legacy_string_key(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    sdk = SDKEncryptedSession("s", agents.SQLiteSession("s", str(path)), "your-secret-key", ttl=600)
    await sdk.add_items(ITEMS[:1])
    sdk.underlying_session.close()
    underlying = SQLiteSession("s", path)
    without = EncryptedSession(underlying_session=underlying, encryption_key=TEST_KEY)
    with pytest.raises(TamperedItemError, match="sdk_keys"):
        await without.get_items()
    ring = Keyring(TEST_KEY, sdk_keys=["your-secret-key"])
    assert (
        await EncryptedSession(underlying_session=underlying, encryption_key=ring).get_items()
        == ITEMS[:1]
    )


async def test_sdk_written_database_reads_unchanged_and_back(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    sdk = agents.SQLiteSession("s", str(path))
    await sdk.add_items(ITEMS[:2])
    ours = SQLiteSession("s", path)
    assert await ours.get_items() == ITEMS[:2]
    await ours.add_items(ITEMS[2:])
    assert await sdk.get_items() == ITEMS
    assert await ours.pop_item() == ITEMS[3]
    assert await sdk.get_items() == ITEMS[:3]
    sdk.close()
    await ours.close()


@function_tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


def _texts(model_input: Any) -> str:
    return json.dumps(model_input, ensure_ascii=False, default=str)


async def test_runner_turns_with_a_tool_call_through_encryption(tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            [function_call("get_weather", {"city": "Paris"}, call_id="call-1")],
            [assistant_message("It is sunny in Paris.")],
            [assistant_message("You asked about Paris.")],
        ]
    )
    agent = Agent(name="Assistant", instructions="Be brief.", model=model, tools=[get_weather])
    path = tmp_path / "run.db"
    session = EncryptedSession(
        session_id="conv", underlying_session=SQLiteSession("conv", path), encryption_key=TEST_KEY
    )
    first = await Runner.run(agent, "What is the weather in Paris?", session=session)
    assert first.final_output == "It is sunny in Paris."
    second = await Runner.run(agent, "Which city did I ask about?", session=session)
    assert second.final_output == "You asked about Paris."
    model.assert_complete()
    seen = _texts(model.calls[-1].input)
    for expected in (
        "What is the weather in Paris?",
        "sunny in Paris",
        "It is sunny in Paris.",
        "Which city",
    ):
        assert expected in seen
    history = await session.get_items()
    kinds = [item.get("type") or item.get("role") for item in history]
    assert kinds.count("function_call") == 1 and kinds.count("function_call_output") == 1
    assert history[0]["content"] == "What is the weather in Paris?"
    raw = sqlite3.connect(path).execute("SELECT message_data FROM agent_messages").fetchall()
    assert raw and not any("Paris" in row[0] for row in raw)
    await session.close()
