"""Key rotation, expiry purge and migration of one session's stored items.

Each works in batches through the ItemAddressing capability (and Branching, to reach every
branch), walking from the newest item back by storage id, so every batch is committed on its
own: an interrupted run leaves every item readable and the next run carries on. Items that
cannot be authenticated are never changed or deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from ._chain import Link
from ._envelope import FORMAT_VERSION, SHREDDABLE_VERSION, Opener, is_envelope, reseal
from ._items import CorruptRow, Item
from ._keys import Keyring
from ._protocol import Capabilities, ItemAddressing, Session, StoredItem
from ._reading import OnInvalid, is_expired
from ._rechain import Sealable, needs_chain, open_for_chain, plan_chain, read_branches, write_plan
from ._seeds import Seeds
from ._withdrawal import Conflict
from ._writing import Chainer
from .errors import DecryptionError, StoreError

Progress = Callable[[int], None]
"""Called after each committed batch with the number of items examined so far."""

DEFAULT_BATCH = 500


class Sealed(Protocol):
    """What a maintenance pass needs of a sealed session (EncryptedSession has these)."""

    session_id: str
    underlying_session: Session
    ttl: float | None
    on_invalid: OnInvalid
    clock: Callable[[], float]
    max_item_bytes: int | None
    _seeds: Seeds

    @property
    def keyring(self) -> Keyring: ...


@dataclass
class MaintenanceResult:
    """Counts of what one maintenance run did."""

    examined: int = 0
    changed: int = 0
    unchanged: int = 0
    unreadable: int = 0
    reached: int = 0
    """How many distinct stored rows the run saw (an item shared by branches counts once)."""

    def as_dict(self) -> dict[str, int]:
        counts = asdict(self)
        del counts["reached"]
        return counts

    def add(self, other: MaintenanceResult) -> None:
        self.examined += other.examined
        self.changed += other.changed
        self.unchanged += other.unchanged
        self.unreadable += other.unreadable
        self.reached += other.reached


class Job(Protocol):
    def __call__(
        self, session: Sealed, *, batch_size: int, progress: Progress | None, dry_run: bool
    ) -> Awaitable[MaintenanceResult]: ...


class _Branch:
    """Addressed reads and deletes of one branch (or of a session without branches)."""

    def __init__(self, caps: Capabilities, source: ItemAddressing, branch_id: str | None):
        self._branching = caps.branch_addressing if branch_id is not None else None
        self._source = source
        self.branch_id = branch_id

    async def read(self, limit: int, before: int | None) -> list[StoredItem]:
        if self._branching is not None:
            return await self._branching.get_stored_items(
                limit, before_id=before, branch_id=self.branch_id
            )
        return await self._source.get_stored_items(limit, before_id=before)

    async def delete(self, ids: Sequence[int]) -> int:
        if self._branching is not None:
            return await self._branching.delete_stored_items(ids, branch_id=self.branch_id)
        return await self._source.delete_stored_items(ids)


async def _branches(session: Sealed, operation: str) -> tuple[ItemAddressing, list[_Branch]]:
    """The addressed store and every branch of it (one implicit branch without Branching)."""
    caps = Capabilities.of(session.underlying_session)
    source = caps.need(caps.addressing, "ItemAddressing", operation)
    if caps.branching is None or caps.branch_addressing is None:
        return source, [_Branch(caps, source, None)]
    listed = await caps.branching.list_branches()
    return source, [_Branch(caps, source, str(branch["branch_id"])) for branch in listed]


async def walk(
    branches: list[_Branch], batch_size: int, reached: set[int], *, once: bool = True
) -> AsyncIterator[tuple[_Branch, list[StoredItem]]]:
    """Every stored item of the session, branch by branch, newest first, in batches.

    With ``once``, an item shared by several branches is yielded only the first time
    (replacing it changes it everywhere); without, once per branch (deleting it works branch
    by branch). ``reached`` collects the storage id of every row seen.
    """
    seen = reached
    for branch in branches:
        before: int | None = None
        while True:
            batch = await branch.read(batch_size, before)
            if not batch:
                break
            fresh = [stored for stored in batch if stored.id not in seen] if once else batch
            seen.update(stored.id for stored in fresh)
            if fresh:
                yield branch, fresh
            if len(batch) < batch_size:
                break
            before = batch[0].id


def _check_batch(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _unreadable(session: Sealed, exc: DecryptionError, stored: StoredItem) -> None:
    if session.on_invalid == "raise":
        raise exc.located(session.session_id, None, stored.id) from None


async def _opener(session: Sealed) -> Opener:
    opener = Opener(session.keyring, session.session_id, clock=session.clock)  # no cache
    opener.seeds = await session._seeds.load(refresh=True)
    return opener


async def _chain_session(
    session: Sealed, operation: str, *, seal_plaintext: bool, dry_run: bool
) -> tuple[bool, MaintenanceResult]:
    """Re-chain the whole session when any item is not a v3 link (see :mod:`._rechain`).

    Returns whether it had to, and the counts. An unreadable item leaves the session as it
    is (in skip mode; raise mode raises): a chain cannot be built around it.
    """
    caps = Capabilities.of(session.underlying_session)
    _, branches = await _branches(session, operation)
    for _attempt in range(3):
        found = await read_branches(caps, [branch.branch_id for branch in branches])
        result = MaintenanceResult()
        distinct = {stored.id: stored for branch in found for stored in branch.rows}
        result.examined = result.reached = len(distinct)
        if not needs_chain(found):
            result.unchanged = result.examined
            return False, result
        opener, now = await _opener(session), int(session.clock())
        sources: dict[int, Sealable] = {}
        for stored in distinct.values():
            try:
                sources[stored.id] = open_for_chain(opener, stored.item, now, seal_plaintext)
            except DecryptionError as exc:
                result.unreadable += 1
                _unreadable(session, exc, stored)
        chainer = Chainer(session)
        seed = None if dry_run else await session._seeds.for_writing()
        plan = plan_chain(chainer, found, sources, seed)
        seen = {branch.name: branch.head for branch in found}
        try:
            result.changed = (
                len(plan.replacements) if dry_run else await write_plan(caps, chainer, plan, seen)
            )
        except Conflict:
            continue  # another writer came in between: read again
        result.unchanged = result.examined - result.changed - result.unreadable
        return True, result
    raise StoreError(
        f"session {session.session_id!r} kept changing while it was being chained; run "
        "again when its writers are quieter"
    )


async def _reseal(
    session: Sealed, *, batch_size: int, progress: Progress | None, dry_run: bool
) -> MaintenanceResult:
    """Re-seal, under the primary key, every v3 item sealed under another key, keeping its
    seal time and its exact sealed text (so every link of the chain stays)."""
    source, branches = await _branches(session, "rotate_keys()")
    kid = session.keyring.primary_kid
    opener = await _opener(session)
    shreddable = session._seeds.store is not None
    # The session's seed as it is; one is made only when an item is actually re-sealed (an
    # erased session's restored leftovers must not get a new seed).
    known = [(sid, raw) for sid, raw in (opener.seeds or {}).items() if isinstance(raw, bytes)]
    seed: tuple[str, bytes] | None = known[0] if known else None
    result = MaintenanceResult()
    reached: set[int] = set()
    async for _, batch in walk(branches, _check_batch(batch_size), reached):
        replacements: dict[int, Item] = {}
        for stored in batch:
            result.examined += 1
            obj = stored.item
            seed_id = None if seed is None else seed[0]
            if not isinstance(obj, CorruptRow) and _current(obj, kid, shreddable, seed_id):
                result.unchanged += 1
                continue
            try:
                opened = opener.open(obj)
            except DecryptionError as exc:
                result.unreadable += 1
                _unreadable(session, exc, stored)
                continue
            assert isinstance(obj, dict)
            if seed is None and shreddable and not dry_run:
                seed = await session._seeds.for_writing()
            raw = None if seed is None else seed[1]
            key = session.keyring.session_key(kid, session.session_id, raw)
            assert key is not None
            sealed_text = opener.sealed_plaintext(obj, opened)
            replacements[stored.id] = reseal(
                key, kid, opened, sealed_text, None if seed is None else seed[0]
            )
        if replacements:
            result.changed += (
                len(replacements) if dry_run else await source.replace_stored_items(replacements)
            )
        if progress is not None:
            progress(result.examined)
    result.reached = len(reached)
    return result


def _current(obj: Item, kid: str, shreddable: bool, seed_id: str | None) -> bool:
    """Whether an item is sealed as rotation would seal it now: under the primary key, and
    with the session's current seed when it has a key store."""
    version = obj.get("v")
    if not is_envelope(obj) or type(version) is not int or obj.get("kid") != kid:
        return False
    if not shreddable:
        return version == FORMAT_VERSION
    return version == SHREDDABLE_VERSION and obj.get("seed") == seed_id


async def rotate(
    session: Sealed,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Re-seal under the primary key every item sealed under another key, keeping seal times.

    A session holding items sealed before chains (or the SDK's v1) is chained as a whole;
    otherwise each item keeps its exact sealed text and place, and the heads are re-sealed.
    """
    _check_batch(batch_size)
    chained, result = await _chain_session(
        session, "rotate_keys()", seal_plaintext=False, dry_run=dry_run
    )
    if chained:
        if not dry_run:
            await session._seeds.reseal()
        if progress is not None:
            progress(result.examined)
        return result
    result = await _reseal(session, batch_size=batch_size, progress=progress, dry_run=dry_run)
    if not dry_run:
        await session._seeds.reseal()
    heads = Capabilities.of(session.underlying_session).heads
    if heads is not None and not dry_run:
        chainer = Chainer(session)
        names = await heads.list_head_branches()
        await heads.update_heads({name: chainer.reseal_head(name) for name in names})
    return result


def _purgeable(
    session: Sealed, opener: Opener, rows: list[StoredItem], now: float, result: MaintenanceResult
) -> list[tuple[int, Link | None]]:
    """The expired items at the front of a branch (a chain is only ever cut from the front);
    every row is opened, so unreadable ones are counted."""
    prefix: list[tuple[int, Link | None]] = []
    front = True
    for stored in rows:
        result.examined += 1
        try:
            opened = opener.open(stored.item)
        except DecryptionError as exc:
            result.unreadable += 1
            _unreadable(session, exc, stored)
            front = False
            continue
        if front and is_expired(opened.sealed_at, session.ttl, now):
            prefix.append((stored.id, opened.link))
        else:
            front = False
            result.unchanged += 1
    return prefix


async def purge_expired(
    session: Sealed,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Delete from storage the expired items at the front of every branch.

    Items expire oldest first, so that is all of them unless clocks went back; the branch's
    head records how far the front was cut, so a purge never reads as tampering.
    """
    size = _check_batch(batch_size)
    _, branches = await _branches(session, "purge_expired()")
    result = MaintenanceResult()
    if session.ttl is None:
        return result
    caps = Capabilities.of(session.underlying_session)
    chainer, opener, now = Chainer(session), await _opener(session), session.clock()
    reached: set[int] = set()
    for branch in branches:
        (rows,) = await read_branches(caps, [branch.branch_id])
        reached.update(stored.id for stored in rows.rows)
        prefix = _purgeable(session, opener, rows.rows, now, result)
        for start in range(0, len(prefix), size):
            chunk = prefix[start : start + size]
            ids = [item_id for item_id, _ in chunk]
            seqs = [link.seq for _, link in chunk if link is not None]
            if dry_run:
                result.changed += len(ids)
            elif caps.heads is not None:
                update = chainer.raise_floor(rows.name, max(seqs) + 1) if seqs else _same
                result.changed += await caps.heads.delete_with_head(
                    ids, update, branch_id=branch.branch_id
                )
            else:
                result.changed += await branch.delete(ids)
            if progress is not None:
                progress(result.examined)
    result.reached = len(reached)
    return result


def _same(stored: str | None) -> str | None:
    return stored


async def encrypt_existing(
    session: Sealed,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Seal plaintext items and re-seal the SDK's v1 (and encmem 0.2's v2) envelopes as one
    chain, in place and in order.

    Plaintext items are sealed at the current time; envelopes keep their seal time. A
    session whose items are all chained already is left alone (``rotate_keys`` moves them
    between keys).
    """
    _check_batch(batch_size)
    _, result = await _chain_session(
        session, "encrypt_existing()", seal_plaintext=True, dry_run=dry_run
    )
    if progress is not None:
        progress(result.examined)
    return result
