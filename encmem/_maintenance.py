"""Key rotation, expiry purge and migration of one session's stored items.

Each works in batches through the ItemAddressing capability (and Branching, to reach every
branch), walking from the newest item back by storage id, so every batch is committed on its
own: an interrupted run leaves every item readable and the next run carries on. Items that
cannot be authenticated are never changed or deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

from ._envelope import FORMAT_VERSION, Opener, is_envelope, looks_sealed, seal
from ._items import CorruptRow, Item, encode_item
from ._keys import Keyring
from ._protocol import Capabilities, ItemAddressing, Session, StoredItem
from ._reading import OnInvalid, is_expired
from .errors import DecryptionError, InvalidItemError, PlaintextItemError

Progress = Callable[[int], None]
"""Called after each committed batch with the number of items examined so far."""

DEFAULT_BATCH = 500
Action = Literal["keep", "seal", "open"]


class Sealed(Protocol):
    """What a maintenance pass needs of a sealed session (EncryptedSession has these)."""

    session_id: str
    underlying_session: Session
    ttl: float | None
    on_invalid: OnInvalid
    clock: Callable[[], float]

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


def _opener(session: Sealed) -> Opener:
    return Opener(session.keyring, session.session_id, clock=session.clock)  # no cache


async def _reseal(
    session: Sealed,
    operation: str,
    choose: Callable[[Item, str], Action],
    *,
    batch_size: int,
    progress: Progress | None,
    dry_run: bool,
) -> MaintenanceResult:
    """Re-seal, under the primary key, the items ``choose`` picks; keep the rest as they are.

    ``choose(stored_object, primary_kid)`` answers "keep", "seal" (plaintext: seal it now) or
    "open" (an envelope: open it and seal it again with its original seal time).
    """
    source, branches = await _branches(session, operation)
    kid = session.keyring.primary_kid
    key = session.keyring.session_key(kid, session.session_id)
    assert key is not None
    opener = _opener(session)
    now = int(session.clock())
    result = MaintenanceResult()
    reached: set[int] = set()
    async for _, batch in walk(branches, _check_batch(batch_size), reached):
        replacements: dict[int, Item] = {}
        for stored in batch:
            result.examined += 1
            obj = stored.item
            action = "open" if isinstance(obj, CorruptRow) else choose(obj, kid)
            if action == "keep":
                result.unchanged += 1
                continue
            if action == "seal" and not isinstance(obj, CorruptRow):
                try:
                    replacements[stored.id] = seal(key, kid, obj, encode_item(obj), now)
                except InvalidItemError as exc:  # NaN, lone surrogates: nothing can seal it
                    result.unreadable += 1
                    refused = PlaintextItemError(f"a plaintext item cannot be sealed: {exc}")
                    _unreadable(session, refused, stored)
                continue
            try:
                opened = opener.open(obj)
            except DecryptionError as exc:
                result.unreadable += 1
                _unreadable(session, exc, stored)
                continue
            text = encode_item(opened.item)
            replacements[stored.id] = seal(key, kid, opened.item, text, opened.sealed_at)
        if replacements:
            result.changed += (
                len(replacements) if dry_run else await source.replace_stored_items(replacements)
            )
        if progress is not None:
            progress(result.examined)
    result.reached = len(reached)
    return result


def _current(obj: Item, kid: str) -> bool:
    version = obj.get("v")
    return (
        is_envelope(obj)
        and type(version) is int
        and version == FORMAT_VERSION
        and (obj.get("kid") == kid)
    )


async def rotate(
    session: Sealed,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Re-seal under the primary key every item sealed under another key (or the SDK's v1).

    The original seal time is kept, so rotation never extends an item's life.
    """

    def choose(obj: Item, kid: str) -> Action:
        return "keep" if _current(obj, kid) else "open"

    return await _reseal(
        session, "rotate_keys()", choose, batch_size=batch_size, progress=progress, dry_run=dry_run
    )


async def purge_expired(
    session: Sealed,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Delete from storage every item whose authenticated seal time is past the TTL."""
    _, branches = await _branches(session, "purge_expired()")
    result = MaintenanceResult()
    if session.ttl is None:
        return result
    opener = _opener(session)
    now = session.clock()
    reached: set[int] = set()
    async for branch, batch in walk(branches, _check_batch(batch_size), reached, once=False):
        expired: list[int] = []
        for stored in batch:
            result.examined += 1
            try:
                opened = opener.open(stored.item)
            except DecryptionError as exc:
                result.unreadable += 1
                _unreadable(session, exc, stored)
                continue
            if is_expired(opened.sealed_at, session.ttl, now):
                expired.append(stored.id)
            else:
                result.unchanged += 1
        if expired:
            result.changed += len(expired) if dry_run else await branch.delete(expired)
        if progress is not None:
            progress(result.examined)
    result.reached = len(reached)
    return result


async def encrypt_existing(
    session: Sealed,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Seal plaintext items in place and re-seal the SDK's v1 envelopes as v2.

    Plaintext items are sealed at the current time; v1 items keep their seal time. Items
    already in encmem's format are left alone (``rotate_keys`` moves them between keys).
    """

    def choose(obj: Item, kid: str) -> Action:
        if not is_envelope(obj):
            return "open" if looks_sealed(obj) else "seal"
        return "keep" if _current(obj, obj.get("kid", "")) else "open"

    return await _reseal(
        session,
        "encrypt_existing()",
        choose,
        batch_size=batch_size,
        progress=progress,
        dry_run=dry_run,
    )
