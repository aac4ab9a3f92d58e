"""The demo: an agent conversation stored encrypted in a SQLite file, then read back.

Runs offline: the Agents SDK's Runner drives a scripted model (no API key, no network).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sqlite3
from pathlib import Path
from typing import Any

from .._keys import Keyring, generate_key
from .._session import EncryptedSession
from ..errors import CommandError
from ._export import EXIT_USAGE
from ._report import safe

DEMO_DB = "encmem-demo.db"
TTL_SECONDS = 600


def _say(text: str = "") -> None:
    """One line on stdout, at once; a closed pipe ends the demo (the command exits 0)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise CommandError(f"cannot write to standard output: {exc.strerror}", EXIT_USAGE) from None


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


READER_TTL_SECONDS = 1
"""The TTL of the demo's second reader: short enough to watch the first turn expire."""
TURN_GAP_SECONDS = READER_TTL_SECONDS + 1.05
"""Seal times are whole seconds: an item outlives its TTL by up to a second, never less."""


def _scripted_agent() -> tuple[Any, Any]:
    """The Agents SDK's Runner and an agent on its offline scripted model (no key, no network)."""
    try:
        from agents import Agent, Runner, function_tool, set_tracing_disabled
        from agents.testing import ScriptedModel, assistant_message, function_call
    except ImportError as exc:  # pragma: no cover - the demo extra brings it
        raise SystemExit(
            "the demo needs the OpenAI Agents SDK: pip install 'encmem[agents]' (make demo does)"
        ) from exc
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
    return Runner, agent


def _open(db_path: Path, key: str, ttl: float) -> EncryptedSession:
    from ..backends import SQLiteSession

    return EncryptedSession(
        session_id="demo-conversation",
        underlying_session=SQLiteSession("demo-conversation", db_path),
        encryption_key=key,
        ttl=ttl,
    )


def _show_stored(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        raw_rows = conn.execute(
            "SELECT id, message_data FROM agent_messages ORDER BY id"
        ).fetchall()
    _say(f"1. As stored on disk ({len(raw_rows)} rows; ciphertext + clear structural fields):")
    for row_id, data in raw_rows[:3]:
        _say(f"   row {row_id}: {data}")  # the row exactly as it is in the file
    _say("   ...\n")


async def _converse(db_path: Path, key: str) -> list[Any]:
    """Two turns through the real Runner, a little apart; returns the decrypted history."""
    runner, agent = _scripted_agent()
    async with _open(db_path, key, TTL_SECONDS) as session:
        _say(f"key id {session.keyring.primary_kid} (the key itself is never printed)\n")
        prompts = ["What's the weather in Paris?", "Should I bring a jacket?"]
        result = await runner.run(agent, prompts[0], session=session)
        _say(f"user: {prompts[0]}\nagent: {result.final_output}")
        await asyncio.sleep(TURN_GAP_SECONDS)  # so that a short TTL tells the turns apart
        result = await runner.run(agent, prompts[1], session=session)
        _say(f"user: {prompts[1]}\nagent: {result.final_output}\n")
        _show_stored(db_path)
        history = await session.get_items()
    _say(f"2. Decrypted history ({len(history)} items):")
    for item in history:
        _say(f"   {_summary(item)}")
    return history


async def _expire(db_path: Path, key: str, history: list[Any]) -> None:
    """A reader with a short TTL: the first turn has expired for it, and it purges it."""
    async with _open(db_path, key, READER_TTL_SECONDS) as reader:
        live = await reader.get_items()
        _say(
            f"\n3. A reader with a TTL of {READER_TTL_SECONDS} s, over {TURN_GAP_SECONDS:.0f} s "
            f"after the first turn: {len(history) - len(live)} items dropped, {len(live)} left:"
        )
        for item in live:
            _say(f"   {_summary(item)}")
        deleted = await reader.purge_expired()
    with sqlite3.connect(db_path) as conn:
        (left,) = conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()
    _say(
        f"\n4. purge_expired() deleted the {deleted} expired rows from the file; {left} rows left."
    )


def _check_path(db_path: Path) -> None:
    """The demo file must be a file it can create: refused before anything is removed."""
    shown = safe(repr(str(db_path)))
    if db_path.is_dir():
        raise CommandError(f"the demo database {shown} is a directory; name a file", EXIT_USAGE)
    if not db_path.resolve().parent.is_dir():
        raise CommandError(
            f"cannot create the demo database {shown}: its directory does not exist", EXIT_USAGE
        )


def _closing_hint(db_path: Path, key_from_env: bool) -> str:
    """What to run next: commands that work as typed."""
    name = shlex.quote(str(db_path))
    if key_from_env:
        checked = f"encmem verify {name} (with ENCMEM_KEY still set) authenticates every item"
    else:
        checked = (
            "this run's key was not kept, so nothing can open the items again; set ENCMEM_KEY "
            "(encmem keygen) before encmem demo to keep one"
        )
    return (
        f"\ndone — every seal time in the file is the real time it was written. Look with "
        f"encmem inspect {name} (no key needed), or "
        f"sqlite3 {name} 'SELECT message_data FROM agent_messages'; {checked}"
    )


async def run_demo(db_path: Path) -> None:
    # ENCMEM_KEY lets you open the demo file with the encmem command afterwards.
    from_env = bool(os.environ.get("ENCMEM_KEY"))
    key = os.environ.get("ENCMEM_KEY") or generate_key()
    Keyring(key)  # a malformed ENCMEM_KEY is refused before the old demo file is removed
    _check_path(db_path)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    origin = "taken from ENCMEM_KEY" if from_env else "generated for this run"
    _say(f"encmem demo — database: {safe(db_path.resolve())}\nkey {origin}")
    history = await _converse(db_path, key)
    await _expire(db_path, key, history)
    _say(_closing_hint(db_path, from_env))


def main(db_path: str = DEMO_DB) -> None:
    """Run the demo against ``db_path`` in the working directory."""
    asyncio.run(run_demo(Path(db_path)))
