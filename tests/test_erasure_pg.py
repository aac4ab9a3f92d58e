"""Crypto-shredding on the real PostgreSQL server (issue 16).

Sessions of SQLAlchemySession and AdvancedSQLAlchemySession keep their seeds in a
SQLAlchemyKeyStore in the same database (a table of its own). The "backup" is every row of
one session copied aside with SQL before it is erased and put back afterwards: those rows
no longer decrypt. Each test gets a database of its own (the advanced tables have fixed
names).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from encmem.backends import (
    AdvancedSQLAlchemySession,
    SQLAlchemyKeyStore,
    SQLAlchemySession,
    open_store,
)

from encmem import (
    EncryptedSession,
    Keyring,
    SessionErasedError,
    erase_session,
    generate_key,
)

from .pg import fresh_database, run_sync

pytestmark = pytest.mark.pg

KEYRING = Keyring(generate_key())
ITEMS = 3
KINDS: dict[str, type[SQLAlchemySession]] = {
    "sqlalchemy": SQLAlchemySession,
    "advanced": AdvancedSQLAlchemySession,
}


@pytest.fixture
def database() -> Iterator[str]:
    """The URL of a fresh, empty database on the test server, dropped afterwards."""
    with fresh_database() as url:
        yield url


def contents(session_id: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{session_id} turn {n}"} for n in range(ITEMS)]


def encrypted(
    kind: str, session_id: str, url: str, key_store: SQLAlchemyKeyStore, **options: Any
) -> EncryptedSession:
    inner = KINDS[kind].from_url(session_id, url=url, create_tables=True)
    return EncryptedSession(
        session_id, inner, KEYRING, ttl=None, key_store=key_store, **options
    )


async def read(
    kind: str, session_id: str, url: str, key_store: SQLAlchemyKeyStore, **options: Any
) -> list[Any]:
    async with encrypted(kind, session_id, url, key_store, **options) as session:
        return await session.get_items()


def data_tables(url: str) -> list[str]:
    """Tables holding a session's rows (not seeds), parents first (foreign keys)."""
    rows = run_sync(
        url,
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND column_name = 'session_id' AND table_name NOT IN (SELECT table_name FROM "
        "information_schema.columns WHERE column_name = 'seed_id')",
    )
    names = sorted(str(row[0]) for row in rows)
    return sorted(names, key=lambda n: (n != "agent_sessions", n != "agent_messages"))


def back_up(url: str, session_id: str) -> dict[str, int]:
    """Copy every row of the session aside, into schema ``backup``; rows copied per table.

    Another schema: an erase deletes the session's rows from every table of the store's
    schema that has a session_id column, and would reach copies kept beside them.
    """
    run_sync(url, "CREATE SCHEMA backup")
    copied: dict[str, int] = {}
    for table in data_tables(url):
        run_sync(
            url,
            f"CREATE TABLE backup.{table} AS SELECT * FROM {table} WHERE session_id = :sid",
            {"sid": session_id},
        )
        copied[table] = int(run_sync(url, f"SELECT COUNT(*) FROM backup.{table}")[0][0])
    return {table: count for table, count in copied.items() if count}


def restore(url: str, tables: list[str]) -> None:
    for table in tables:
        run_sync(url, f"INSERT INTO {table} SELECT * FROM backup.{table}")


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_rows_put_back_after_an_erase_raise_session_erased(
    database: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    gone, kept = f"gone-{uuid.uuid4().hex[:8]}", f"kept-{uuid.uuid4().hex[:8]}"
    async with SQLAlchemyKeyStore(url=database) as key_store:
        for session_id in (gone, kept):
            async with encrypted(kind, session_id, database, key_store) as session:
                await session.add_items(contents(session_id))
        assert await key_store.seed_session_ids() == sorted([gone, kept])
        copied = back_up(database, gone)
        assert copied["agent_messages"] == ITEMS
        async with await open_store(database) as store:
            receipt = await erase_session(store, gone, key_store=key_store)
        assert receipt.seed_destroyed, receipt.as_dict()
        assert "SQLAlchemyKeyStore" in receipt.key_store and "***" not in receipt.key_store
        # The SQLAlchemy store erases table by table and VACUUMs; a database server cannot
        # be byte-scanned, so the scan is not done (None) and does not count against it.
        assert receipt.rows_removed == copied
        assert not receipt.residue_pending and "VACUUM" in receipt.residue
        assert (receipt.session_id_hits, receipt.ciphertext_hits) == (None, None)
        assert receipt.complete
        assert await key_store.seed_session_ids() == [kept]
        assert await read(kind, gone, database, key_store) == []

        restore(database, list(copied))
        with pytest.raises(SessionErasedError) as refused:
            await read(kind, gone, database, key_store)
        assert refused.value.session_id == gone
        with caplog.at_level(logging.WARNING):
            assert await read(kind, gone, database, key_store, on_invalid="skip") == []
        erased = [r for r in caplog.records if "no longer holds" in r.getMessage()]
        assert len(erased) == ITEMS
        assert await read(kind, kept, database, key_store) == contents(kept)


async def test_the_key_store_keeps_seeds_in_a_table_of_its_own(database: str) -> None:
    sid = f"sess-{uuid.uuid4().hex[:8]}"
    async with SQLAlchemyKeyStore(url=database) as key_store:
        async with encrypted("sqlalchemy", sid, database, key_store) as session:
            await session.add_items(contents(sid))
        seeded = run_sync(
            database,
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name = 'seed_id'",
        )
        holding = [
            str(name) for (name,) in seeded
            if run_sync(database, f"SELECT COUNT(*) FROM {name} WHERE session_id = :s",
                        {"s": sid})[0][0]
        ]
        assert holding == ["encmem_seeds"]  # not in the session tables' seeds
        sealed = run_sync(database, "SELECT sealed FROM encmem_seeds")[0][0]
        assert str(sealed).startswith("gAAAAA")  # sealed, never the seed in the clear
