"""Erasure you can prove: shred the seed, delete the rows, check what is left, write a receipt.

The seed goes first, committed and wiped from its key store: from then on no copy of the
session's items (a backup, a replica, a page the delete left behind) can be decrypted, even
with the master key. Then the rows go, and the store is asked what remains of them. The
receipt says exactly that, never more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._protocol import Capabilities, ErasableStore, ErasedRows, KeyStore, SessionStore
from .errors import StoreError

Progress = Callable[[int, int], None]


@dataclass
class ErasureReceipt:
    """What one erase did, for an auditor's file (``as_dict()`` is what ``--json`` prints)."""

    session_id: str
    erased_at: str
    rows_removed: dict[str, int]
    seed_destroyed: bool
    key_store: str
    residue_pending: bool
    residue: str
    session_id_hits: int | None = None
    ciphertext_hits: int | None = None
    encmem_version: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Rows gone, no residue pending, and (where the store was scanned) nothing found."""
        return not self.residue_pending and not self.session_id_hits and not self.ciphertext_hits

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


def _now_iso(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _tokens(store: SessionStore, session_id: str) -> list[str]:
    """The tokens of the session's items as stored now (to look for them afterwards)."""
    session = store.session(session_id)
    caps = Capabilities.of(session)
    branches: list[str | None] = [None]
    if caps.branching is not None and caps.branch_addressing is not None:
        branches = [str(b["branch_id"]) for b in await caps.branching.list_branches()]
    tokens: list[str] = []
    for branch in branches:
        if branch is not None and caps.branch_addressing is not None:
            stored = await caps.branch_addressing.get_stored_items(None, branch_id=branch)
        else:
            stored = await session.get_stored_items(None)
        for _, obj in stored:
            payload = obj.get("payload") if isinstance(obj, dict) else None
            if isinstance(payload, str):
                tokens.append(payload)
    return tokens


def _key_store_of(
    store: SessionStore, session_id: str, key_store: KeyStore | None
) -> KeyStore | None:
    if key_store is not None:
        return key_store
    same = store.session(session_id)
    return same if isinstance(same, KeyStore) else None


async def erase_session(
    store: SessionStore,
    session_id: str,
    *,
    key_store: KeyStore | None = None,
    clock: Callable[[], float] = time.time,
) -> ErasureReceipt:
    """Erase one session: destroy its seed, then delete its rows, then look for what is left.

    ``key_store`` is where its seed lives when that is not the store itself. A receipt with
    ``residue_pending`` means rows and seed are gone but old page copies remain until other
    readers finish; erase again (``encmem erase --finish``) to complete it.
    """
    from . import __version__

    tokens = await _tokens(store, session_id)
    seeds = _key_store_of(store, session_id, key_store)
    destroyed = await seeds.destroy_seed(session_id) if seeds is not None else None
    notes: list[str] = []
    if destroyed is not None and destroyed.residue_pending:
        notes.append("the key store's WAL still holds the seed's old page until its readers finish")
    if isinstance(store, ErasableStore):
        erased = await store.erase_rows(session_id)
        if key_store is not None and (await key_store.destroy_seed(session_id)).existed:
            # A writer made the session a new seed between the two stores' steps: its seed
            # goes too, then whatever it wrote (no transaction spans a separate key store).
            erased = _added(erased, await store.erase_rows(session_id))
        rows, pending, residue = erased.rows, erased.residue_pending, erased.residue
        hits = await store.residue_hits(session_id, tokens)
    else:
        removed = await store.erase_session(session_id)
        rows, pending, residue, hits = {"*": removed}, False, "not checked", None
    where = (
        "none" if seeds is None else ("the session store" if key_store is None else repr(key_store))
    )
    return ErasureReceipt(
        session_id=session_id,
        erased_at=_now_iso(clock),
        rows_removed=rows,
        seed_destroyed=bool(destroyed and destroyed.existed),
        key_store=where,
        residue_pending=pending or bool(destroyed and destroyed.residue_pending),
        residue=residue,
        session_id_hits=None if hits is None else hits[0],
        # No rows left to take tokens from (an erase finished later): nothing to look for.
        ciphertext_hits=None if hits is None or not tokens else hits[1],
        encmem_version=__version__,
        notes=notes,
    )


def _added(first: ErasedRows, second: ErasedRows) -> ErasedRows:
    """Two row deletions of one erase, as one."""
    rows = dict(first.rows)
    for table, count in second.rows.items():
        rows[table] = rows.get(table, 0) + count
    return second._replace(rows=rows)


async def idle_sessions(store: SessionStore, idle_seconds: float, now: float) -> list[str]:
    """The sessions with no write in the last ``idle_seconds``, sorted."""
    if not isinstance(store, ErasableStore):
        raise StoreError("this store cannot tell when its sessions were last written to")
    written = await store.last_writes()
    return sorted(sid for sid, when in written.items() if now - when > idle_seconds)


async def erase_idle_sessions(
    store: SessionStore,
    idle_seconds: float,
    *,
    key_store: KeyStore | None = None,
    dry_run: bool = True,
    clock: Callable[[], float] = time.time,
    progress: Progress | None = None,
) -> list[ErasureReceipt] | list[str]:
    """Retention by deletion: erase every session with no write in ``idle_seconds``.

    A dry run (the default) returns the session ids it would erase; otherwise a receipt per
    session, in order.
    """
    chosen = await idle_sessions(store, idle_seconds, clock())
    if dry_run:
        return chosen
    receipts: list[ErasureReceipt] = []
    for done, session_id in enumerate(chosen, start=1):
        receipts.append(await erase_session(store, session_id, key_store=key_store, clock=clock))
        if progress is not None:
            progress(done, len(chosen))
    return receipts
