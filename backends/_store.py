"""Whole session databases, for store-wide maintenance: list sessions, open them, erase one.

``open_store(target)`` takes a SQLite file path or a SQLAlchemy URL (``postgresql://`` means
asyncpg, the driver the ``sqlalchemy`` extra installs). A SQLite file that has the advanced
tables is opened with AdvancedSQLiteSession, so maintenance keeps branches and turn structure
consistent. ``read_only=True`` reads a store without changing a byte of it, or of its -wal
and -shm files, and works on read-only files in read-only directories.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from encmem._items import is_valid_session_id
from encmem._protocol import ErasedRows, SessionStore
from encmem.errors import NotASessionStoreError, StoreError

from . import _advanced_schema as schema
from . import _sqlite_connection as connections
from . import _sqlite_read_only as read_only_files
from ._identifiers import check_table_name
from ._residue import WAL_PENDING, delete_session_rows, scan_files, wipe_residue
from ._sqlite import SQLiteSession

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_DIALECTS = ("mysql", "mariadb", "oracle", "mssql")
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}
"""URL schemes without an async driver, and the driver the ``sqlalchemy`` extra installs."""


def shown_target(target: str) -> str:
    """A path or URL as the user wrote it, for messages: only a URL's password is masked."""
    return repr(re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", target))


def _unwritable(path: Path) -> str | None:
    """What keeps this user from writing the store: the file, its directory, or nothing."""
    if not os.access(path, os.W_OK):
        return "the file"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return "its directory (SQLite writes its -wal, -shm or journal there)"
    return None


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _branches_in_memory(conn: sqlite3.Connection, sessions: str) -> None:
    """A store written by the Agents SDK's advanced session has no branch table, which a
    writer would add; a reader lists the branches from a temporary one, in memory only."""
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA query_only=OFF")
    try:
        conn.execute(
            f"CREATE TEMP TABLE {schema.BRANCHES} (session_id TEXT NOT NULL, branch_id TEXT NOT "
            "NULL, created_at TIMESTAMP, deleted_at TIMESTAMP, PRIMARY KEY (session_id, branch_id))"
        )
        schema.backfill_branches(conn, sessions)
    finally:
        conn.execute("PRAGMA query_only=ON")


class SQLiteSessionStore:
    """Every session in one SQLite file; with ``read_only=True``, read without changing it."""

    def __init__(
        self,
        path: str | Path,
        *,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        busy_timeout: float = connections.BUSY_TIMEOUT_SECONDS,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.sessions_table = check_table_name(sessions_table, "sessions_table")
        self.messages_table = check_table_name(messages_table, "messages_table")
        self.advanced = False
        self.read_only = read_only
        self._shown = shown_target(str(path))
        self._unlocked_state: read_only_files.FileState = None
        self._busy_timeout = busy_timeout
        if read_only:
            self._shared = connections.open_read_only(self.path, self._uri, busy_timeout)
        else:
            self._shared = connections.acquire(self.path, busy_timeout)
        self._sessions: list[SQLiteSession] = []
        self._released = False

    async def check(self) -> SQLiteSessionStore:
        """Fail with a clear error unless the file holds the session tables."""
        if not self.path.exists():
            raise NotASessionStoreError(
                f"there is no file {self._shown} (nothing was created); give the path of a "
                "SQLite database"
            )
        if not self.path.is_file():
            raise NotASessionStoreError(
                f"{self._shown} is not a file; give the path of a SQLite database"
            )
        if not self.read_only and (what := _unwritable(self.path)) is not None:
            raise StoreError(
                f"the store {self._shown} is read-only (this user cannot write {what}), so "
                "nothing was changed; it can still be read without writing to it "
                "(encmem inspect, verify, export and --dry-run runs do)"
            )
        try:
            tables = await (self._read_tables() if self.read_only else self._tables())
        except sqlite3.DatabaseError as exc:
            raise read_only_files.open_failure(exc, self.path, self._shown) from None
        missing = {self.sessions_table, self.messages_table} - tables
        if missing:
            raise NotASessionStoreError(
                f"{self._shown} has no {', '.join(sorted(missing))} table; it is not a "
                "session store (or pass --sessions-table / --messages-table)"
            )
        self.advanced = schema.STRUCTURE in tables
        if self.advanced and self.read_only and schema.BRANCHES not in tables:
            await self._shared.run(lambda conn: _branches_in_memory(conn, self.sessions_table))
        return self

    def _uri(self) -> str:
        """The read-only URI, chosen as the connection opens from the files there then."""
        uri, unlocked = read_only_files.read_only_uri(self.path, self._shown)
        if unlocked and self._unlocked_state is None:  # checked when the store closes
            self._unlocked_state = read_only_files.file_state(self.path)
        return uri

    async def _tables(self) -> set[str]:
        await self._shared.start()
        return await self._shared.run(_table_names)

    async def _read_tables(self) -> set[str]:
        """The tables, read through a read-only open chosen again while a writer creates or
        removes the files beside the database: a choice made as they changed may not open,
        or may read without locks a file a writer has started on."""
        deadline = time.monotonic() + max(self._busy_timeout, 1.0)
        while True:
            seen = read_only_files.companions(self.path)
            try:
                tables = await self._tables()
            except (sqlite3.DatabaseError, StoreError):
                if read_only_files.companions(self.path) == seen or time.monotonic() > deadline:
                    raise
            else:
                unchanged = read_only_files.companions(self.path) == seen
                if self._unlocked_state is None or unchanged or time.monotonic() > deadline:
                    return tables
            closing = connections.release(self._shared)
            if closing is not None:
                await closing
            await asyncio.sleep(0.005)
            self._unlocked_state = None
            self._shared = connections.open_read_only(self.path, self._uri, self._busy_timeout)

    async def session_ids(self) -> list[str]:
        s, m = self.sessions_table, self.messages_table
        rows = await self._shared.run(
            lambda conn: conn.execute(
                f"SELECT session_id FROM {s} UNION SELECT DISTINCT session_id FROM {m} ORDER BY 1"
            ).fetchall()
        )
        # A row whose id no session can be opened with (NULL, blank, NUL...) is left out
        # here, and so counts as unreached in store-wide runs, which then say so.
        return [row[0] for row in rows if is_valid_session_id(row[0])]

    async def count_items(self) -> int:
        m = self.messages_table
        row = await self._shared.run(
            lambda conn: conn.execute(f"SELECT COUNT(*) FROM {m}").fetchone()
        )
        return int(row[0])

    def session(self, session_id: str) -> SQLiteSession:
        if self.advanced:
            from ._advanced_sqlite import AdvancedSQLiteSession

            session: SQLiteSession = AdvancedSQLiteSession(
                session_id=session_id,
                db_path=self.path,
                create_tables=False,
                sessions_table=self.sessions_table,
                messages_table=self.messages_table,
            )
        else:
            session = SQLiteSession(
                session_id,
                self.path,
                sessions_table=self.sessions_table,
                messages_table=self.messages_table,
            )
        if self.read_only:
            session._read_through(self._shared)  # the store and its sessions are one package
        self._sessions.append(session)
        return session

    async def erase_session(self, session_id: str) -> int:
        """Delete every row of the session, then empty the WAL; return the rows removed.

        Raises :class:`ResiduePendingError` (after the delete) when another connection's read
        transaction kept the WAL from being emptied; erasing again later finishes the job.
        """
        return (await self.erase_rows(session_id)).removed(session_id)

    async def erase_rows(self, session_id: str) -> ErasedRows:
        """Delete every row of the session from every table, then empty the WAL."""
        if self.read_only:
            raise StoreError(f"{self._shown} was opened read-only; nothing was erased")
        sessions = self.sessions_table
        own = schema.erasable_tables(sessions, self.messages_table, self.advanced)

        def erase(conn: sqlite3.Connection) -> ErasedRows:
            removed = connections.immediate(
                conn, lambda conn: delete_session_rows(conn, session_id, sessions, own)
            )
            emptied = wipe_residue(conn)
            return ErasedRows(removed, not emptied, "WAL emptied" if emptied else WAL_PENDING)

        await self._shared.start()
        return await self._shared.run(erase)

    async def residue_hits(
        self, session_id: str, tokens: Sequence[str]
    ) -> tuple[int | None, int]:
        """How often the session id, and any of ``tokens``, still occur in the file's bytes
        (the database and its WAL): both 0 once an erase is complete."""
        others = [sid for sid in await self.session_ids() if session_id in sid]
        return scan_files(self.path, session_id, tokens, others)

    async def last_writes(self) -> dict[str, float]:
        """When each session was last written to (its session row's ``updated_at``)."""
        s = self.sessions_table
        rows = await self._shared.run(
            lambda conn: conn.execute(
                f"SELECT session_id, CAST(strftime('%s', updated_at) AS INTEGER) FROM {s}"
            ).fetchall()
        )
        return {str(sid): float(when) for sid, when in rows if when is not None}

    async def aclose(self) -> None:
        """Close every session opened through the store, then the store's connection.

        A read-only store that read its file without locks (a WAL file with no log beside
        it) raises StoreError here if the file was written to meanwhile.
        """
        if self._released:
            return
        self._released = True
        for session in self._sessions:
            await session.close()
        self._sessions.clear()
        closing = connections.release(self._shared)
        if closing is not None:
            await closing
        if (
            self._unlocked_state is not None
            and read_only_files.file_state(self.path) != self._unlocked_state
        ):
            raise StoreError(
                f"{self._shown} was written to while it was read (a writer started meanwhile), "
                "so what was read may be inconsistent; run again"
            )

    async def close(self) -> None:
        """The same as :meth:`aclose`."""
        await self.aclose()

    async def __aenter__(self) -> SQLiteSessionStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _database_url(target: str) -> str | None:
    """``target`` as a SQLAlchemy URL with an async driver, or None when it is a file path."""
    match = _SCHEME.match(target)
    if match is None or Path(target).exists():
        return None
    scheme = match.group(1).lower()
    if scheme in _DEFAULT_DRIVERS:
        return _DEFAULT_DRIVERS[scheme] + target[match.end(1) :]
    if "+" in scheme:
        return target
    if scheme in _DIALECTS:  # SQLAlchemy's default drivers for these are not async
        raise StoreError(
            f"the URL {shown_target(target)} names no driver, and SQLAlchemy's default one for "
            f"{match.group(1)!r} is not async; name an async driver: DIALECT+DRIVER://, such "
            "as mysql+aiomysql://"
        )
    raise NotASessionStoreError(
        f"{shown_target(target)} is not a file, and {match.group(1)!r} is not a database URL "
        "scheme; give a SQLite file path or a SQLAlchemy URL such as "
        "postgresql://user@host/dbname or sqlite+aiosqlite:///file.db"
    )


_NEEDS_EXTRA = "database URLs need the sqlalchemy extra: pip install 'encmem[sqlalchemy]'"


def _sqlite_url_path(url: str) -> str | None:
    """The file a ``sqlite+aiosqlite:///`` URL names (None for an in-memory database)."""
    try:
        from sqlalchemy.engine import make_url
    except ImportError:
        raise StoreError(_NEEDS_EXTRA) from None

    database = make_url(url).database
    return database if database and database != ":memory:" else None


Preflight = Callable[[SessionStore], Awaitable[None]]
"""A check a caller runs on the store opened read-only before it is opened for writing."""


async def _open_checked(
    text: str, url: str | None, read_only: bool, **options: Any
) -> SessionStore:
    path = _sqlite_url_path(url) if url and read_only and url.startswith("sqlite") else None
    if url is not None and path is None:
        try:
            from ._sqlalchemy_store import SQLAlchemySessionStore
        except ImportError:
            raise StoreError(_NEEDS_EXTRA) from None
        options.pop("busy_timeout")
        return await SQLAlchemySessionStore(
            url, read_only=read_only, shown=shown_target(text), **options
        ).check()
    store = SQLiteSessionStore(path or text, read_only=read_only, **options)
    try:
        return await store.check()
    except BaseException:
        await store.aclose()
        raise


async def open_store(
    target: str | Path,
    *,
    sessions_table: str = "agent_sessions",
    messages_table: str = "agent_messages",
    busy_timeout: float = connections.BUSY_TIMEOUT_SECONDS,
    read_only: bool = False,
    preflight: Preflight | None = None,
) -> SessionStore:
    """Open a session database by SQLite path or SQLAlchemy URL, checking it holds sessions.

    ``postgresql://`` and ``postgres://`` URLs use asyncpg, ``sqlite://`` ones aiosqlite.
    With ``read_only=True`` nothing is written, created or switched (a SQLite file is read
    through a read-only URI, even in a read-only directory); a missing file is an error.
    A store opened for writing is first opened read-only and checked, then given to
    ``preflight`` (which raises to refuse), and only then opened for writing: a file that
    is no session store, or a refusal of ``preflight``, leaves every byte as it was.
    """
    text = str(target)
    url = _database_url(text)
    options: dict[str, Any] = {
        "sessions_table": sessions_table,
        "messages_table": messages_table,
        "busy_timeout": busy_timeout,
    }
    if read_only:
        return await _open_checked(text, url, True, **options)
    local = text if url is None else _sqlite_url_path(url) if url.startswith("sqlite") else None
    if local is not None:
        read_only_files.roll_back_hot_journal(Path(local), busy_timeout)
    probe = await _open_checked(text, url, True, **options)
    try:
        if preflight is not None:
            await preflight(probe)
    finally:
        await probe.aclose()
    return await _open_checked(text, url, False, **options)
