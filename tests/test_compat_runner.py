"""Every session users already have, wrapped in encmem, under the Agents SDK's Runner.

The README's "Wrapping your existing session" promise, run: two turns through
``Runner.run`` with a scripted model, the second seeing the first, and only envelopes in
storage.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner
from agents.testing import ScriptedModel, assistant_message

from encmem import EncryptedSession, Keyring, UnsupportedOperation

from .stores_sdk import STORES


@pytest.mark.parametrize("kind", sorted(STORES))
async def test_two_runner_turns_through_encryption(
    kind: str, tmp_path: Path, keyring: Keyring
) -> None:
    store = STORES[kind](tmp_path)
    try:
        underlying = await store.open(f"conv-{uuid.uuid4().hex[:12]}")
        session = EncryptedSession(underlying_session=underlying, encryption_key=keyring, ttl=600)
        model = ScriptedModel(
            [[assistant_message("San Francisco.")], [assistant_message("California.")]]
        )
        agent = Agent(name="Assistant", instructions="Reply very concisely.", model=model)
        await Runner.run(agent, "What city is the Golden Gate Bridge in?", session=session)
        result = await Runner.run(agent, "What state is it in?", session=session)

        assert result.final_output == "California."
        model.assert_complete()
        assert "Golden Gate" in json.dumps(model.calls[-1].input, default=str)
        history = await session.get_items()
        assert len(history) == 4
        assert history[0] == {"role": "user", "content": "What city is the Golden Gate Bridge in?"}
        stored: list[Any] = await underlying.get_items()
        assert len(stored) == 4 and all(item["__enc__"] == 1 for item in stored)
        assert "Golden Gate" not in json.dumps(stored)
        assert [item.get("role") for item in stored] == ["user", "assistant"] * 2
    finally:
        await store.aclose()


@pytest.mark.parametrize("kind", sorted(STORES))
@pytest.mark.parametrize("operation", ["purge_expired", "rotate_keys", "encrypt_existing"])
async def test_maintenance_by_storage_id_is_unsupported_and_harmless(
    kind: str, operation: str, tmp_path: Path, keyring: Keyring
) -> None:
    store = STORES[kind](tmp_path)
    try:
        underlying = await store.open(f"conv-{uuid.uuid4().hex[:12]}")
        session = EncryptedSession(underlying_session=underlying, encryption_key=keyring)
        await session.add_items([{"role": "user", "content": "keep me"}])
        with pytest.raises(UnsupportedOperation, match="ItemAddressing"):
            await getattr(session, operation)()
        assert await session.get_items() == [{"role": "user", "content": "keep me"}]
    finally:
        await store.aclose()
