"""The Agents SDK's session tables in SQLAlchemy terms: definitions, DDL, and reflection.

The tables match the SDK's ``SQLAlchemySession`` column for column, so a database written by
either opens in the other. Creation is safe against other processes creating them at once;
reflection answers which tables are missing and which tables hold rows of a session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    TIMESTAMP,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.expression import Executable


def _timestamp(name: str) -> Column[datetime]:
    return Column(
        name,
        TIMESTAMP(timezone=False),
        server_default=sql_text("CURRENT_TIMESTAMP"),
        nullable=False,
    )


def index_name(messages_table: str, limit: int) -> str:
    """``idx_<table>_session_id``, shortened with a hash when it exceeds the dialect's limit."""
    name = f"idx_{messages_table}_session_id"
    if len(name) <= limit:
        return name
    digest = hashlib.blake2b(messages_table.encode(), digest_size=6).hexdigest()
    return f"idx_{messages_table[: max(1, limit - 30)]}_{digest}_sid"


def advisory_key(*names: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock, from the table names."""
    digest = hashlib.blake2b("\0".join(("encmem-schema", *names)).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def seeds_table(name: str, metadata: MetaData) -> Table:
    """A seeds table called ``name`` in ``metadata``."""
    return Table(
        name,
        metadata,
        Column("session_id", String, primary_key=True),
        Column("seed_id", String, nullable=False),
        Column("kid", String, nullable=False),
        Column("sealed", Text, nullable=False),
        _timestamp("created_at"),
    )


class SessionTables:
    """The sessions and messages tables (and the messages index) under validated names."""

    def __init__(self, sessions_table: str, messages_table: str, dialect: Dialect) -> None:
        self.names = (sessions_table, messages_table)
        metadata = MetaData()
        self.sessions = Table(
            sessions_table,
            metadata,
            Column("session_id", String, primary_key=True),
            _timestamp("created_at"),
            _timestamp("updated_at"),
        )
        self.messages = Table(
            messages_table,
            metadata,
            # BIGSERIAL on PostgreSQL; SQLite needs INTEGER for its AUTOINCREMENT rowid alias.
            Column(
                "id",
                BigInteger().with_variant(Integer(), "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            Column(
                "session_id",
                String,
                ForeignKey(f"{sessions_table}.session_id", ondelete="CASCADE"),
                nullable=False,
            ),
            Column("message_data", Text, nullable=False),
            _timestamp("created_at"),
            sqlite_autoincrement=True,
        )
        self.index = Index(
            index_name(messages_table, dialect.max_identifier_length or 63),
            self.messages.c.session_id,
            self.messages.c.id,
        )
        # EncryptedSession's seeds (crypto-shredding), kept in the session store by default.
        self.seeds = seeds_table(f"{messages_table}_seeds", metadata)
        # EncryptedSession's history heads: one opaque text per session and branch.
        self.heads = Table(
            f"{messages_table}_heads",
            metadata,
            Column(
                "session_id",
                String,
                ForeignKey(f"{sessions_table}.session_id", ondelete="CASCADE"),
                primary_key=True,
            ),
            Column("branch_id", String, primary_key=True),
            Column("head", Text, nullable=False),
        )

    def ddl(self) -> list[Executable]:
        """CREATE ... IF NOT EXISTS for these tables and the index, in order."""
        return [
            CreateTable(self.sessions, if_not_exists=True),
            CreateTable(self.messages, if_not_exists=True),
            CreateIndex(self.index, if_not_exists=True),
            CreateTable(self.heads, if_not_exists=True),
            CreateTable(self.seeds, if_not_exists=True),
        ]


async def create_tables(engine: AsyncEngine, tables: SessionTables) -> None:
    """CREATE ... IF NOT EXISTS, safe against other processes doing the same at once."""
    statements = tables.ddl()
    is_postgresql = engine.dialect.name == "postgresql"
    for attempt in (1, 2):
        try:
            async with engine.begin() as conn:
                if is_postgresql:
                    # IF NOT EXISTS still races on pg_type's unique index; an advisory lock
                    # held to commit makes concurrent creators take turns.
                    key = advisory_key(*tables.names)
                    await conn.execute(select(func.pg_advisory_xact_lock(key)))
                for statement in statements:
                    await conn.execute(statement)
            return
        except IntegrityError:
            # Dialects without the lock: a concurrent creator won; its tables will do.
            if attempt == 2 or is_postgresql:
                raise


async def missing_tables(engine: AsyncEngine, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that the database has no table for, in the order given."""

    def missing(sync_conn: Connection) -> list[str]:
        inspector = inspect(sync_conn)
        return [name for name in names if not inspector.has_table(name)]

    async with engine.connect() as conn:
        return await conn.run_sync(missing)


async def tables_with_session_id(engine: AsyncEngine) -> list[str]:
    """Every table with a ``session_id`` column: the ones erasing a session must reach."""

    def with_session_id(sync_conn: Connection) -> list[str]:
        inspector = inspect(sync_conn)
        return [
            name
            for name in inspector.get_table_names()
            if any(col["name"] == "session_id" for col in inspector.get_columns(name))
        ]

    async with engine.connect() as conn:
        return await conn.run_sync(with_session_id)
