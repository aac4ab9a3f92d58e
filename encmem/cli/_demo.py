"""The demo: an agent conversation stored encrypted in a SQLite file, then read back.

Runs offline: the Agents SDK's Runner drives a scripted model (no API key, no network).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..keys import generate_key
from ..session import EncryptedSession

DEMO_DB = "encmem-demo.db"
TTL_SECONDS = 600


class SimulatedClock:
    """A clock the demo moves forward by hand, to show expiry without waiting."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def _summary(item: dict[str, Any]) -> str:
    kind = item.get("role") or item.get("type") or "?"
    if item.get("type") == "function_call":
        return f"{kind:<22} {item['name']}({item['arguments']})"
    if item.get("type") == "function_call_output":
        return f"{kind:<22} {item['output']}"
    content = item.get("content", "")
    if isinstance(content, list):
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return f"{kind:<22} {content}"


async def run_demo(db_path: Path) -> None:
    try:
        from agents import Agent, Runner, function_tool, set_tracing_disabled
        from agents.testing import ScriptedModel, assistant_message, function_call
    except ImportError as exc:  # pragma: no cover - the demo extra brings it
        raise SystemExit(
            "the demo needs the OpenAI Agents SDK: pip install 'encmem[agents]' (make demo does)"
        ) from exc

    from ..backends import SQLiteSession

    set_tracing_disabled(True)

    @function_tool
    def get_weather(city: str) -> str:
        """Today's weather for a city."""
        return f"{city}: sunny, 22°C"

    model = ScriptedModel(
        [
            [function_call("get_weather", {"city": "Paris"}, call_id="call-1")],
            [assistant_message("It's sunny in Paris today, 22°C.")],
            [assistant_message("Yes — light clothes and sunglasses will do.")],
        ]
    )
    agent = Agent(
        name="Assistant", instructions="Reply concisely.", model=model, tools=[get_weather]
    )

    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    clock = SimulatedClock()
    # ENCMEM_KEY lets you open the demo file with the encmem command afterwards.
    key = os.environ.get("ENCMEM_KEY") or generate_key()
    session = EncryptedSession(
        session_id="demo-conversation",
        underlying_session=SQLiteSession("demo-conversation", db_path),
        encryption_key=key,
        ttl=TTL_SECONDS,
        clock=clock,
    )
    print(f"encmem demo — database: {db_path.resolve()}")
    origin = "taken from ENCMEM_KEY" if os.environ.get("ENCMEM_KEY") else "generated for this run"
    print(f"key {origin} (key id {session.keyring.primary_kid}; it is never printed)\n")

    prompts = ["What's the weather in Paris?", "Should I bring a jacket?"]
    result = await Runner.run(agent, prompts[0], session=session)
    print(f"user: {prompts[0]}\nagent: {result.final_output}")
    clock.now += 400  # the second turn happens 400 s later
    result = await Runner.run(agent, prompts[1], session=session)
    print(f"user: {prompts[1]}\nagent: {result.final_output}\n")

    with sqlite3.connect(db_path) as conn:
        raw_rows = conn.execute(
            "SELECT id, message_data FROM agent_messages ORDER BY id"
        ).fetchall()
    print(f"1. As stored on disk ({len(raw_rows)} rows; ciphertext + clear structural fields):")
    for row_id, data in raw_rows[:3]:
        stored = json.loads(data)
        stored["payload"] = stored["payload"][:40] + "..."
        print(f"   row {row_id}: {json.dumps(stored)}")
    print("   ...\n")

    history = await session.get_items()
    print(f"2. Decrypted history ({len(history)} items):")
    for item in history:
        print(f"   {_summary(item)}")

    clock.now += 250  # 650 s after the first turn, 250 s after the second
    live = await session.get_items()
    print(
        f"\n3. 650 s after the first turn its items are past the TTL of {TTL_SECONDS} s: "
        f"{len(history) - len(live)} items dropped, {len(live)} left:"
    )
    for item in live:
        print(f"   {_summary(item)}")
    deleted = await session.purge_expired()
    with sqlite3.connect(db_path) as conn:
        (left,) = conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()
    print(
        f"\n4. purge_expired() deleted the {deleted} expired rows from the file; {left} rows left."
    )
    await session.close()
    print(
        f"\ndone — inspect the file yourself: "
        f"sqlite3 {db_path} 'SELECT message_data FROM agent_messages'"
    )


def main(db_path: str = DEMO_DB) -> None:
    """Run the demo against ``db_path`` in the working directory."""
    asyncio.run(run_demo(Path(db_path)))
