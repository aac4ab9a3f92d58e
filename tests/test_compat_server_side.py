"""Sessions that keep history on the model provider's servers, and the compaction decorator.

``OpenAIConversationsSession`` stores items in OpenAI's Conversations API, where the model
reads them: ciphertext there would be a history the model cannot read, so wrapping it is
refused at construction, before any request is made.

``OpenAIResponsesCompactionSession`` is itself a decorator that rewrites history through the
``responses.compact`` API. Under encmem (``EncryptedSession(compaction(store))``) its
``run_compaction`` is hidden, so the Runner never compacts: history is stored encrypted and
never rewritten. The other order (``compaction(EncryptedSession(store))``) compacts: it sends
the decrypted history to the compaction endpoint, exactly as every run sends it to the model,
and stores the compacted output encrypted again.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agents import Agent, Runner, SQLiteSession
from agents.memory import OpenAIConversationsSession, OpenAIResponsesCompactionSession
from agents.memory.session import is_openai_responses_compaction_aware_session
from agents.testing import ScriptedModel, assistant_message
from openai import AsyncOpenAI

from encmem import EncryptedSession, UnsupportedOperation

from .conftest import TEST_KEY


def offline_client() -> AsyncOpenAI:
    """A client pointed at a closed local port: any request would fail loudly."""
    return AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9", max_retries=0)


@pytest.mark.parametrize("conversation_id", ["conv_x", None])
def test_wrapping_openai_conversations_is_refused(conversation_id: str | None) -> None:
    # Synchronous on purpose: the refusal happens in the constructor, so no request can run.
    underlying = OpenAIConversationsSession(
        conversation_id=conversation_id, openai_client=offline_client()
    )
    with pytest.raises(UnsupportedOperation, match="OpenAIConversationsSession") as refused:
        EncryptedSession(underlying_session=underlying, encryption_key=TEST_KEY)
    assert "cannot be wrapped" in str(refused.value)
    assert "encmem.backends" in str(refused.value)  # and it says what to use instead
    assert isinstance(refused.value, NotImplementedError)


def test_wrapping_a_subclass_of_openai_conversations_is_refused() -> None:
    class TeamConversations(OpenAIConversationsSession):
        pass

    underlying = TeamConversations(conversation_id="conv_x", openai_client=offline_client())
    with pytest.raises(UnsupportedOperation):
        EncryptedSession(underlying_session=underlying, encryption_key=TEST_KEY)


def compaction_over(store: Any, client: Any) -> OpenAIResponsesCompactionSession:
    return OpenAIResponsesCompactionSession(
        store.session_id, store, client=client, should_trigger_compaction=lambda _: True
    )


async def test_compaction_under_encmem_is_disabled_not_broken(tmp_path: Path) -> None:
    store = SQLiteSession("conv", str(tmp_path / "c.db"))
    # The decision hook always says "compact"; the client can reach nothing.
    session = EncryptedSession(
        underlying_session=compaction_over(store, offline_client()), encryption_key=TEST_KEY
    )
    assert not hasattr(session, "run_compaction")
    assert not is_openai_responses_compaction_aware_session(session)

    model = ScriptedModel([[assistant_message("Paris.")], [assistant_message("France.")]])
    agent = Agent(name="Assistant", model=model)
    await Runner.run(agent, "Which city?", session=session)
    result = await Runner.run(agent, "Which country?", session=session)
    assert result.final_output == "France."
    assert len(await session.get_items()) == 4
    rows = sqlite3.connect(tmp_path / "c.db").execute("SELECT message_data FROM agent_messages")
    stored = [json.loads(row[0]) for row in rows]
    assert len(stored) == 4 and all(item["__enc__"] == 1 for item in stored)
    store.close()


class FakeResponses:
    """Stands in for client.responses: records what compaction sends, returns a summary."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def compact(self, **kwargs: Any) -> Any:
        self.requests.append(kwargs)
        summary = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "summary: asked about Paris"}],
        }
        return SimpleNamespace(output=[summary], usage=None)


async def test_compaction_over_encmem_compacts_and_stores_encrypted(tmp_path: Path) -> None:
    store = SQLiteSession("conv", str(tmp_path / "c.db"))
    encrypted = EncryptedSession(underlying_session=store, encryption_key=TEST_KEY)
    responses = FakeResponses()
    session = compaction_over(encrypted, SimpleNamespace(responses=responses))
    history = [
        {"role": "user", "content": "Which city is the Golden Gate Bridge in?"},
        {"role": "assistant", "content": "San Francisco."},
    ]
    await session.add_items(history)
    await session.run_compaction({"force": True})

    assert responses.requests[0]["input"] == history  # the endpoint saw the plaintext
    compacted = await session.get_items()
    assert [item["content"][0]["text"] for item in compacted] == ["summary: asked about Paris"]
    raw = await store.get_items()
    assert len(raw) == 1 and raw[0]["__enc__"] == 1 and "Paris" not in json.dumps(raw)
    store.close()
