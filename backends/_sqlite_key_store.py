"""Seeds on SQLite: the KeyStore capability of encmem's SQLite sessions (seeds in the session
store itself) and :class:`SQLiteKeyStore`, a key store in a file of its own.

A separate key store can live on other storage, with a backup retention shorter than the
session store's: destroying a seed there shreds every backup of the session store too, as
soon as the key store's own backups that held the seed have expired.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from encmem._items import check_session_id
from encmem._protocol import SeedDestruction, StoredSeed
from encmem.errors import SessionClosedError

from . import _seed_table as table
from . import _sqlite_connection as connections

T = TypeVar("T")


class SeedsOnSQLite:
    """The KeyStore methods over a SQLite connection (shared by sessions and key stores)."""

    async def _seed_connection(self) -> connections.SharedConnection:
        raise NotImplementedError

    def _seeds_table(self) -> str:
        return table.SEEDS

    async def _seed_job(self, job: Callable[[sqlite3.Connection], T]) -> T:
        shared = await self._seed_connection()
        name = self._seeds_table()
        if ("seeds", name) not in shared.schemas and not shared.read_only:
            create = table.statement(name)
            await shared.run(lambda conn: connections.immediate(conn, lambda c: c.execute(create)))
            shared.schemas.add(("seeds", name))
        return await shared.run(job)

    async def get_seed(self, session_id: str) -> StoredSeed | None:
        """The session's seed, or None when it has none."""
        check_session_id(session_id)
        name = self._seeds_table()
        return await self._seed_job(lambda conn: table.get(conn, name, session_id))

    async def put_seed(self, session_id: str, seed: StoredSeed) -> StoredSeed:
        """Keep ``seed`` unless the session has one already; return the one kept."""
        check_session_id(session_id)
        name = self._seeds_table()
        return await self._seed_job(lambda conn: table.put(conn, name, session_id, seed))

    async def replace_seed(self, session_id: str, seed: StoredSeed) -> None:
        """Re-seal the session's seed under another key (same seed id)."""
        name = self._seeds_table()
        await self._seed_job(lambda conn: table.replace(conn, name, session_id, seed))

    async def destroy_seed(self, session_id: str) -> SeedDestruction:
        """Delete the seed: committed, its page overwritten, the WAL emptied when it can be."""
        shared, name = await self._seed_connection(), self._seeds_table()
        return await self._seed_job(
            lambda conn: table.destroy(conn, name, session_id, shared.is_file)
        )

    async def seed_session_ids(self) -> list[str]:
        """Every session that has a seed, sorted."""
        name = self._seeds_table()
        return await self._seed_job(lambda conn: table.session_ids(conn, name))


class SQLiteKeyStore(SeedsOnSQLite):
    """A key store in a SQLite file of its own: ``EncryptedSession(..., key_store=...)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._shared: connections.SharedConnection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({str(self.path)!r})"

    async def _seed_connection(self) -> connections.SharedConnection:
        if self._closed:
            raise SessionClosedError("this SQLiteKeyStore is closed; open a new one")
        if self._shared is None:
            self._shared = connections.acquire(self.path)
        await self._shared.start()
        return self._shared

    async def close(self) -> None:
        """Close the key store's connection (idempotent)."""
        self._closed = True
        shared, self._shared = self._shared, None
        closing = connections.release(shared) if shared is not None else None
        if closing is not None:
            await closing

    async def aclose(self) -> None:
        """The same as ``close()``."""
        await self.close()

    async def __aenter__(self) -> SQLiteKeyStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
