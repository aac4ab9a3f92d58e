"""The test PostgreSQL server: its URL, per-test table names, and synchronous peeks at it.

``scripts/run-tests`` starts a throwaway server and exports ``ENCMEM_TEST_PG_URL``. Without
it the PostgreSQL tests skip, except under ``CI=true`` where a missing server is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

PG_URL_ENV = "ENCMEM_TEST_PG_URL"
# Set by ``scripts/run-tests --no-servers``: a test that reaches for a server is mismarked.
NO_SERVERS_ENV = "ENCMEM_TEST_NO_SERVERS"


def pg_url() -> str:
    """The server's URL; skips the test when there is none (fails it under CI=true)."""
    url = os.environ.get(PG_URL_ENV, "")
    if url:
        return url
    if os.environ.get(NO_SERVERS_ENV):
        pytest.fail("this test needs PostgreSQL but is not marked pg, so make test-fast ran it")
    if os.environ.get("CI") == "true":
        pytest.fail(f"{PG_URL_ENV} is not set under CI=true: PostgreSQL tests must run in CI")
    pytest.skip(f"no PostgreSQL server: {PG_URL_ENV} is not set (scripts/run-tests sets it)")


def unique_tables() -> dict[str, str]:
    """Fresh table names, so each test sees only its own rows."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    return {"sessions_table": f"{prefix}_sessions", "messages_table": f"{prefix}_messages"}


def run_sync(url: str, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Run one SQL statement on its own connection from a plain thread; return the rows.

    Synchronous on purpose: tests call it from inside a running event loop to look at the
    database without going through the code under test.
    """
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    async def query() -> list[Any]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(statement), params or {})
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    box: list[Any] = []

    def target() -> None:
        try:
            box.append(("ok", asyncio.run(query())))
        except BaseException as exc:
            box.append(("error", exc))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    if not box:
        raise TimeoutError("the PostgreSQL query did not finish in 60 s")
    kind, value = box[0]
    if kind == "error":
        raise value
    return list(value)


def drop_tables(url: str, names: Sequence[str]) -> None:
    run_sync(url, f"DROP TABLE IF EXISTS {', '.join(names)} CASCADE")


def _autocommit(url: str, statement: str) -> None:
    """CREATE / DROP DATABASE, which no transaction may hold."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    async def execute() -> None:
        engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(execute())


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The postgresql+asyncpg:// URL of a fresh, empty database on the test server, dropped
    afterwards (run outside any event loop)."""
    from sqlalchemy.engine import make_url

    server = pg_url()
    name = f"t{uuid.uuid4().hex[:12]}"
    _autocommit(server, f"CREATE DATABASE {name}")
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        _autocommit(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
