"""Store-wide maintenance: rotate, purge or encrypt every session of a session store.

A store (``encmem.backends.open_store(path_or_url)``) lists its sessions and hands out a
backend session for each; every one is wrapped in an EncryptedSession and put through the
same per-session pass, batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _maintenance as maintenance
from ._keys import KeyInput, Keyring
from ._protocol import KeyStore, SessionStore
from ._session import EncryptedSession
from .errors import StoreError

StoreProgress = Callable[[int, int], None]
"""Called after each committed batch with (items examined so far, items in the store)."""


async def _over_store(
    store: SessionStore,
    keyring: Keyring | KeyInput,
    job: maintenance.Job,
    *,
    ttl: float | None = None,
    clock: Callable[[], float] | None = None,
    on_invalid: str = "skip",
    batch_size: int = maintenance.DEFAULT_BATCH,
    progress: StoreProgress | None = None,
    dry_run: bool = False,
    key_store: KeyStore | None = None,
) -> dict[str, Any]:
    total = await store.count_items()
    totals = maintenance.MaintenanceResult()
    sessions = 0
    for session_id in await store.session_ids():
        options: dict[str, Any] = {"ttl": ttl, "on_invalid": on_invalid, "key_store": key_store}
        if clock is not None:
            options["clock"] = clock
        session = EncryptedSession(
            session_id=session_id,
            underlying_session=store.session(session_id),
            encryption_key=keyring,
            **options,
        )

        def report(examined: int, base: int = totals.examined) -> None:
            if progress is not None:
                progress(base + examined, total)

        result = await job(session, batch_size=batch_size, progress=report, dry_run=dry_run)
        sessions += 1
        totals.add(result)
    # Rows written or removed by others during the run move the counts; a row that was
    # there from start to end and never reached cannot.
    expected = min(total, await store.count_items())
    if totals.reached < expected:
        raise StoreError(
            f"{expected - totals.reached} of the store's {expected} rows belong to no session or "
            "branch the store can read (a session id that is NULL, blank or holds a NUL, or "
            "rows written without branch structure into a store that has branch tables?); "
            "nothing past the batches already committed was "
            "skipped silently: open those sessions with the backend that wrote them"
        )
    return {"sessions": sessions, "dry_run": dry_run, **totals.as_dict()}


async def rotate_store(
    store: SessionStore, keyring: Keyring | KeyInput, **options: Any
) -> dict[str, Any]:
    """Re-seal every item of every session under the keyring's primary key.

    Options: ``clock``, ``batch_size``, ``progress(done, total)``, ``dry_run``,
    ``key_store`` (where seeds live, when not in the store). Unreadable items are counted,
    left as they are, and do not stop the run. Sessions move to seeded keys on the way
    (shred-ready), keeping every seal time.
    """
    return await _over_store(store, keyring, maintenance.rotate, **options)


async def purge_store(
    store: SessionStore, keyring: Keyring | KeyInput, ttl: float, **options: Any
) -> dict[str, Any]:
    """Delete every item older than ``ttl`` seconds from every session of the store.

    Options: ``clock``, ``batch_size``, ``progress(done, total)``, ``dry_run``.
    """
    return await _over_store(store, keyring, maintenance.purge_expired, ttl=ttl, **options)


async def encrypt_store(
    store: SessionStore, keyring: Keyring | KeyInput, **options: Any
) -> dict[str, Any]:
    """Seal every plaintext item and upgrade every SDK v1 envelope, in every session.

    One-way: upgraded items can no longer be read by the Agents SDK's EncryptedSession.
    Plaintext items are sealed at ``clock()`` (the current time by default). Options:
    ``clock``, ``batch_size``, ``progress(done, total)``, ``dry_run``.
    """
    return await _over_store(store, keyring, maintenance.encrypt_existing, **options)
