"""``--key-store PATH|URL``: where sessions' seeds live when they are not in the session store.

A SQLite path (or a ``sqlite://`` URL) opens :class:`~encmem.backends.SQLiteKeyStore`; any
other database URL opens :class:`~encmem.backends.SQLAlchemyKeyStore`, with the URL handling
the store's ``DB`` gets (``postgresql://`` means asyncpg, libpq parameters translated).

The key store must exist and hold seeds: a path or URL that does not is refused before
anything is read or changed, since an erase would then destroy no seed, and a rotation
would seal sessions under seeds the applications' key store never sees. Only ``rotate
--shred-ready`` and ``encrypt`` (the commands that make seeds) may start a new one. Commands
that only read open a SQLite key store read-only, as they open the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .._protocol import KeyStore, SeedDestruction, StoredSeed
from ..backends import _sqlite_connection as connections
from ..backends import _sqlite_read_only as read_only_files
from ..backends._sqlite_key_store import SeedsOnSQLite, SQLiteKeyStore
from ..backends._store import _database_url, _sqlite_url_path, shown_target
from ..errors import CommandError, StoreError
from ._diagnosis import EXIT_STORE

SEEDS_TABLE = "encmem_seeds"


@dataclass
class OpenedKeyStore:
    """The key store a command was given, and how to close it at the end."""

    store: KeyStore
    close: Callable[[], Awaitable[None]]


class ReadOnlySQLiteKeyStore(SeedsOnSQLite):
    """A SQLite key store read without writing a byte of it (for inspect, verify, ...)."""

    def __init__(self, path: Path, shown: str, busy_timeout: float) -> None:
        self.path = path
        self._shared = connections.open_read_only(
            path, lambda: read_only_files.read_only_uri(path, shown)[0], busy_timeout
        )

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({str(self.path)!r})"

    async def _seed_connection(self) -> connections.SharedConnection:
        await self._shared.start()
        return self._shared

    async def aclose(self) -> None:
        closing = connections.release(self._shared)
        if closing is not None:
            await closing


class NoSeedsYet:
    """A key store file that does not exist yet, as a dry run sees it: it holds no seed."""

    def __init__(self, shown: str) -> None:
        self.shown = shown

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({self.shown}) (not created yet)"

    async def get_seed(self, session_id: str) -> StoredSeed | None:
        return None

    async def put_seed(self, session_id: str, seed: StoredSeed) -> StoredSeed:
        raise StoreError("a dry run keeps no seed")

    async def replace_seed(self, session_id: str, seed: StoredSeed) -> None:
        raise StoreError("a dry run keeps no seed")

    async def destroy_seed(self, session_id: str) -> SeedDestruction:
        raise StoreError("a dry run destroys no seed")

    async def seed_session_ids(self) -> list[str]:
        return []


def _refused(shown: str, why: str) -> CommandError:
    return CommandError(
        f"--key-store {shown} {why}; nothing was read or changed. Give the key store the "
        "applications use (EncryptedSession(..., key_store=...))",
        EXIT_STORE,
    )


def _sqlite_tables(path: Path, shown: str) -> set[str]:
    """The tables of a SQLite file, read through a read-only open."""
    try:
        uri, _ = read_only_files.read_only_uri(path, shown)
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise read_only_files.open_failure(exc, path, shown) from None
    return {str(row[0]) for row in rows}


async def _open_file(
    path: Path, shown: str, *, read_only: bool, may_create: bool, busy_timeout: float
) -> OpenedKeyStore:
    if not path.exists():
        if not may_create:
            raise _refused(shown, "does not exist (no key store file was created)")
        if read_only:  # a dry run of a command that would create it
            return OpenedKeyStore(NoSeedsYet(shown), _nothing)
    elif not path.is_file():
        raise _refused(shown, "is not a file")
    elif SEEDS_TABLE not in _sqlite_tables(path, shown) and not may_create:
        raise _refused(shown, f"holds no {SEEDS_TABLE} table: it is not a key store")
    if read_only:
        reader = ReadOnlySQLiteKeyStore(path, shown, busy_timeout)
        return OpenedKeyStore(reader, reader.aclose)
    writer = SQLiteKeyStore(path)
    return OpenedKeyStore(writer, writer.aclose)


async def _nothing() -> None:
    return None


async def _open_url(url: str, shown: str, *, read_only: bool, may_create: bool) -> OpenedKeyStore:
    try:
        from ..backends._sqlalchemy_key_store import SQLAlchemyKeyStore
        from ..backends._sqlalchemy_schema import missing_tables
        from ..backends._sqlalchemy_store import _engine
    except ImportError:
        raise StoreError(
            "a key store URL needs the sqlalchemy extra: pip install 'encmem[sqlalchemy]'"
        ) from None
    engine = _engine(url, read_only, shown)
    try:
        missing = await missing_tables(engine, [SEEDS_TABLE])
    except Exception as exc:
        await engine.dispose()
        raise StoreError(
            f"cannot connect to the key store {shown} ({type(exc).__name__}); check the URL "
            "and that the server is running"
        ) from None
    if missing and not may_create:
        await engine.dispose()
        raise _refused(shown, f"holds no {SEEDS_TABLE} table: it is not a key store")
    key_store = SQLAlchemyKeyStore(engine=engine)

    async def close() -> None:
        await key_store.aclose()
        await engine.dispose()

    return OpenedKeyStore(key_store, close)


async def open_key_store(
    target: str, *, read_only: bool, may_create: bool, busy_timeout: float
) -> OpenedKeyStore:
    """The key store ``--key-store`` names, checked; its ``close`` must be awaited."""
    shown = shown_target(target)
    url = _database_url(target)
    path = target if url is None else _sqlite_url_path(url) if url.startswith("sqlite") else None
    if url is not None and url.startswith("sqlite") and path is None:
        raise _refused(shown, "is an in-memory database, which holds no seeds")
    if path is not None:
        options = {"read_only": read_only, "may_create": may_create}
        return await _open_file(Path(path), shown, busy_timeout=busy_timeout, **options)
    assert url is not None
    return await _open_url(url, shown, read_only=read_only, may_create=may_create)
