"""A whole SQLAlchemy database of sessions, for store-wide maintenance and the command.

A database that has the advanced tables (``message_structure`` ...) hands out
AdvancedSQLAlchemySession, so purge, rotate, verify and erase keep branches and turn structure.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InvalidRequestError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from encmem._items import is_valid_session_id
from encmem._protocol import ErasedRows
from encmem.errors import NotASessionStoreError, StoreError

from ._advanced_schema import STRUCTURE, erasable_tables
from ._identifiers import check_table_name
from ._pg_url import asyncpg_options
from ._residue import WAL_PENDING, checkpoint_truncate, scan_files
from ._sqlalchemy import SQLAlchemySession
from ._sqlalchemy_engine import open_engine
from ._sqlalchemy_schema import missing_tables, tables_with_session_id


def _asyncpg_url(url: str, options: dict[str, Any], shown: str) -> str:
    """``url`` without the libpq parameters asyncpg refuses; ``options`` gets them instead."""
    parsed = make_url(url)
    try:
        removed, options["connect_args"] = asyncpg_options(parsed.query)
    except ValueError as exc:
        raise StoreError(f"the URL {shown} cannot be used: {exc}") from None
    return parsed.difference_update_query(removed).render_as_string(hide_password=False)


def _engine(url: str, read_only: bool, shown: str) -> AsyncEngine:
    """An engine for ``url``, or a StoreError that says what is wrong with the URL."""
    options: dict[str, Any] = {}
    if read_only and url.startswith("postgresql+asyncpg"):
        # Read-only transactions: the server refuses any write this store might attempt.
        options["execution_options"] = {"postgresql_readonly": True}
    try:
        if url.startswith("postgresql+asyncpg"):
            url = _asyncpg_url(url, options, shown)
        return open_engine(url, options)
    except ImportError as exc:
        raise StoreError(
            f"the URL {shown} needs the Python module {exc.name!r}, which is not installed "
            "(pip install it, or name another driver: dialect+driver://...)"
        ) from None
    except InvalidRequestError:
        raise StoreError(
            f"the URL {shown} names a driver that is not async; name an async one, e.g. "
            "postgresql+asyncpg://, sqlite+aiosqlite:///, mysql+aiomysql://"
        ) from None
    except NoSuchModuleError:
        raise StoreError(
            f"the URL {shown} names a database dialect or driver that SQLAlchemy does not know"
        ) from None
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"the URL {shown} is malformed ({type(exc).__name__})") from None


def _unreachable(exc: BaseException) -> str:
    """Why a database server could not be reached, in words (never a message that might
    echo the URL's password)."""
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _epoch(value: Any) -> float:
    """A stored timestamp (a datetime, or SQLite's UTC text) in seconds since the epoch."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return float(value.timestamp())
    return float(value)


class SQLAlchemySessionStore:
    """Every session in the session tables of one database URL."""

    def __init__(
        self,
        url: str,
        *,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        read_only: bool = False,
        shown: str = "given",
    ) -> None:
        self.sessions_table = check_table_name(sessions_table, "sessions_table")
        self.messages_table = check_table_name(messages_table, "messages_table")
        self.read_only = read_only
        self.engine = _engine(url, read_only, shown)
        self._shown = shown
        self.advanced = False
        self._sessions: list[SQLAlchemySession] = []

    async def _structure_is_ours(self) -> bool:
        """Whether ``message_structure`` belongs to this store's messages table (its foreign
        key points there): another table set of the same database may have it."""

        def refers(sync: Any) -> bool:
            keys = inspect(sync).get_foreign_keys(STRUCTURE)
            return any(key.get("referred_table") == self.messages_table for key in keys)

        async with self.engine.connect() as conn:
            return bool(await conn.run_sync(refers))

    async def check(self) -> SQLAlchemySessionStore:
        """Fail with a clear error unless the database holds the session tables."""
        try:
            names = (self.sessions_table, self.messages_table, STRUCTURE)
            missing = await missing_tables(self.engine, names)
        except (SQLAlchemyError, OSError) as exc:
            await self.engine.dispose()
            raise StoreError(
                f"cannot connect to {self._shown} ({_unreachable(exc)}); check the URL and that "
                "the server is running"
            ) from None
        self.advanced = STRUCTURE not in missing and await self._structure_is_ours()
        missing = [name for name in missing if name != STRUCTURE]
        if missing:
            await self.engine.dispose()
            raise NotASessionStoreError(
                f"the database has no {', '.join(sorted(missing))} table; it is not a session "
                "store (or pass --sessions-table / --messages-table)"
            )
        return self

    async def session_ids(self) -> list[str]:
        s, m = self.sessions_table, self.messages_table
        query = text(
            f"SELECT session_id FROM {s} UNION SELECT DISTINCT session_id FROM {m} ORDER BY 1"
        )
        async with self.engine.connect() as conn:
            ids = [row[0] for row in await conn.execute(query)]
        return [session_id for session_id in ids if is_valid_session_id(session_id)]

    async def count_items(self) -> int:
        async with self.engine.connect() as conn:
            result = await conn.execute(text(f"SELECT COUNT(*) FROM {self.messages_table}"))
            return int(result.scalar_one())

    def session(self, session_id: str) -> SQLAlchemySession:
        kind = SQLAlchemySession
        if self.advanced:
            from ._advanced_sqlalchemy import AdvancedSQLAlchemySession

            kind = AdvancedSQLAlchemySession
        session = kind(
            session_id,
            engine=self.engine,
            create_tables=False,
            sessions_table=self.sessions_table,
            messages_table=self.messages_table,
        )
        self._sessions.append(session)
        return session

    async def erase_session(self, session_id: str) -> int:
        """Delete every row of the session; return the rows removed.

        :class:`ResiduePendingError` when old copies of the rows' pages remain (SQLite: other
        readers kept the WAL; PostgreSQL: VACUUM could not run).
        """
        return (await self.erase_rows(session_id)).removed(session_id)

    async def erase_rows(self, session_id: str) -> ErasedRows:
        """Delete every row of the session from every table, then clear what the delete
        leaves behind: SQLite's WAL is emptied, PostgreSQL's tables are VACUUMed."""
        if self.read_only:
            raise StoreError("the store was opened read-only; nothing was erased")
        own = erasable_tables(self.sessions_table, self.messages_table, self.advanced)
        tables = [name for name in await tables_with_session_id(self.engine) if name in own]
        ordered = sorted(tables, key=lambda name: name == self.sessions_table)
        removed: dict[str, int] = {}
        async with self.engine.begin() as conn:
            for table in ordered:  # counted first: cascaded deletes are not in rowcounts
                check_table_name(table, "table")
                result = await conn.execute(
                    text(f"SELECT COUNT(*) FROM {table} WHERE session_id = :sid"),
                    {"sid": session_id},
                )
                removed[table] = int(result.scalar_one())
            for table in ordered:
                await conn.execute(
                    text(f"DELETE FROM {table} WHERE session_id = :sid"), {"sid": session_id}
                )
        rows = {table: count for table, count in removed.items() if count}
        if self.engine.dialect.name == "postgresql":
            async with self.engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                for table in ordered:
                    await auto.exec_driver_sql(f"VACUUM {table}")
            return ErasedRows(rows, False, "VACUUM ran on every table the session had rows in")
        async with self.engine.connect() as conn:
            emptied = await conn.run_sync(
                lambda sync: checkpoint_truncate(lambda sql: sync.exec_driver_sql(sql).first())
            )
        return ErasedRows(rows, not emptied, "WAL emptied" if emptied else WAL_PENDING)

    async def residue_hits(
        self, session_id: str, tokens: Sequence[str]
    ) -> tuple[int | None, int] | None:
        """A byte scan of a SQLite file and its WAL (None on a database server)."""
        path = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not path or path == ":memory:":
            return None
        others = [sid for sid in await self.session_ids() if session_id in sid]
        return scan_files(Path(path), session_id, tokens, others)

    async def last_writes(self) -> dict[str, float]:
        """When each session was last written to (its session row's ``updated_at``)."""
        s = self.sessions_table
        check_table_name(s, "table")
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(f"SELECT session_id, updated_at FROM {s}"))).all()
        return {str(sid): _epoch(when) for sid, when in rows if when is not None}

    async def close(self) -> None:
        """Close the sessions handed out and dispose the engine. Idempotent."""
        for session in self._sessions:
            await session.close()
        self._sessions.clear()
        await self.engine.dispose()

    async def aclose(self) -> None:
        """The same as ``close()``."""
        await self.close()

    async def __aenter__(self) -> SQLAlchemySessionStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
