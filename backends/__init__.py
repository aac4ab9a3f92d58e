"""Storage backends for encmem, installed as ``encmem.backends``.

They store JSON objects and know nothing about encryption; wrap any of them in
:class:`encmem.EncryptedSession` to seal what they store. ``SQLAlchemySession`` needs the
``sqlalchemy`` extra (``pip install 'encmem[sqlalchemy]'``) and is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from ._advanced_sqlite import AdvancedSQLiteSession
from ._sqlite import SQLiteSession
from ._store import SQLiteSessionStore, open_store

if TYPE_CHECKING:
    from ._sqlalchemy import SQLAlchemySession

__all__ = [
    "AdvancedSQLiteSession",
    "SQLAlchemySession",
    "SQLiteSession",
    "SQLiteSessionStore",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name == "SQLAlchemySession":
        try:
            from ._sqlalchemy import SQLAlchemySession
        except ImportError as exc:
            raise ImportError(
                "SQLAlchemySession needs the sqlalchemy extra: pip install 'encmem[sqlalchemy]'"
            ) from exc
        return SQLAlchemySession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
