"""PostgreSQL's plans for the hot queries of AdvancedSQLAlchemySession: index seeks, never a
sequential scan of the messages or structure tables, so their cost does not grow with history.

The statements are the ones the session really sends (caught with SQLAlchemy's
``before_cursor_execute`` event) and are explained with their own parameters, after
``ANALYZE`` on tables holding many sessions' rows.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from encmem.backends import AdvancedSQLAlchemySession
from sqlalchemy import event

from . import stores as _stores  # noqa: F401  (the store registry loads before its members)
from .stores_advanced_sqlalchemy import PgSchema

SEQ_SCAN = re.compile(r"Seq Scan on (agent_messages|message_structure)\b")
SESSIONS = 12
ITEMS = 2000  # per session


def turn(n: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"question {n}"},
        {"type": "function_call", "name": "lookup", "call_id": f"c{n}", "arguments": "{}"},
        {"type": "function_call_output", "call_id": f"c{n}", "output": "found"},
        {"role": "assistant", "content": f"answer {n}"},
    ]


@pytest.fixture
async def big() -> AsyncIterator[tuple[PgSchema, list[AdvancedSQLAlchemySession]]]:
    """Sessions of ITEMS items each in a fresh schema, analysed."""
    schema = PgSchema()
    sessions = [
        AdvancedSQLAlchemySession.from_url(
            f"s{n}", url=schema.url, engine_kwargs=schema.engine_kwargs(), create_tables=True
        )
        for n in range(SESSIONS)
    ]
    try:
        for session in sessions:
            for start in range(0, ITEMS // 4, 125):
                await session.add_items([i for n in range(start, start + 125) for i in turn(n)])
        await sessions[0].create_branch_from_turn(ITEMS // 8, "alt")
        await sessions[0].switch_to_branch("main")
        schema.query(f"ANALYZE {schema.prefix}agent_messages")
        schema.query(f"ANALYZE {schema.prefix}message_structure")
        schema.query(f"ANALYZE {schema.prefix}turn_usage")
        yield schema, sessions
    finally:
        for session in sessions:
            await session.close()
        schema.drop()


async def plans_of(
    session: AdvancedSQLAlchemySession, operation: Callable[[], Awaitable[Any]]
) -> list[tuple[str, str]]:
    """(statement, plan) for every statement ``operation`` sends, explained afterwards."""
    sent: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    engine = session.engine.sync_engine
    event.listen(engine, "before_cursor_execute", catch)
    try:
        await operation()
    finally:
        event.remove(engine, "before_cursor_execute", catch)
    found = []
    async with session.engine.connect() as conn:
        for statement, parameters in sent:
            if not statement.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE")):
                continue
            result = await conn.exec_driver_sql(f"EXPLAIN {statement}", tuple(parameters or ()))
            found.append((statement, "\n".join(row[0] for row in result)))
    return found


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["get_items(limit=20)", "get_items(limit=20, branch_id)", "pop_item", "turns", "usage"],
)
async def test_hot_queries_never_scan_the_big_tables(big: Any, name: str) -> None:
    _, sessions = big
    session = sessions[0]
    operations: dict[str, Callable[[], Awaitable[Any]]] = {
        "get_items(limit=20)": lambda: session.get_items(limit=20),
        "get_items(limit=20, branch_id)": lambda: session.get_items(20, branch_id="alt"),
        "pop_item": session.pop_item,
        "turns": session.get_conversation_turns,
        "usage": lambda: session.store_run_usage(_usage()),
    }
    plans = await plans_of(session, operations[name])
    assert plans, "no statement was caught"
    scans = [(statement, plan) for statement, plan in plans if SEQ_SCAN.search(plan)]
    assert scans == []


def _usage() -> Any:
    from types import SimpleNamespace

    from agents.usage import Usage

    usage = Usage(requests=1, input_tokens=3, output_tokens=2, total_tokens=5)
    return SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage))
