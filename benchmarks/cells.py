"""The sessions under test: encmem's and the Agents SDK's, per backend, plain or encrypted.

Every import happens inside the factory, so a backend that is missing or broken makes only its
own cells unavailable. Each cell opens on a fresh temp dir (SQLite) or an emptied schema
(PostgreSQL).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMPLS = ("encmem", "sdk")
BACKENDS = ("sqlite", "advanced", "sqla-sqlite", "sqla-pg", "advanced-pg")
PG_BACKENDS = ("sqla-pg", "advanced-pg")
#: backends the Agents SDK has no class for: encmem only (ratios use SDK_BASELINE's cells)
ENCMEM_ONLY = ("advanced-pg",)
#: the SDK backend an encmem-only backend is compared with (the SDK's SQLAlchemySession)
SDK_BASELINE = {"advanced-pg": "sqla-pg"}
TTL_SECONDS = 600


class Unavailable(Exception):
    """The cell cannot run here (import failure, no server); the message says why."""


@dataclass(frozen=True)
class CellSpec:
    impl: str
    backend: str
    encrypted: bool

    @property
    def name(self) -> str:
        return f"{self.impl}/{self.backend}/{'enc' if self.encrypted else 'plain'}"

    @property
    def pair(self) -> str:
        """What encmem and the SDK share: backend and mode (the key of the ratio table)."""
        return f"{self.backend}/{'enc' if self.encrypted else 'plain'}"


@dataclass
class Cell:
    spec: CellSpec
    session: Any
    inner: Any
    closers: list[Callable[[], Any]] = field(default_factory=list)

    async def close(self) -> None:
        for closer in self.closers:
            result = closer()
            if inspect.isawaitable(result):
                await result


def all_specs(with_pg: bool = True) -> list[CellSpec]:
    return [
        CellSpec(impl, backend, encrypted)
        for backend in BACKENDS
        if with_pg or backend not in PG_BACKENDS
        for encrypted in (False, True)
        for impl in IMPLS
        if impl == "encmem" or backend not in ENCMEM_ONLY
    ]


def _import(what: str, loader: Callable[[], Any]) -> Any:
    try:
        return loader()
    except Exception as exc:  # any failure to import makes the cell unavailable
        raise Unavailable(f"{what} cannot be imported: {type(exc).__name__}: {exc}") from exc


def _encmem_inner(spec: CellSpec, sid: str, db: Path, pg_url: str | None) -> tuple[Any, Any]:
    def load_sqlite() -> Any:
        from encmem.backends._sqlite import SQLiteSession

        return SQLiteSession

    def load_advanced() -> Any:
        from encmem.backends._advanced_sqlite import AdvancedSQLiteSession

        return AdvancedSQLiteSession

    def load_sqla() -> Any:
        from encmem.backends._sqlalchemy import SQLAlchemySession

        return SQLAlchemySession

    def load_advanced_sqla() -> Any:
        from encmem.backends._advanced_sqlalchemy import AdvancedSQLAlchemySession

        return AdvancedSQLAlchemySession

    if spec.backend == "sqlite":
        session = _import("encmem.backends._sqlite", load_sqlite)(sid, db)
    elif spec.backend == "advanced":
        cls = _import("encmem.backends._advanced_sqlite", load_advanced)
        session = cls(session_id=sid, db_path=db, create_tables=True)
    elif spec.backend == "advanced-pg":
        cls = _import("encmem.backends._advanced_sqlalchemy", load_advanced_sqla)
        session = cls.from_url(sid, url=_sqla_url(spec, db, pg_url), create_tables=True)
    else:
        cls = _import("encmem.backends._sqlalchemy", load_sqla)
        session = cls.from_url(sid, url=_sqla_url(spec, db, pg_url), create_tables=True)
    return session, session.close


def _sdk_inner(spec: CellSpec, sid: str, db: Path, pg_url: str | None) -> tuple[Any, Any]:
    if spec.backend == "sqlite":
        cls = _import("agents.SQLiteSession", lambda: __import__("agents").SQLiteSession)
        session = cls(sid, db)
        return session, session.close
    memory = _import(
        "agents.extensions.memory",
        lambda: __import__("agents.extensions.memory", fromlist=["x"]),
    )
    if spec.backend == "advanced":
        session = memory.AdvancedSQLiteSession(session_id=sid, db_path=db, create_tables=True)
        return session, session.close
    session = memory.SQLAlchemySession.from_url(
        sid, url=_sqla_url(spec, db, pg_url), create_tables=True
    )
    return session, session.engine.dispose


def _sqla_url(spec: CellSpec, db: Path, pg_url: str | None) -> str:
    if spec.backend == "sqla-sqlite":
        return f"sqlite+aiosqlite:///{db}"
    if pg_url is None:
        raise Unavailable("no PostgreSQL server (ENCMEM_TEST_PG_URL unset, pg-server failed)")
    return pg_url


def _wrap(spec: CellSpec, sid: str, inner: Any, key: str, keyring: Any | None) -> Any:
    if spec.impl == "encmem":
        from encmem import EncryptedSession

        return EncryptedSession(
            sid, inner, keyring if keyring is not None else key, ttl=TTL_SECONDS
        )
    from agents.extensions.memory import EncryptedSession as SDKEncryptedSession

    return SDKEncryptedSession(sid, inner, key, ttl=TTL_SECONDS)


async def open_cell(
    spec: CellSpec,
    workdir: Path,
    key: str,
    *,
    session_id: str = "bench",
    pg_url: str | None = None,
    keyring: Any | None = None,
) -> Cell:
    """Open the session of ``spec`` on ``workdir/bench.db`` (or PostgreSQL)."""
    db = workdir / "bench.db"
    factory = _encmem_inner if spec.impl == "encmem" else _sdk_inner
    inner, closer = factory(spec, session_id, db, pg_url)
    session = _wrap(spec, session_id, inner, key, keyring) if spec.encrypted else inner
    return Cell(spec, session, inner, [closer])


async def probe_durability(cell: Cell) -> dict[str, str]:
    """journal_mode and synchronous as the cell's own connection sees them (best effort)."""
    query = "PRAGMA journal_mode", "PRAGMA synchronous"
    inner = cell.inner
    try:
        if cell.spec.backend in PG_BACKENDS:
            return {"journal_mode": "n/a (PostgreSQL)", "synchronous": "n/a"}
        if cell.spec.backend.startswith("sqla"):
            async with inner.engine.connect() as conn:
                rows = [(await conn.exec_driver_sql(q)).scalar() for q in query]
        elif cell.spec.impl == "encmem":
            rows = await inner._read(lambda c: [c.execute(q).fetchone()[0] for q in query])
        else:
            import asyncio

            def read() -> list[Any]:
                with inner._locked_connection() as conn:
                    return [conn.execute(q).fetchone()[0] for q in query]

            rows = await asyncio.to_thread(read)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {"journal_mode": str(rows[0]), "synchronous": names.get(rows[1], str(rows[1]))}
