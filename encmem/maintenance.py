"""Key rotation, expiry purge and migration of one session's stored items.

Each works in batches through the ItemAddressing capability, walking from the newest item
back by storage id, so every batch is committed on its own: an interrupted run leaves every
item readable and the next run carries on. Items that cannot be authenticated are never
changed or deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .envelope import FORMAT_VERSION, Opener, is_envelope, seal
from .errors import DecryptionError
from .items import CorruptRow, Item, encode_item
from .keys import KeyInput, Keyring
from .protocol import ItemAddressing, SessionStore, StoredItem, require

if TYPE_CHECKING:
    from .session import EncryptedSession

Progress = Callable[[int], None]
"""Called after each committed batch with the number of items examined so far."""

DEFAULT_BATCH = 500


@dataclass
class MaintenanceResult:
    """Counts of what one maintenance run did."""

    examined: int = 0
    changed: int = 0
    unchanged: int = 0
    unreadable: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


async def _branches(source: Any) -> list[dict[str, Any]]:
    """Every branch of a branching backend, or the one implicit branch of a plain one."""
    lister = getattr(source, "list_branches", None)
    if lister is None:
        return [{}]
    return [{"branch_id": branch["branch_id"]} for branch in await lister()]


async def walk(
    source: ItemAddressing, batch_size: int, *, once: bool = True
) -> AsyncIterator[tuple[dict[str, Any], list[StoredItem]]]:
    """Every stored item of the session, branch by branch, newest first, in batches.

    Yields the branch options to pass back to the backend with each batch. With ``once``,
    an item shared by several branches is yielded only the first time (replacing it changes
    it everywhere); without, once per branch (deleting it works branch by branch).
    """
    seen: set[int] = set()
    for branch in await _branches(source):
        before: int | None = None
        while True:
            batch = await source.get_stored_items(batch_size, before_id=before, **branch)
            if not batch:
                break
            fresh = [stored for stored in batch if stored.id not in seen] if once else batch
            if once:
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


def _unreadable(session: EncryptedSession, exc: DecryptionError, stored: StoredItem) -> None:
    located = session._located(exc, None, stored.id)
    if session.on_invalid == "raise":
        raise located from None


async def _reseal(
    session: EncryptedSession,
    operation: str,
    choose: Callable[[Any, str], str],
    *,
    batch_size: int,
    progress: Progress | None,
    dry_run: bool,
) -> MaintenanceResult:
    """Re-seal, under the primary key, the items ``choose`` picks; keep the rest as they are.

    ``choose(stored_object, primary_kid)`` answers "keep", "seal" (plaintext: seal it now) or
    "open" (an envelope: open it and seal it again with its original seal time).
    """
    source = require(session.underlying_session, ItemAddressing, operation)
    kid = session.keyring.primary_kid
    fernet = session.keyring.session_key(kid, session.session_id)
    assert fernet is not None
    opener = Opener(session.keyring, session.session_id, clock=session.clock)  # no cache
    now = int(session.clock())
    result = MaintenanceResult()
    async for _, batch in walk(source, _check_batch(batch_size)):
        replacements: dict[int, Item] = {}
        for stored in batch:
            result.examined += 1
            obj = stored.item
            action = "open" if isinstance(obj, CorruptRow) else choose(obj, kid)
            if action == "keep":
                result.unchanged += 1
                continue
            if action == "seal" and not isinstance(obj, CorruptRow):
                replacements[stored.id] = seal(fernet, kid, obj, encode_item(obj), now)
                continue
            try:
                opened = opener.open(obj)
            except DecryptionError as exc:
                result.unreadable += 1
                _unreadable(session, exc, stored)
                continue
            text = encode_item(opened.item)
            replacements[stored.id] = seal(fernet, kid, opened.item, text, opened.sealed_at)
        if replacements:
            result.changed += (
                len(replacements) if dry_run else await source.replace_stored_items(replacements)
            )
        if progress is not None:
            progress(result.examined)
    return result


def _current(obj: Any, kid: str) -> bool:
    return is_envelope(obj) and obj.get("v") == FORMAT_VERSION and obj.get("kid") == kid


async def rotate(
    session: EncryptedSession,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Re-seal under the primary key every item sealed under another key (or the SDK's v1).

    The original seal time is kept, so rotation never extends an item's life.
    """
    return await _reseal(
        session,
        "rotate_keys()",
        lambda obj, kid: "keep" if _current(obj, kid) else "open",
        batch_size=batch_size,
        progress=progress,
        dry_run=dry_run,
    )


async def purge_expired(
    session: EncryptedSession,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Delete from storage every item whose authenticated seal time is past the TTL."""
    source = require(session.underlying_session, ItemAddressing, "purge_expired()")
    result = MaintenanceResult()
    opener = Opener(session.keyring, session.session_id, clock=session.clock)  # no cache
    if session.ttl is None:
        return result
    now = session.clock()
    async for branch, batch in walk(source, _check_batch(batch_size), once=False):
        expired: list[int] = []
        for stored in batch:
            result.examined += 1
            try:
                opened = opener.open(stored.item)
            except DecryptionError as exc:
                result.unreadable += 1
                _unreadable(session, exc, stored)
                continue
            if session._expired(opened, now):
                expired.append(stored.id)
            else:
                result.unchanged += 1
        if expired:
            result.changed += (
                len(expired) if dry_run else await source.delete_stored_items(expired, **branch)
            )
        if progress is not None:
            progress(result.examined)
    return result


async def encrypt_existing(
    session: EncryptedSession,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Seal plaintext items in place and re-seal the SDK's v1 envelopes as v2.

    Plaintext items are sealed at the current time; v1 items keep their seal time. Items
    already in encmem's format are left alone (``rotate_keys`` moves them between keys).
    """

    def choose(obj: Any, kid: str) -> str:
        if not is_envelope(obj):
            return "seal"
        return "keep" if obj.get("v") == FORMAT_VERSION else "open"

    return await _reseal(
        session,
        "encrypt_existing()",
        choose,
        batch_size=batch_size,
        progress=progress,
        dry_run=dry_run,
    )


# -- store-wide ---------------------------------------------------------------------------------

StoreProgress = Callable[[int, int], None]
"""Called after each committed batch with (items examined so far, items in the store)."""

SessionJob = Callable[..., Any]


async def _over_store(
    store: SessionStore,
    keyring: Keyring | KeyInput,
    job: SessionJob,
    *,
    ttl: float | None = None,
    clock: Callable[[], float] | None = None,
    on_invalid: str = "skip",
    batch_size: int = DEFAULT_BATCH,
    progress: StoreProgress | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    from .session import EncryptedSession

    total = await store.count_items()
    done_before = 0
    totals = MaintenanceResult()
    sessions = 0
    for session_id in await store.session_ids():
        options: dict[str, Any] = {"ttl": ttl, "on_invalid": on_invalid}
        if clock is not None:
            options["clock"] = clock
        session = EncryptedSession(
            session_id=session_id,
            underlying_session=store.session(session_id),
            encryption_key=keyring,
            **options,
        )
        base = done_before

        def report(examined: int, base: int = base) -> None:
            if progress is not None:
                progress(base + examined, total)

        result: MaintenanceResult = await job(
            session, batch_size=batch_size, progress=report, dry_run=dry_run
        )
        sessions += 1
        done_before += result.examined
        for name in ("examined", "changed", "unchanged", "unreadable"):
            setattr(totals, name, getattr(totals, name) + getattr(result, name))
    return {"sessions": sessions, "dry_run": dry_run, **totals.as_dict()}


async def rotate_store(
    store: SessionStore, keyring: Keyring | KeyInput, **options: Any
) -> dict[str, Any]:
    """Re-seal every item of every session under the keyring's primary key.

    Options: ``batch_size``, ``progress(done, total)``, ``dry_run``. Unreadable items are
    counted, left as they are, and do not stop the run.
    """
    return await _over_store(store, keyring, rotate, **options)


async def purge_store(
    store: SessionStore, keyring: Keyring | KeyInput, ttl: float, **options: Any
) -> dict[str, Any]:
    """Delete every item older than ``ttl`` seconds from every session of the store.

    Options: ``clock``, ``batch_size``, ``progress(done, total)``, ``dry_run``.
    """
    return await _over_store(store, keyring, purge_expired, ttl=ttl, **options)


async def encrypt_store(
    store: SessionStore, keyring: Keyring | KeyInput, **options: Any
) -> dict[str, Any]:
    """Seal every plaintext item and upgrade every SDK v1 envelope, in every session.

    Plaintext items are sealed at ``clock()`` (the current time by default). Options:
    ``clock``, ``batch_size``, ``progress(done, total)``, ``dry_run``.
    """
    return await _over_store(store, keyring, encrypt_existing, **options)
