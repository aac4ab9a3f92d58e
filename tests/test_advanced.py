"""AdvancedSQLiteSession's behaviour, run twice: plain, and wrapped in EncryptedSession.

Every test takes ``opener``, which opens either the bare backend or the backend under
encryption on a real SQLite file; the results must not depend on which. The last test runs one
long scenario both ways and compares every output.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agents.usage import Usage
from encmem.backends import AdvancedSQLiteSession
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from encmem import EncryptedSession, Keyring

from .stores_advanced import structure_problems, table_counts


class Opener:
    """Opens sessions on one database file, bare or under EncryptedSession."""

    def __init__(self, path: Path, encrypted: bool, keyring: Keyring) -> None:
        self.path = path
        self.encrypted = encrypted
        self.keyring = keyring
        self.backends: list[AdvancedSQLiteSession] = []

    def __call__(self, session_id: str = "s", **kwargs: Any) -> Any:
        kwargs.setdefault("create_tables", True)
        backend = AdvancedSQLiteSession(session_id=session_id, db_path=self.path, **kwargs)
        self.backends.append(backend)
        if not self.encrypted:
            return backend
        return EncryptedSession(underlying_session=backend, encryption_key=self.keyring)

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.close()


@pytest.fixture(params=["plain", "encrypted"])
async def opener(
    request: pytest.FixtureRequest, tmp_path: Path, keyring: Keyring
) -> AsyncIterator[Opener]:
    result = Opener(tmp_path / "advanced.db", request.param == "encrypted", keyring)
    try:
        yield result
    finally:
        await result.aclose()


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "output_text", "text": text}]}


def call(name: str, call_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "function_call", "name": name, "call_id": call_id, "arguments": "{}", **extra}


def output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "done"}


def run_result(
    requests: int = 1,
    input_tokens: int = 10,
    output_tokens: int = 5,
    cached: int = 0,
    reasoning: int = 0,
) -> Any:
    """What store_run_usage reads from a RunResult: ``context_wrapper.usage``."""
    usage = Usage(
        requests=requests,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
    )
    return SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage))


TURN_1 = [user("What's the weather in Paris?"), call("get_weather", "c1"), output("c1"),
          assistant("Sunny.")]
TURN_2 = [user("Café au lait, 100% please"), assistant("Coming up.")]
TURN_3 = [user("tell me about role_models"), assistant("Sure.")]


async def three_turns(session: Any) -> None:
    await session.add_items(TURN_1)
    await session.add_items(TURN_2)
    await session.add_items(TURN_3)


# -- items and branches -----------------------------------------------------------------------


async def test_items_and_limit_on_the_current_branch(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    everything = TURN_1 + TURN_2 + TURN_3
    assert await session.get_items() == everything
    assert await session.get_items(3) == everything[-3:]
    assert await session.get_items(limit=100) == everything


async def test_turns_list_user_messages_with_previews(opener: Opener) -> None:
    session = opener()
    long_text = "x" * 150
    await session.add_items([user(long_text), assistant("ok"), user("short")])
    turns = await session.get_conversation_turns()
    assert [t["turn"] for t in turns] == [1, 2]
    assert turns[0]["content"] == "x" * 100 + "..."
    assert turns[0]["full_content"] == long_text
    assert turns[1]["content"] == "short"
    assert all(t["can_branch"] and t["timestamp"] for t in turns)


async def test_branch_copies_the_turns_before_and_switches(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    branch = await session.create_branch_from_turn(3, "alt")
    assert branch == "alt"
    assert await session.get_items() == TURN_1 + TURN_2
    await session.add_items([user("another way"), assistant("fine")])
    assert await session.get_items(2) == [user("another way"), assistant("fine")]
    assert await session.get_items(branch_id="main") == TURN_1 + TURN_2 + TURN_3
    assert [t["turn"] for t in await session.get_conversation_turns()] == [1, 2, 3]
    await session.switch_to_branch("main")
    assert await session.get_items(2) == TURN_3


async def test_branch_from_turn_one_is_real_empty_listed_and_switchable(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    branch = await session.create_branch_from_turn(1)
    assert await session.get_items() == []
    listed = {b["branch_id"]: b for b in await session.list_branches()}
    assert listed[branch]["message_count"] == 0 and listed[branch]["is_current"]
    await session.switch_to_branch("main")
    await session.switch_to_branch(branch)
    await session.add_items([user("fresh start")])
    assert await session.get_items() == [user("fresh start")]
    assert [t["turn"] for t in await session.get_conversation_turns()] == [1]


async def test_branching_from_a_missing_turn_is_a_value_error(opener: Opener) -> None:
    session = opener()
    await session.add_items(TURN_1)
    with pytest.raises(ValueError, match="turn 2"):
        await session.create_branch_from_turn(2)
    assert [b["branch_id"] for b in await session.list_branches()] == ["main"]


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
async def test_blank_branch_names_are_refused(opener: Opener, name: str) -> None:
    session = opener()
    await session.add_items(TURN_1)
    with pytest.raises(ValueError, match="empty"):
        await session.create_branch_from_turn(1, name)
    assert len(await session.list_branches()) == 1


async def test_branch_names_are_never_reused(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    await session.create_branch_from_turn(2, "alt")
    for taken in ("alt", "main"):
        with pytest.raises(ValueError, match="already used"):
            await session.create_branch_from_turn(1, taken)
    await session.delete_branch("alt", force=True)
    with pytest.raises(ValueError, match="already used"):
        await session.create_branch_from_turn(1, "alt")


async def test_generated_names_never_collide_within_one_second(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    names = []
    for _ in range(4):
        await session.switch_to_branch("main")
        names.append(await session.create_branch_from_turn(2))
    assert len(set(names)) == 4
    assert all(name.startswith("branch_from_turn_2_") for name in names)
    listed = [b["branch_id"] for b in await session.list_branches()]
    assert listed == ["main", *names]


async def test_switching_to_an_unknown_branch_is_a_value_error(opener: Opener) -> None:
    session = opener()
    await session.add_items(TURN_1)
    with pytest.raises(ValueError, match="does not exist"):
        await session.switch_to_branch("nowhere")
    assert await session.get_items() == TURN_1


async def test_delete_branch_rules(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    await session.create_branch_from_turn(2, "alt")
    with pytest.raises(ValueError, match="main"):
        await session.delete_branch("main")
    with pytest.raises(ValueError, match="current"):
        await session.delete_branch("alt")
    with pytest.raises(ValueError, match="does not exist"):
        await session.delete_branch("nowhere")
    with pytest.raises(ValueError, match="empty"):
        await session.delete_branch(" ")
    await session.delete_branch("alt", force=True)
    assert [(b["branch_id"], b["is_current"]) for b in await session.list_branches()] == [
        ("main", True)
    ]
    assert await session.get_items() == TURN_1 + TURN_2 + TURN_3
    with pytest.raises(ValueError, match="does not exist"):
        await session.switch_to_branch("alt")


async def test_delete_branch_keeps_shared_messages_and_drops_its_own(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    await session.create_branch_from_turn(3, "alt")
    await session.add_items([user("only on alt")])
    await session.switch_to_branch("main")
    await session.delete_branch("alt")
    assert await session.get_items() == TURN_1 + TURN_2 + TURN_3
    assert table_counts(opener.path, "s")["agent_messages"] == 8
    assert structure_problems(opener.path) == []


async def test_list_branches_counts(opener: Opener) -> None:
    session = opener()
    assert await session.list_branches() == []
    await three_turns(session)
    await session.create_branch_from_turn(2, "alt")
    listed = await session.list_branches()
    assert [
        (b["branch_id"], b["message_count"], b["user_turns"], b["is_current"]) for b in listed
    ] == [("main", 8, 3, False), ("alt", 4, 1, True)]
    assert all(b["created_at"] for b in listed)


async def test_pop_works_on_the_current_branch_only(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    await session.create_branch_from_turn(3, "alt")
    assert await session.pop_item() == TURN_2[-1]
    assert await session.pop_item() == TURN_2[0]
    assert await session.get_items() == TURN_1
    assert await session.get_items(branch_id="main") == TURN_1 + TURN_2 + TURN_3
    assert structure_problems(opener.path) == []


async def test_pop_then_add_renumbers_the_turn(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    await session.pop_item()
    await session.pop_item()
    await session.add_items([user("replacement"), assistant("ok")])
    turns = await session.get_conversation_turns()
    assert [(t["turn"], t["full_content"]) for t in turns][-1] == (3, "replacement")


async def test_clear_leaves_nothing_and_returns_to_main(opener: Opener) -> None:
    session = opener()
    other = opener("other")
    await other.add_items(TURN_1)
    await three_turns(session)
    await session.store_run_usage(run_result())
    await session.create_branch_from_turn(2, "alt")
    await session.store_run_usage(run_result())
    await session.clear_session()
    assert table_counts(opener.path, "s") == dict.fromkeys(table_counts(opener.path, "s"), 0)
    assert await session.list_branches() == []
    assert await session.get_items() == []
    await session.add_items([user("again")])
    assert [b["branch_id"] for b in await session.list_branches()] == ["main"]
    assert await other.get_items() == TURN_1
    assert structure_problems(opener.path) == []


async def test_writing_into_a_branch_deleted_elsewhere_is_refused(opener: Opener) -> None:
    first = opener()
    await three_turns(first)
    await first.create_branch_from_turn(2, "alt")
    second = opener()
    await second.delete_branch("alt")
    with pytest.raises(ValueError, match="switch_to_branch"):
        await first.add_items([user("lost?")])
    assert structure_problems(opener.path) == []


# -- classification and tool usage ------------------------------------------------------------

TOOL_ITEMS = [
    user("use every tool"),
    call("get_weather", "c1"),
    call("lookup", "c2", namespace="crm"),
    call("search", "c3", namespace="search"),  # the SDK's synthetic namespace == name
    {"type": "mcp_call", "server_label": "github", "name": "list_repos", "arguments": "{}"},
    {"type": "mcp_approval_request", "server_label": "github", "name": "delete_repo"},
    {"type": "computer_call", "call_id": "k1", "action": {"type": "click"}},
    {"type": "file_search_call", "id": "f1", "queries": ["x"]},
    {"type": "web_search_call", "id": "w1"},
    {"type": "code_interpreter_call", "id": "i1", "code": "1+1"},
    {"type": "custom_tool_call", "name": "grammar", "call_id": "g1", "input": "x"},
    {"type": "tool_search_call", "id": "t1"},
    {"type": "tool_search_output", "id": "t2"},
    {"type": "shell_call", "id": "sh1"},
    output("c1"),
    {"role": "system", "content": "be brief"},
    {"type": "reasoning", "summary": []},
    {"foo": "bar"},
    assistant("done"),
]


async def test_messages_are_classified_like_the_sdk(opener: Opener) -> None:
    session = opener()
    await session.add_items(TOOL_ITEMS)
    by_turn = await session.get_conversation_by_turns()
    assert list(by_turn) == [1]
    assert [(row["type"], row["tool_name"]) for row in by_turn[1]] == [
        ("user", None),
        ("function_call", "get_weather"),
        ("function_call", "crm.lookup"),
        ("function_call", "search"),
        ("mcp_call", "github.list_repos"),
        ("mcp_approval_request", "github.delete_repo"),
        ("computer_call", "computer_call"),
        ("file_search_call", "file_search_call"),
        ("web_search_call", "web_search_call"),
        ("code_interpreter_call", "code_interpreter_call"),
        ("custom_tool_call", "grammar"),
        ("tool_search_call", "tool_search"),
        ("tool_search_output", "tool_search"),
        ("shell_call", "shell_call"),
        ("function_call_output", None),
        ("other", None),  # role "system" with no type
        ("reasoning", None),
        ("other", None),
        ("assistant", None),
    ]


async def test_tool_usage_counts_calls_per_turn(opener: Opener) -> None:
    session = opener()
    await session.add_items(TOOL_ITEMS)
    await session.add_items([user("again"), call("get_weather", "c9"), call("get_weather", "c8"),
                             {"type": "tool_search_output", "id": "t3"}])
    assert await session.get_tool_usage() == [
        ("code_interpreter_call", 1, 1),
        ("computer_call", 1, 1),
        ("crm.lookup", 1, 1),
        ("file_search_call", 1, 1),
        ("get_weather", 1, 1),
        ("github.delete_repo", 1, 1),
        ("github.list_repos", 1, 1),
        ("grammar", 1, 1),
        ("search", 1, 1),
        ("shell_call", 1, 1),
        ("tool_search", 1, 1),  # a search output next to its call is not counted twice
        ("web_search_call", 1, 1),
        ("get_weather", 2, 2),
        ("tool_search", 1, 2),  # an output alone (server-side search) counts
    ]


# -- content search ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "turns"),
    [
        ("café", [2]),
        ("CAFÉ", [2]),
        ("%", [2]),
        ("_", [3]),
        ("role", [3]),  # the JSON key "role" is in every item; only turn 3's text has it
        ("content", []),
        ("user", []),
        ("PARIS", [1]),
        ("nothing like it", []),
    ],
)
async def test_search_is_literal_unicode_and_text_only(
    opener: Opener, term: str, turns: list[int]
) -> None:
    session = opener()
    await three_turns(session)
    assert [t["turn"] for t in await session.find_turns_by_content(term)] == turns


async def test_search_reads_structured_content_parts(opener: Opener) -> None:
    session = opener()
    parts = [{"type": "input_text", "text": "Größe des Hauses"},
             {"type": "input_image", "image_url": "https://example.com/x.png"}]
    await session.add_items([user(parts), assistant("ok")])
    found = await session.find_turns_by_content("GRÖSSE")
    assert [t["turn"] for t in found] == [1]
    assert found[0]["full_content"] == parts
    assert await session.find_turns_by_content("example.com") == []


async def test_search_in_another_branch(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    await session.create_branch_from_turn(2, "alt")
    assert await session.find_turns_by_content("café") == []
    assert [t["turn"] for t in await session.find_turns_by_content("café", "main")] == [2]


async def test_empty_search_term_is_refused(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    with pytest.raises(ValueError):
        await session.find_turns_by_content("")


async def test_branch_from_content(opener: Opener) -> None:
    session = opener()
    await three_turns(session)
    assert await session.create_branch_from_content("CAFÉ", "coffee") == "coffee"
    assert await session.get_items() == TURN_1
    with pytest.raises(ValueError, match="no user turn"):
        await session.create_branch_from_content("zebra")
    assert [b["branch_id"] for b in await session.list_branches()] == ["main", "coffee"]


# -- usage ------------------------------------------------------------------------------------


async def test_usage_accumulates_per_turn_and_branch(opener: Opener) -> None:
    session = opener()
    assert await session.get_session_usage() is None
    await session.add_items(TURN_1)
    await session.store_run_usage(run_result(1, 10, 5, cached=2, reasoning=1))
    await session.store_run_usage(run_result(2, 20, 10, cached=3, reasoning=4))
    await session.add_items(TURN_2)
    await session.store_run_usage(run_result(1, 7, 3))
    assert await session.get_turn_usage(1) == {
        "requests": 3,
        "input_tokens": 30,
        "output_tokens": 15,
        "total_tokens": 45,
        "input_tokens_details": {
            "cached_tokens": 5, "cache_write_tokens": 0, "cache_write_tokens_details": None,
        },
        "output_tokens_details": {"reasoning_tokens": 5},
    }
    all_turns = await session.get_turn_usage()
    assert [(t["user_turn_number"], t["total_tokens"]) for t in all_turns] == [(1, 45), (2, 10)]
    assert await session.get_turn_usage(9) == {}
    await session.create_branch_from_turn(2, "alt")
    await session.add_items(TURN_3)
    await session.store_run_usage(run_result(1, 1, 1))
    assert await session.get_session_usage() == {
        "requests": 5, "input_tokens": 38, "output_tokens": 19, "total_tokens": 57,
        "total_turns": 3,
    }
    assert await session.get_session_usage(branch_id="main") == {
        "requests": 4, "input_tokens": 37, "output_tokens": 18, "total_tokens": 55,
        "total_turns": 2,
    }
    assert [t["user_turn_number"] for t in await session.get_turn_usage()] == [2]
    assert [t["user_turn_number"] for t in await session.get_turn_usage(branch_id="main")] == [
        1, 2,
    ]


async def test_usage_on_an_empty_session_records_nothing(opener: Opener) -> None:
    session = opener()
    await session.store_run_usage(run_result())
    assert await session.get_session_usage() is None
    assert await session.get_turn_usage() == []
    assert await session.get_turn_usage(0) == {}


async def test_usage_accepts_plain_dicts_and_none(opener: Opener) -> None:
    session = opener()
    await session.add_items(TURN_1)
    usage = {"requests": 1, "input_tokens": 4, "output_tokens": 2, "total_tokens": 6,
             "input_tokens_details": {"cached_tokens": 1}, "output_tokens_details": None}
    await session.store_run_usage(SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage)))
    await session.store_run_usage(SimpleNamespace(context_wrapper=SimpleNamespace(usage=None)))
    turn = await session.get_turn_usage(1)
    assert turn["total_tokens"] == 6
    assert turn["input_tokens_details"] == {"cached_tokens": 1}
    assert turn["output_tokens_details"] is None


async def test_store_run_usage_raises_instead_of_logging(opener: Opener) -> None:
    session = opener()
    await session.add_items(TURN_1)
    with pytest.raises(TypeError, match=r"Runner\.run"):
        await session.store_run_usage(object())
    bad = {"requests": "many"}
    with pytest.raises(TypeError, match="requests"):
        await session.store_run_usage(SimpleNamespace(context_wrapper=SimpleNamespace(usage=bad)))
    await session.close()
    with pytest.raises(RuntimeError, match="closed"):
        await session.store_run_usage(run_result())


async def test_pop_and_delete_drop_usage_of_vanished_turns(opener: Opener) -> None:
    session = opener()
    await session.add_items(TURN_1)
    await session.add_items(TURN_2)
    await session.store_run_usage(run_result())
    await session.pop_item()
    assert [t["user_turn_number"] for t in await session.get_turn_usage()] == [2]
    await session.pop_item()
    assert await session.get_turn_usage() == []
    assert structure_problems(opener.path) == []


# -- the same scenario, plain and encrypted ---------------------------------------------------

_GENERATED = re.compile(r"branch_from_turn_(\d+)_\d+")
_TIMESTAMP_KEYS = {"timestamp", "created_at"}


def _normalised(value: Any) -> Any:
    """Outputs without timestamps and with generated branch names made time-independent."""
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items() if k not in _TIMESTAMP_KEYS}
    if isinstance(value, (list, tuple)):
        return type(value)(_normalised(v) for v in value)
    if isinstance(value, str):
        return _GENERATED.sub(r"branch_from_turn_\1_T", value)
    return value


async def scenario(session: Any) -> list[Any]:
    """Every feature once; returns everything observable."""
    seen: list[Any] = []

    async def record(label: str, call: Any) -> None:
        try:
            seen.append((label, await call))
        except Exception as exc:  # the error type is part of the behaviour
            seen.append((label, type(exc).__name__))

    await session.add_items(TURN_1)
    await session.store_run_usage(run_result(1, 10, 5, cached=1))
    await session.add_items(TOOL_ITEMS)
    await session.store_run_usage(run_result(2, 30, 9, reasoning=2))
    await session.store_run_usage(run_result(1, 3, 1))
    await session.add_items(TURN_2 + TURN_3)
    await session.store_run_usage(run_result(1, 5, 5))
    for label, make in [
        ("items", lambda: session.get_items()),
        ("tail", lambda: session.get_items(4)),
        ("turns", lambda: session.get_conversation_turns()),
        ("search café", lambda: session.find_turns_by_content("café")),
        ("search %", lambda: session.find_turns_by_content("%")),
        ("search role", lambda: session.find_turns_by_content("role")),
        ("by turns", lambda: session.get_conversation_by_turns()),
        ("tools", lambda: session.get_tool_usage()),
        ("usage", lambda: session.get_session_usage()),
        ("turn usage", lambda: session.get_turn_usage()),
        ("turn 2 usage", lambda: session.get_turn_usage(2)),
        ("branches", lambda: session.list_branches()),
        ("branch 3", lambda: session.create_branch_from_turn(3, "alt")),
        ("alt items", lambda: session.get_items()),
        ("alt add", lambda: session.add_items([user("alt question"), call("get_time", "t1")])),
        ("alt usage", lambda: session.store_run_usage(run_result(1, 2, 2))),
        ("alt pop", lambda: session.pop_item()),
        ("alt tools", lambda: session.get_tool_usage()),
        ("main tools", lambda: session.get_tool_usage("main")),
        ("switch", lambda: session.switch_to_branch("main")),
        ("from content", lambda: session.create_branch_from_content("ROLE_", "roles")),
        ("roles items", lambda: session.get_items(3)),
        ("switch back", lambda: session.switch_to_branch("main")),
        ("from 1", lambda: session.create_branch_from_turn(1)),
        ("empty items", lambda: session.get_items()),
        ("bad branch", lambda: session.create_branch_from_turn(1, " ")),
        ("bad turn", lambda: session.create_branch_from_turn(7)),
        ("branches 2", lambda: session.list_branches()),
        ("delete alt", lambda: session.delete_branch("alt")),
        ("delete current", lambda: session.delete_branch(session.current_branch_id, force=True)),
        ("usage main", lambda: session.get_session_usage("main")),
        ("usage alt", lambda: session.get_session_usage("alt")),
        ("usage all", lambda: session.get_session_usage()),
        ("main pop", lambda: session.switch_to_branch("main")),
        ("popped", lambda: session.pop_item()),
        ("main turns", lambda: session.get_conversation_turns()),
        ("branches 3", lambda: session.list_branches()),
        ("clear", lambda: session.clear_session()),
        ("after clear", lambda: session.get_items()),
        ("branches 4", lambda: session.list_branches()),
        ("usage 4", lambda: session.get_session_usage()),
    ]:
        await record(label, make())
    return _normalised(seen)


async def test_plain_and_encrypted_give_the_same_results(tmp_path: Path, keyring: Keyring) -> None:
    plain = AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "plain.db", create_tables=True)
    backend = AdvancedSQLiteSession(
        session_id="s", db_path=tmp_path / "sealed.db", create_tables=True
    )
    sealed = EncryptedSession(underlying_session=backend, encryption_key=keyring)
    try:
        plain_results = await scenario(plain)
        sealed_results = await scenario(sealed)
    finally:
        await plain.close()
        await backend.close()
    assert sealed_results == plain_results
    outcome = dict(plain_results)
    assert outcome["tools"] and outcome["usage"]["total_turns"] == 3
    assert outcome["search café"][0]["turn"] == 3
    assert outcome["branches 2"][-1]["message_count"] == 0
    assert outcome["bad branch"] == outcome["bad turn"] == "BranchError"
    assert structure_problems(tmp_path / "plain.db") == []
    assert structure_problems(tmp_path / "sealed.db") == []


async def test_encrypted_rows_are_sealed_but_classified(tmp_path: Path, keyring: Keyring) -> None:
    backend = AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "x.db", create_tables=True)
    session = EncryptedSession(underlying_session=backend, encryption_key=keyring)
    try:
        await session.add_items(TURN_1 + TURN_2)
        raw = await backend.get_items()
        assert all(item.get("__enc__") == 1 for item in raw)
        assert not any("Paris" in str(item) or "Café" in str(item) for item in raw)
        assert await backend.get_tool_usage() == [("get_weather", 1, 1)]
        assert [t["turn"] for t in await session.find_turns_by_content("café")] == [2]
        # the bare backend searches what it stores: ciphertext, so it finds nothing
        assert await backend.find_turns_by_content("café") == []
    finally:
        await backend.close()
