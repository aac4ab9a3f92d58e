"""Storage backends for encmem, installed as ``encmem.backends``.

They store JSON objects and know nothing about encryption; wrap any of them in
:class:`encmem.EncryptedSession` to seal what they store. ``SQLAlchemySession`` and
``AdvancedSQLAlchemySession`` need the ``sqlalchemy`` extra (``pip install
'encmem[sqlalchemy]'``) and are imported on first use.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._advanced_sqlite import AdvancedSQLiteSession
from ._sqlite import SQLiteSession
from ._sqlite_key_store import SQLiteKeyStore
from ._store import SQLiteSessionStore, open_store

if TYPE_CHECKING:
    from ._advanced_sqlalchemy import AdvancedSQLAlchemySession
    from ._sqlalchemy import SQLAlchemySession
    from ._sqlalchemy_key_store import SQLAlchemyKeyStore

__all__ = [
    "AdvancedSQLAlchemySession",
    "AdvancedSQLiteSession",
    "SQLAlchemyKeyStore",
    "SQLAlchemySession",
    "SQLiteKeyStore",
    "SQLiteSession",
    "SQLiteSessionStore",
    "open_store",
]


#: the classes that need the sqlalchemy extra, by the module that defines them
_LAZY = {
    "SQLAlchemySession": "._sqlalchemy",
    "AdvancedSQLAlchemySession": "._advanced_sqlalchemy",
    "SQLAlchemyKeyStore": "._sqlalchemy_key_store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        found = importlib.import_module(module, __name__)
    except ImportError as exc:
        raise ImportError(
            f"{name} needs the sqlalchemy extra: pip install 'encmem[sqlalchemy]'"
        ) from exc
    return getattr(found, name)
