"""The DDL the SQLAlchemy backends run, as SQL text, for DBAs who apply schema changes themselves.

Compiled from the very Table and Index objects the sessions create (``SessionTables`` and
``AdvancedTables``), for the dialect a URL names; nothing connects to the database.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.schema import ExecutableDDLElement

from encmem.errors import MissingTablesError, StoreError

from ._advanced_sqlalchemy_schema import AdvancedTables
from ._identifiers import check_table_name
from ._sqlalchemy_schema import SessionTables


def url_dialect(url: str) -> Dialect:
    """The SQLAlchemy dialect ``url`` names (``postgresql://`` means asyncpg), unconnected."""
    try:
        return make_url(url).get_dialect()()
    except NoSuchModuleError:
        raise StoreError(
            "the URL names a database dialect or driver that SQLAlchemy does not know"
        ) from None
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"the URL is malformed ({type(exc).__name__})") from None


def schema_statements(
    dialect: Dialect,
    *,
    advanced: bool = False,
    sessions_table: str = "agent_sessions",
    messages_table: str = "agent_messages",
) -> list[str]:
    """Each CREATE statement, in the order the backend runs them (without the ``;``).

    ``advanced``: AdvancedSQLAlchemySession's tables too (branches, turn structure, usage).
    """
    sessions = check_table_name(sessions_table, "sessions_table")
    messages = check_table_name(messages_table, "messages_table")
    tables = SessionTables(sessions, messages, dialect)
    statements = tables.ddl()
    if advanced:
        statements.extend(AdvancedTables(tables, dialect).ddl())
    ddl = [statement for statement in statements if isinstance(statement, ExecutableDDLElement)]
    compiled = (str(statement.compile(dialect=dialect)).strip() for statement in ddl)
    return ["\n".join(line.rstrip() for line in sql.splitlines()) for sql in compiled]


def missing_tables_error(session: object, missing: Sequence[str]) -> MissingTablesError:
    """What a session made with ``create_tables=False`` raises on a database without its
    tables: how to create them either way (the session itself, or ``encmem schema``)."""
    kind = type(session).__name__
    advanced = " --advanced" if kind.startswith("Advanced") else ""
    return MissingTablesError(
        f"table(s) {', '.join(missing)} missing from the database and {kind} was made with "
        "create_tables=False; pass create_tables=True to create them, or print their DDL "
        f"with `encmem schema --url URL{advanced}` and apply it (or your migrations)",
        tables=missing,
    )
