"""Store-wide key rotation and expiry purge over a filled SQLite store (encmem only).

Items are sealed under kid "old" at a simulated time two hours back; rotation re-seals them
under Keyring({"new": k2, "old": k1}); the purge then deletes all of them (ttl 600 s).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import workload
from cells import TTL_SECONDS


def available() -> str | None:
    """None when encmem has purge and rotation, else why not."""
    from encmem import EncryptedSession

    if not hasattr(EncryptedSession, "purge_expired") or not hasattr(
        EncryptedSession, "rotate_keys"
    ):
        return "not yet available (EncryptedSession has no purge_expired / rotate_keys)"
    return None


async def fill_store(db: Path, k1: str, sessions: int, per_session: int, sealed_at: float) -> None:
    from encmem.backends._sqlite import SQLiteSession

    from encmem import EncryptedSession, Keyring

    old = Keyring({"old": k1})
    data = workload.items(per_session)
    for index in range(sessions):
        sid = f"user-{index:04d}"
        inner = SQLiteSession(sid, db)
        session = EncryptedSession(sid, inner, old, ttl=TTL_SECONDS, clock=lambda: sealed_at)
        for offset in range(0, per_session, 1000):
            await session.add_items(data[offset : offset + 1000])
        await inner.close()


async def _store_wide(db: Path, job: str, ring: Any, clock: Any) -> tuple[str, Any]:
    """Run the store-wide function when encmem has one, else loop sessions."""
    from encmem.backends._sqlite import SQLiteSession

    from encmem import EncryptedSession

    try:
        from encmem.backends import open_store

        import encmem as maintenance
    except ImportError:
        maintenance = None  # type: ignore[assignment]
    if maintenance is not None and hasattr(maintenance, f"{job}_store"):
        store = await open_store(db)
        try:
            if job == "rotate":
                return "rotate_store", await maintenance.rotate_store(store, ring)
            return "purge_store", await maintenance.purge_store(
                store, ring, TTL_SECONDS, clock=clock
            )
        finally:
            await store.aclose()  # type: ignore[attr-defined]
    import sqlite3

    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT session_id FROM agent_sessions")]
    total: Any = 0
    for sid in ids:
        inner = SQLiteSession(sid, db)
        session = EncryptedSession(sid, inner, ring, ttl=TTL_SECONDS, clock=clock)
        if job == "rotate":
            total += (await session.rotate_keys())["changed"]
        else:
            total += await session.purge_expired()
        await inner.close()
    return f"EncryptedSession.{job} per session", total


async def run(workdir: Path, k1: str, k2: str, sessions: int, per_session: int) -> list[dict]:
    """Rows for the extras table: rotate then purge, items/s over the whole store."""
    from encmem import Keyring

    db = workdir / "store.db"
    now = time.time()
    await fill_store(db, k1, sessions, per_session, now - 7200)
    total = sessions * per_session
    ring = Keyring({"new": k2, "old": k1})
    rows = []
    for job in ("rotate", "purge"):
        start = time.perf_counter()
        how, outcome = await _store_wide(db, job, ring, lambda: now)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "name": f"maintenance/sqlite/{job}",
                "items": total,
                "sessions": sessions,
                "seconds": seconds,
                "items_s": total / seconds,
                "via": how,
                "outcome": outcome,
            }
        )
    return rows
