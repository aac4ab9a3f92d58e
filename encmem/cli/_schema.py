"""``encmem schema``: the DDL the SQLAlchemy backends create, for DBAs who apply it themselves."""

from __future__ import annotations

import argparse
import sys

from ..errors import StoreError
from ._export import Output


def schema_sql(url: str, advanced: bool, sessions_table: str, messages_table: str) -> str:
    """The CREATE statements for ``url``'s database, each ended by ``;`` (connects nowhere)."""
    try:
        from ..backends._sqlalchemy_ddl import schema_statements, url_dialect
        from ..backends._store import _database_url
    except ImportError:
        raise StoreError("encmem schema needs the sqlalchemy extra: pip install "
                         "'encmem[sqlalchemy]'") from None  # fmt: skip
    database_url = _database_url(url)
    if database_url is None:
        raise StoreError(
            "encmem schema needs a database URL (postgresql://user@host/dbname, "
            "sqlite+aiosqlite:///file.db); the SQLite backends create their tables themselves"
        )
    statements = schema_statements(
        url_dialect(database_url),
        advanced=advanced,
        sessions_table=sessions_table,
        messages_table=messages_table,
    )
    what = "AdvancedSQLAlchemySession" if advanced else "SQLAlchemySession"
    header = f"-- the tables {what} creates with create_tables=True (idempotent)\n"
    return header + "".join(f"\n{statement};\n" for statement in statements)


def print_schema(args: argparse.Namespace) -> int:
    out = Output(sys.stdout)
    out.write(schema_sql(args.url, args.advanced, args.sessions_table, args.messages_table))
    out.flush()
    return 0
