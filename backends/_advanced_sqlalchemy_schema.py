"""The advanced tables of AdvancedSQLAlchemySession in SQLAlchemy terms: definitions and DDL.

The same tables, columns and indexes as :mod:`._advanced_schema` (the seed's
``message_structure`` and ``turn_usage``, plus ``session_branches``), so a SQLite file written
by AdvancedSQLiteSession opens here and the hot queries seek the same indexes on PostgreSQL.
Timestamps are UTC on every database, as SQLite's ``CURRENT_TIMESTAMP`` is.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    TIMESTAMP,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    literal,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.expression import Executable, TextClause

from ._advanced_schema import BRANCHES, STRUCTURE, USAGE
from ._sqlalchemy_schema import SessionTables, advisory_key

#: ids: BIGSERIAL-sized on PostgreSQL, the rowid alias (INTEGER) on SQLite
_ID = BigInteger().with_variant(Integer(), "sqlite")
#: token counts add up over a turn's runs, so they get 64 bits where the database has a choice
_COUNT = BigInteger().with_variant(Integer(), "sqlite")


def utc_now(dialect: Dialect) -> TextClause:
    """The current UTC time as SQL (PostgreSQL's CURRENT_TIMESTAMP is in the session's zone)."""
    if dialect.name == "postgresql":
        return sql_text("(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')")
    return sql_text("CURRENT_TIMESTAMP")


def _created_at(dialect: Dialect) -> Column[datetime]:
    return Column("created_at", TIMESTAMP(timezone=False), server_default=utc_now(dialect))


def _session_fk(tables: SessionTables) -> ForeignKey:
    return ForeignKey(f"{tables.names[0]}.session_id", ondelete="CASCADE")


class AdvancedTables:
    """``message_structure``, ``turn_usage`` and ``session_branches`` next to a session's tables."""

    def __init__(self, tables: SessionTables, dialect: Dialect) -> None:
        self.base = tables
        # In the base tables' metadata, which the foreign keys resolve against.
        self.structure = self._structure(tables, dialect)
        self.usage = self._usage(tables, dialect)
        self.branches = self._branches(tables, dialect)
        s = self.structure
        self.indexes = [
            Index(f"encmem_{STRUCTURE}_branch_seq", s.c.session_id, s.c.branch_id,
                  s.c.sequence_number, unique=True),
            Index(f"encmem_{STRUCTURE}_message", s.c.message_id, s.c.branch_id, unique=True),
            Index(f"encmem_{STRUCTURE}_turn", s.c.session_id, s.c.branch_id,
                  s.c.user_turn_number),
        ]  # fmt: skip

    @staticmethod
    def _structure(tables: SessionTables, dialect: Dialect) -> Table:
        return Table(
            STRUCTURE,
            tables.sessions.metadata,
            Column("id", _ID, primary_key=True, autoincrement=True),
            Column("session_id", String, _session_fk(tables), nullable=False),
            Column(
                "message_id",
                _ID,
                ForeignKey(f"{tables.names[1]}.id", ondelete="CASCADE"),
                nullable=False,
            ),
            Column("branch_id", String, nullable=False, server_default="main"),
            Column("message_type", String, nullable=False),
            Column("sequence_number", Integer, nullable=False),
            Column("user_turn_number", Integer),
            Column("branch_turn_number", Integer),
            Column("tool_name", String),
            _created_at(dialect),
            sqlite_autoincrement=True,
        )

    @staticmethod
    def _usage(tables: SessionTables, dialect: Dialect) -> Table:
        return Table(
            USAGE,
            tables.sessions.metadata,
            Column("id", _ID, primary_key=True, autoincrement=True),
            Column("session_id", String, _session_fk(tables), nullable=False),
            Column("branch_id", String, nullable=False, server_default="main"),
            Column("user_turn_number", Integer, nullable=False),
            *(
                Column(name, _COUNT, server_default="0")
                for name in ("requests", "input_tokens", "output_tokens", "total_tokens")
            ),
            # JSON text written and read by encmem itself (details merge key by key).
            Column("input_tokens_details", Text),
            Column("output_tokens_details", Text),
            _created_at(dialect),
            UniqueConstraint("session_id", "branch_id", "user_turn_number"),
            sqlite_autoincrement=True,
        )

    @staticmethod
    def _branches(tables: SessionTables, dialect: Dialect) -> Table:
        return Table(
            BRANCHES,
            tables.sessions.metadata,
            Column("session_id", String, _session_fk(tables), primary_key=True),
            Column("branch_id", String, primary_key=True),
            _created_at(dialect),
            Column("deleted_at", TIMESTAMP(timezone=False)),
        )

    def ddl(self) -> list[Executable]:
        """CREATE ... IF NOT EXISTS for the advanced tables and their indexes, in order."""
        return [
            CreateTable(self.structure, if_not_exists=True),
            CreateTable(self.usage, if_not_exists=True),
            CreateTable(self.branches, if_not_exists=True),
            *(CreateIndex(index, if_not_exists=True) for index in self.indexes),
        ]

    def required(self) -> tuple[str, ...]:
        """The tables ``create_tables=False`` needs to find (the branch table can be added)."""
        return (*self.base.names, STRUCTURE, USAGE)


async def take_schema_lock(conn: AsyncConnection, tables: SessionTables) -> None:
    """Make concurrent schema changes take turns, until this transaction ends.

    PostgreSQL: the advisory lock the base tables' creation takes too. SQLite: a write that
    changes nothing, which takes the database's writer lock before anything is read.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(advisory_key(*tables.names))))
    elif conn.dialect.name == "sqlite":
        s = tables.sessions
        await conn.execute(
            update(s).where(literal(False)).values(session_id=s.c.session_id)
        )


async def create_advanced_tables(engine: AsyncEngine, tables: AdvancedTables) -> None:
    """Create what is missing; register the branches of a database that had no branch table."""
    async with engine.begin() as conn:
        await take_schema_lock(conn, tables.base)
        fresh = not await conn.run_sync(lambda sync: inspect(sync).has_table(BRANCHES))
        for statement in tables.ddl():
            await conn.execute(statement)
        if fresh:
            await conn.execute(_backfill(tables))


def _backfill(tables: AdvancedTables) -> Executable:
    """Branches of a database written by the Agents SDK (it keeps no branch table)."""
    s, b, sessions = tables.structure, tables.branches, tables.base.sessions
    found = (
        select(s.c.session_id, s.c.branch_id, func.min(s.c.created_at))
        .where(s.c.session_id.in_(select(sessions.c.session_id)))
        .group_by(s.c.session_id, s.c.branch_id)
    )
    return b.insert().from_select(["session_id", "branch_id", "created_at"], found)

