"""Seeds on SQLAlchemy: the KeyStore capability of the SQLAlchemy sessions (seeds in the
session database) and :class:`SQLAlchemyKeyStore`, a key store in a database of its own.

On PostgreSQL a destroyed seed's row is removed by ``VACUUM`` right after the delete, so no
dead tuple of it stays in the table's pages; on SQLite the WAL is emptied.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, Table, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from encmem._items import check_session_id
from encmem._protocol import SeedDestruction, StoredSeed
from encmem.errors import SessionClosedError, StoreError

from ._residue import checkpoint_truncate
from ._sqlalchemy_engine import acquire_engine, check_async_engine, engine_state, release_engine
from ._sqlalchemy_schema import advisory_key, seeds_table

SEEDS = "encmem_seeds"
"""The seeds table of a key store of its own; a session store's is ``<messages_table>_seeds``."""


_OWN = seeds_table(SEEDS, MetaData())


async def _vacuum_or_checkpoint(engine: AsyncEngine, table: str) -> bool:
    """Remove what a delete left of the seeds table's old rows; False when that could not."""
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.exec_driver_sql(f"VACUUM {table}")
            return True
        if engine.dialect.name == "sqlite":
            return bool(
                await conn.run_sync(
                    lambda sync: checkpoint_truncate(lambda sql: sync.exec_driver_sql(sql).first())
                )
            )
    return False


class SeedsOnSQLAlchemy:
    """The KeyStore methods over a SQLAlchemy async engine (sessions and key stores)."""

    def _seed_engine(self) -> AsyncEngine:
        raise NotImplementedError

    def _seeds(self) -> Table:
        return _OWN

    async def _before_seeds(self) -> None:
        """What must hold before the seeds table is used (a session: its own tables)."""

    async def _seeds_ready(self) -> AsyncEngine:
        await self._before_seeds()
        engine, table = self._seed_engine(), self._seeds()
        state = engine_state(engine)
        if ("seeds", table.name) not in state.ready:
            async with state.lock("schema"), engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    # Creators in other processes take turns (CREATE ... IF NOT EXISTS still
                    # races on the catalog's unique index).
                    key = advisory_key(table.name)
                    await conn.execute(select(func.pg_advisory_xact_lock(key)))
                await conn.run_sync(lambda sync: self._create_seeds(sync, table))
            state.ready.add(("seeds", table.name))
        return engine

    def _create_seeds(self, sync: Any, table: Table) -> None:
        """Create the seeds table if it is missing (a key store creates its own)."""
        table.create(sync, checkfirst=True)

    async def get_seed(self, session_id: str) -> StoredSeed | None:
        """The session's seed, or None when it has none."""
        check_session_id(session_id)
        t = self._seeds()
        engine = await self._seeds_ready()
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(t.c.seed_id, t.c.kid, t.c.sealed).where(t.c.session_id == session_id)
                )
            ).first()
        return None if row is None else StoredSeed(str(row[0]), str(row[1]), str(row[2]))

    async def put_seed(self, session_id: str, seed: StoredSeed) -> StoredSeed:
        """Keep ``seed`` unless the session has one already; return the one kept."""
        check_session_id(session_id)
        values: dict[str, Any] = {"session_id": session_id, **seed._asdict()}
        engine = await self._seeds_ready()
        for _ in range(3):
            try:
                async with engine.begin() as conn:
                    await conn.execute(self._seeds().insert().values(**values))
            except IntegrityError:
                pass  # another writer kept its seed first: that one is the session's
            kept = await self.get_seed(session_id)
            if kept is not None:
                return kept
            # an erase destroyed the kept seed between the two statements: keep ours now
        raise StoreError(
            f"the seed of session {session_id!r} was destroyed as soon as it was kept, three "
            "times (the session is being erased meanwhile); nothing was written"
        )

    async def replace_seed(self, session_id: str, seed: StoredSeed) -> None:
        """Re-seal the session's seed under another key (same seed id)."""
        t = self._seeds()
        engine = await self._seeds_ready()
        async with engine.begin() as conn:
            await conn.execute(
                update(t)
                .where(t.c.session_id == session_id, t.c.seed_id == seed.seed_id)
                .values(kid=seed.kid, sealed=seed.sealed)
            )

    async def destroy_seed(self, session_id: str) -> SeedDestruction:
        """Delete the seed, committed, then VACUUM (PostgreSQL) or empty the WAL (SQLite)."""
        engine = await self._seeds_ready()
        async with engine.begin() as conn:
            t = self._seeds()
            result = await conn.execute(delete(t).where(t.c.session_id == session_id))
        cleaned = await _vacuum_or_checkpoint(engine, self._seeds().name)
        return SeedDestruction(result.rowcount > 0, not cleaned)

    async def seed_session_ids(self) -> list[str]:
        """Every session that has a seed, sorted."""
        engine = await self._seeds_ready()
        async with engine.connect() as conn:
            t = self._seeds()
            rows = await conn.execute(select(t.c.session_id).order_by(t.c.session_id))
            return [str(row[0]) for row in rows]


class SQLAlchemyKeyStore(SeedsOnSQLAlchemy):
    """A key store in a database of its own: ``SQLAlchemyKeyStore(url=...)`` (its engine is
    shared like ``from_url`` sessions' and disposed on close) or ``engine=`` (left alone)."""

    def __init__(self, *, url: str | None = None, engine: AsyncEngine | None = None) -> None:
        if (url is None) == (engine is None):
            raise TypeError("SQLAlchemyKeyStore takes url=... or engine=..., one of them")
        if engine is not None:
            check_async_engine(engine)
            self._engine, self._owned = engine, False
        else:
            assert url is not None
            self._engine, self._owned = acquire_engine(url), True
        self._closed = False

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"SQLAlchemyKeyStore(url={url!r})"

    def _seed_engine(self) -> AsyncEngine:
        if self._closed:
            raise SessionClosedError("this SQLAlchemyKeyStore is closed; open a new one")
        return self._engine

    async def close(self) -> None:
        """Close the key store; dispose its engine if it made it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owned:
            await release_engine(self._engine)

    async def aclose(self) -> None:
        """The same as ``close()``."""
        await self.close()

    async def __aenter__(self) -> SQLAlchemyKeyStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
