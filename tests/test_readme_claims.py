"""Claims of the README that no other test pins, each checked against the real thing.

Moving from the Agents SDK is one-way; an open session's items may be only in the WAL; the
constructors and return shapes are the SDK's; tail reads open only what they return; the
plaintext cache spares decryption; errors carry where they happened. (The figures and make
targets the README quotes are checked in test_readme.py.)
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import agents
import pytest
from agents import Agent, Runner, function_tool
from agents.extensions.memory import AdvancedSQLiteSession as SDKAdvanced
from agents.extensions.memory import EncryptedSession as SDKEncrypted
from agents.extensions.memory import SQLAlchemySession as SDKSQLAlchemy
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.usage import Usage
from encmem.backends import AdvancedSQLiteSession, SQLAlchemySession, SQLiteSession

import encmem
import encmem.errors
from encmem import DecryptionError, EncryptedSession, Keyring, generate_key

ROOT = Path(__file__).resolve().parents[1]
ITEMS = [
    {"role": "user", "content": "Wie ist das Wetter in Zürich?"},
    {"role": "assistant", "content": "Sonnig, 21°C."},
    {"role": "user", "content": "Und morgen?"},
]


def command(*args: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_")}
    return subprocess.run(
        [sys.executable, "-m", "encmem.cli", *args],
        env={**env, "ENCMEM_KEY": key},
        capture_output=True,
        text=True,
        timeout=120,
    )


def sealed(path: Path, key: str, **options: Any) -> EncryptedSession:
    """encmem over its own SQLiteSession, session "s" of ``path``."""
    underlying = SQLiteSession("s", path)
    return EncryptedSession(underlying_session=underlying, encryption_key=key, **options)


async def sdk_history(path: Path, key: str) -> None:
    store = agents.SQLiteSession("s", str(path))
    await SDKEncrypted("s", store, key, ttl=600).add_items(ITEMS)
    store.close()


async def sdk_reads(path: Path, key: str) -> list[Any]:
    store = agents.SQLiteSession("s", str(path))
    try:
        return await SDKEncrypted("s", store, key, ttl=600).get_items()
    finally:
        store.close()


# -- moving from the SDK's EncryptedSession is one-way --------------------------------------


@pytest.mark.parametrize("how", ["encrypt_existing", "encmem encrypt"])
async def test_items_encmem_upgraded_read_as_nothing_in_the_sdk(tmp_path: Path, how: str) -> None:
    path, key = tmp_path / "c.db", generate_key()
    await sdk_history(path, key)
    assert await sdk_reads(path, key) == ITEMS  # before: the SDK reads its own items
    if how == "encrypt_existing":
        async with sealed(path, key) as session:
            assert (await session.encrypt_existing())["changed"] == len(ITEMS)
    else:
        done = command("encrypt", str(path), "--json", key=key)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["changed"] == len(ITEMS)
    assert await sdk_reads(path, key) == []  # silently: no error, no item
    async with sealed(path, key) as session:
        assert await session.get_items() == ITEMS


async def test_items_encmem_adds_are_invisible_to_the_sdk(tmp_path: Path) -> None:
    path, key = tmp_path / "c.db", generate_key()
    await sdk_history(path, key)
    async with sealed(path, key) as session:
        await session.add_items([{"role": "assistant", "content": "Regen."}])
        assert len(await session.get_items()) == len(ITEMS) + 1
    assert await sdk_reads(path, key) == ITEMS


async def test_encrypt_under_a_wrong_key_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    await sdk_history(path, generate_key())
    before = path.read_bytes()
    done = command("encrypt", str(path), key=generate_key())
    assert done.returncode == 3, done.stderr
    assert path.read_bytes() == before


# -- an open session's items may be only in the WAL -----------------------------------------


def rows_in(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()[0])
    except sqlite3.OperationalError:  # no such table: the file holds nothing of it yet
        return 0
    finally:
        conn.close()


async def test_a_copy_of_the_database_file_alone_misses_an_open_sessions_items(
    tmp_path: Path,
) -> None:
    db = tmp_path / "c.db"
    session = sealed(db, generate_key())
    await session.add_items(ITEMS)
    try:
        assert Path(f"{db}-wal").stat().st_size > 0
        shutil.copyfile(db, tmp_path / "copy.db")
        assert rows_in(tmp_path / "copy.db") == 0
    finally:
        await session.close()
    shutil.copyfile(db, tmp_path / "after-close.db")
    assert rows_in(tmp_path / "after-close.db") == len(ITEMS)


async def test_sqlite_backup_and_export_hold_an_open_sessions_items(tmp_path: Path) -> None:
    db, key = tmp_path / "c.db", generate_key()
    session = sealed(db, key)
    await session.add_items(ITEMS)
    try:
        source, target = sqlite3.connect(db), sqlite3.connect(tmp_path / "backup.db")
        source.backup(target)
        source.close()
        target.close()
        assert rows_in(tmp_path / "backup.db") == len(ITEMS)
        done = command("export", str(db), "--session", "s", key=key)
        assert done.returncode == 0, done.stderr
        assert [json.loads(line)["item"] for line in done.stdout.splitlines()] == ITEMS
    finally:
        await session.close()


# -- drop-in: the SDK's constructors, methods and return shapes -------------------------------

PAIRS = {
    "EncryptedSession": (EncryptedSession, SDKEncrypted),
    "SQLiteSession": (SQLiteSession, agents.SQLiteSession),
    "AdvancedSQLiteSession": (AdvancedSQLiteSession, SDKAdvanced),
    "SQLAlchemySession": (SQLAlchemySession, SDKSQLAlchemy),
}
# Defaults of ours that differ from the SDK's on purpose (none today). When a listed default
# comes to agree with the SDK's, the test says so: take it off the list.
DEFAULTS_THAT_DIFFER: set[tuple[str, str, str]] = set()


def incompatibilities(name: str, method: str, ours: Any, theirs: Any) -> list[str]:
    """What a call valid for the SDK's ``theirs`` could not do with ``ours``."""
    mine, sdk = inspect.signature(ours), inspect.signature(theirs)
    positional = [p.name for p in mine.parameters.values() if p.kind <= p.POSITIONAL_OR_KEYWORD]
    problems = []
    for index, p in enumerate(sdk.parameters.values()):
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        q = mine.parameters.get(p.name)
        where = f"{name}.{method}({p.name})"
        forwarded = any(r.kind == r.VAR_KEYWORD for r in mine.parameters.values())
        if q is None and not (forwarded and p.kind == p.KEYWORD_ONLY):
            problems.append(f"{where} missing")
        elif q is None:
            continue  # taken by ours's **kwargs and handed on
        elif p.kind <= p.POSITIONAL_OR_KEYWORD and positional[index : index + 1] != [p.name]:
            problems.append(f"{where} not at position {index}")
        elif p.default is not p.empty and (
            ((name, method, p.name) in DEFAULTS_THAT_DIFFER) == (q.default == p.default)
        ):
            problems.append(f"{where} default {q.default!r}, the SDK's {p.default!r}")
    return problems


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_call_to_the_sdks_class_works_on_ours(name: str) -> None:
    ours, theirs = PAIRS[name]
    methods = ["__init__"] + [
        m for m in dir(theirs) if not m.startswith("_") and callable(getattr(theirs, m))
    ]
    problems = []
    for method in methods:
        if not hasattr(ours, method):
            problems.append(f"{name}.{method} missing")
            continue
        problems += incompatibilities(name, method, getattr(ours, method), getattr(theirs, method))
    assert not problems, problems


def shape(value: Any) -> Any:
    """The keys of every dict, the lengths of tuples, recursively; no values."""
    if isinstance(value, dict) and all(isinstance(key, int) for key in value):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, dict):
        return sorted(value)
    if isinstance(value, list):
        return [shape(item) for item in value]
    return len(value) if isinstance(value, tuple) else type(value).__name__


@function_tool
def capital_of(country: str) -> str:
    """The capital of a country."""
    return "Bern"


async def advanced_answers(session: Any) -> dict[str, Any]:
    usage = Usage(requests=1, input_tokens=7, output_tokens=3, total_tokens=10)
    call = function_call("capital_of", {"country": "CH"}, call_id="c1")
    steps = [[call], *[{"output": [assistant_message("Yes.")], "usage": usage}] * 2]
    agent = Agent(name="A", model=ScriptedModel(steps), tools=[capital_of])
    for question in ["Is Bern the capital?", "Of Switzerland?"]:
        await session.store_run_usage(await Runner.run(agent, question, session=session))
    return {
        "by_turns": await session.get_conversation_by_turns(),
        "tools": await session.get_tool_usage(),
        "usage": await session.get_session_usage(),
        "turn_usage": await session.get_turn_usage(),
        "one_turn_usage": await session.get_turn_usage(user_turn_number=1),
        "turns": await session.get_conversation_turns(),
        "found": await session.find_turns_by_content("Bern"),
        "branch": await session.create_branch_from_turn(2, "alt"),
        "branches": await session.list_branches(),
    }


async def test_advanced_answers_have_the_sdks_shapes(tmp_path: Path) -> None:
    agents.set_tracing_disabled(True)
    theirs = SDKAdvanced(session_id="s", db_path=str(tmp_path / "sdk.db"), create_tables=True)
    ours = AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "ours.db", create_tables=True)
    wrapped = EncryptedSession(
        underlying_session=AdvancedSQLiteSession(
            session_id="s", db_path=tmp_path / "sealed.db", create_tables=True
        ),
        encryption_key=generate_key(),
    )
    try:
        expected = {k: shape(v) for k, v in (await advanced_answers(theirs)).items()}
        assert all(expected[k] for k in ("turns", "found", "turn_usage", "tools"))
        for session in (ours, wrapped):
            answers = await advanced_answers(session)
            assert {k: shape(v) for k, v in answers.items()} == expected
    finally:
        theirs.close()
        await ours.close()
        await wrapped.aclose()


# -- reads: the tail only, decrypted once ----------------------------------------------------


BACKENDS = {
    "sqlite": lambda db: SQLiteSession("s", db),
    "advanced": lambda db: AdvancedSQLiteSession(session_id="s", db_path=db, create_tables=True),
    "sqla": lambda db: SQLAlchemySession.from_url(
        "s", url=f"sqlite+aiosqlite:///{db}", create_tables=True
    ),
}


@pytest.mark.parametrize("kind", sorted(BACKENDS))
async def test_tail_reads_and_pops_open_only_the_newest_items(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "c.db"
    old, new = generate_key(), generate_key()
    # The oldest items are unreadable under the reader's key: touching one would raise.
    async with EncryptedSession(
        underlying_session=BACKENDS[kind](path), encryption_key=Keyring({"old": old})
    ) as other:
        await other.add_items(ITEMS)
    newest = [{"role": "user", "content": f"new {n}"} for n in range(4)]
    async with EncryptedSession(
        underlying_session=BACKENDS[kind](path),
        encryption_key=Keyring({"new": new, "old": old}),
    ) as writer:
        await writer.add_items(newest)
    async with EncryptedSession(
        underlying_session=BACKENDS[kind](path), encryption_key=Keyring({"new": new})
    ) as session:
        assert await session.get_items(limit=3) == newest[1:]
        assert await session.pop_item() == newest[3]
        with pytest.raises(DecryptionError):
            await session.get_items()  # the full read does meet them


async def decrypt_calls(read: Any) -> int:
    """How many tokens are opened while ``read()`` runs (real calls of the one place that
    hands a token to Fernet, counted; Fernet itself may run as native code)."""
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        code = frame.f_code
        if event == "call" and code.co_filename.endswith("_token.py") and code.co_name == "open":
            calls += 1

    sys.setprofile(profile)
    try:
        await read()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize(("size", "cache", "again"), [(10, 4096, 0), (10, 0, 10), (4100, 4096, 4)])
async def test_repeated_reads_decrypt_only_what_the_cache_cannot_hold(
    tmp_path: Path, size: int, cache: int, again: int
) -> None:
    kwargs = {} if cache == 4096 else {"plaintext_cache": cache}  # 4096 is the default
    async with sealed(tmp_path / "c.db", generate_key(), **kwargs) as session:
        await session.add_items([{"role": "user", "content": f"m{n}"} for n in range(size)])
        # The first read also opens the history head, once; it is remembered after that.
        assert await decrypt_calls(session.get_items) == size + 1
        assert await decrypt_calls(session.get_items) == again


async def test_errors_are_encmem_errors_that_carry_where(tmp_path: Path) -> None:
    errors = [v for v in vars(encmem.errors).values() if isinstance(v, type)]
    errors = [e for e in errors if issubclass(e, Exception) and e.__module__ == "encmem.errors"]
    assert len(errors) > 10 and all(issubclass(e, encmem.EncmemError) for e in errors)
    async with sealed(tmp_path / "c.db", generate_key()) as writer:
        await writer.add_items(ITEMS)
    reader = sealed(tmp_path / "c.db", generate_key())
    with pytest.raises(DecryptionError) as refused:
        await reader.get_items()
    # a full read opens the oldest first: position counts from the newest
    assert (refused.value.session_id, refused.value.position) == ("s", len(ITEMS))
    assert refused.value.reason
    await reader.aclose()


async def test_editing_stored_times_cannot_bring_an_expired_item_back(tmp_path: Path) -> None:
    db, key, now = tmp_path / "c.db", generate_key(), [1_800_000_000.0]
    options = {"ttl": 600, "clock": lambda: now[0]}
    async with sealed(db, key, **options) as session:
        await session.add_items(ITEMS[:1])
        now[0] += 601
        assert await session.get_items() == []
    with sqlite3.connect(db) as conn:  # every time column of the store, moved to the future
        for table in ("agent_messages", "agent_sessions"):
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for column in (c for c in columns if c.endswith("_at")):
                conn.execute(f"UPDATE {table} SET {column} = datetime('now', '+1 day')")
    conn.close()
    async with sealed(db, key, **options) as session:
        assert await session.get_items() == []
        now[0] -= 601  # the same reader, back at the seal time, still sees it: it is there
        assert await session.get_items() == ITEMS[:1]
