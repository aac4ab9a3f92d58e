"""The stores every behavioural contract runs against: each backend, plain and encrypted.

A *store* is a place sessions live (a SQLite file, a database URL). ``open(session_id)``
returns a new session object on it, so reopening is just opening again. Backends register
themselves in ``tests/stores_<name>.py`` modules that define ``STORES``; this module gathers
them.
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from encmem.backends import SQLiteSession

from encmem import EncryptedSession, Keyring


class Store:
    """Base: opens sessions and closes them all at the end."""

    name = "store"
    #: whether the store can answer raw_messages() (read stored JSON text without the API)
    has_raw = False

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sessions: list[Any] = []

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def open(self, session_id: str, **kwargs: Any) -> Any:
        session = await self._open(session_id, **kwargs)
        self.sessions.append(session)
        return session

    def raw_messages(self, session_id: str) -> list[str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        for session in self.sessions:
            closer = getattr(session, "close", None)
            if closer is None:
                continue
            result = closer()
            if hasattr(result, "__await__"):
                await result


class SQLiteStore(Store):
    name = "sqlite"
    has_raw = True

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.path = tmp / "store.db"

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        return SQLiteSession(session_id, self.path, **kwargs)

    def raw_messages(self, session_id: str) -> list[str]:
        return sqlite_raw_messages(self.path, session_id)


def sqlite_raw_messages(path: Path, session_id: str) -> list[str]:
    """The stored JSON text of a session's items in a SQLite file, read around the API."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT message_data FROM agent_messages WHERE session_id = ? ORDER BY id",
            (session_id,),
        ).fetchall()
    return [row[0] for row in rows]


class EncryptedStore(Store):
    """Wraps every session of an inner store in EncryptedSession."""

    def __init__(self, inner: Store, keyring: Keyring, **options: Any) -> None:
        super().__init__(inner.tmp)
        self.inner = inner
        self.keyring = keyring
        self.options = options
        self.name = inner.name + "-encrypted"
        self.has_raw = inner.has_raw

    async def _open(self, session_id: str, **kwargs: Any) -> Any:
        underlying = await self.inner.open(session_id, **kwargs)
        return EncryptedSession(
            session_id=session_id,
            underlying_session=underlying,
            encryption_key=self.keyring,
            **self.options,
        )

    def raw_messages(self, session_id: str) -> list[str]:
        return self.inner.raw_messages(session_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


StoreFactory = Callable[[Path], Store | Awaitable[Store]]

STORES: dict[str, Callable[[Path], Store]] = {"sqlite": SQLiteStore}

_HERE = Path(__file__).parent
for _path in sorted(_HERE.glob("stores_*.py")):
    _module = importlib.import_module(f"tests.{_path.stem}")
    STORES.update(_module.STORES)
