"""What each ``encmem`` subcommand does, as async functions returning (exit code, report).

The report is a dict: printed as JSON with ``--json``, as readable lines otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import _stores as maintenance
from .._envelope import CHAINED_VERSIONS, is_envelope, looks_sealed
from .._items import CorruptRow, Item
from .._keys import Keyring
from .._protocol import Capabilities, KeyStore, SessionStore
from ..errors import CommandError, EncmemError, InvalidKeyError
from ._audit import EXIT_OK, inspect_store, verify_store
from ._diagnosis import (
    EXIT_FINDINGS,
    EXIT_KEYS,
    EXIT_STORE,
    Diagnosis,
    plural,
    sealable,
    sessions_text,
    token_authenticates,
)
from ._erase import EXIT_PENDING, erase, erase_idle
from ._export import EXIT_USAGE, export_session
from ._history_audit import chain_counts
from ._progress import ProgressBar
from ._report import safe
from ._seedbook import SeedBook
from ._walk import distinct_items, iso

EXIT_UNEXPECTED = 5
_TEXT_CONTROLS = frozenset(chr(c) for c in (*range(0x20), 0x7F)) - set("\t\n\r")


def _keyring_from_file(path: Path) -> Keyring:
    """A key file holds text ('kid:key' pairs or one key) or exactly 32 raw key bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(
            f"cannot read the key file {safe(repr(str(path)))}: {exc.strerror}", EXIT_KEYS
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or not _TEXT_CONTROLS.isdisjoint(text):
        if len(data) == 32:
            return Keyring(data)
        what = "not UTF-8 text" if text is None else "binary, not text"
        raise CommandError(
            f"the key file is not a text key ({len(data)} bytes that are {what}); "
            "write 'kid:key' pairs or one key from `encmem keygen` into it",
            EXIT_KEYS,
        )
    return Keyring.parse(text)


def load_keyring(key_file: str | None) -> Keyring:
    """Keys from --key-file, else ENCMEM_KEYS (kid:key pairs), else ENCMEM_KEY (one key)."""
    try:
        if key_file:
            return _keyring_from_file(Path(key_file))
        if os.environ.get("ENCMEM_KEYS", "").strip():
            return Keyring.from_env("ENCMEM_KEYS")
        if os.environ.get("ENCMEM_KEY", "").strip():
            return Keyring.from_env("ENCMEM_KEY")
    except InvalidKeyError as exc:
        raise CommandError(f"bad key: {exc}", EXIT_KEYS) from None
    raise CommandError(
        "no key given: set ENCMEM_KEYS ('kid:key,kid:key', primary first) or ENCMEM_KEY, "
        "or pass --key-file FILE",
        EXIT_KEYS,
    )


# -- maintenance ----------------------------------------------------------------------------


async def _check_keeps_seeds(store: SessionStore) -> None:
    """``rotate --shred-ready`` needs a key store: the store's own, or ``--key-store``."""
    sessions = await store.session_ids()
    if sessions and Capabilities.of(store.session(sessions[0])).key_store is None:
        raise CommandError(
            "--shred-ready: this store keeps no seeds, so its sessions cannot be made "
            "shreddable; name a key store with --key-store PATH|URL",
            EXIT_USAGE,
        )


def _opened_by(kind: str, obj: Item | CorruptRow, primary: str) -> bool:
    """Whether ``kind`` opens this stored object (what the others leave alone cannot stop it)."""
    if isinstance(obj, CorruptRow):
        return True
    version = obj.get("v")
    current = is_envelope(obj) and type(version) is int and version in CHAINED_VERSIONS
    if kind == "rotate":
        return not (current and obj.get("kid") == primary)
    if kind == "encrypt":
        return looks_sealed(obj) and not current
    return True


async def _refusal(
    kind: str, store: SessionStore, keyring: Keyring, key_store: KeyStore | None
) -> CommandError:
    """Why the items a maintenance pass cannot open do not open, as one refusal."""
    diagnosis = Diagnosis(keyring, key_store=key_store)
    items = 0
    async for session_id, stored in distinct_items(store, diagnosis.book):
        items += 1
        obj = stored[2]
        if _opened_by(kind, obj, keyring.primary_kid):
            diagnosis.open(session_id, stored)
        elif kind == "encrypt" and not isinstance(obj, CorruptRow) and not sealable(obj):
            diagnosis.unsealable(session_id, stored)
    diagnosis.settle()
    causes = "; ".join(diagnosis.causes()) or "some items cannot be opened"
    return CommandError(
        f"nothing was changed: of {plural(items, 'item')}, {causes}. Pass --skip-unreadable "
        "to go on and leave such items as they are",
        diagnosis.exit_code(),
    )


async def check_primary_key(
    store: SessionStore, keyring: Keyring, key_store: KeyStore | None = None
) -> None:
    """Refuse a primary key that opens none of the items already sealed under its key id:
    everything a maintenance pass writes is sealed under it. Stops at the first item whose
    token authenticates, so a right key costs one item."""
    primary = keyring.primary_kid
    failed, sessions = 0, []
    book = SeedBook(keyring, key_store)
    async for session_id, (_, _, obj) in distinct_items(store, book):
        if isinstance(obj, CorruptRow) or not is_envelope(obj) or obj.get("kid") != primary:
            continue
        version = obj.get("v")
        if type(version) is not int or version not in CHAINED_VERSIONS:
            continue
        if token_authenticates(keyring, obj, session_id, book.get(session_id)):
            return
        failed += 1
        if session_id not in sessions:
            sessions.append(session_id)
    if failed:
        raise CommandError(
            f"nothing was changed: {plural(failed, 'item')} in {sessions_text(sessions)} "
            f"{'is' if failed == 1 else 'are'} sealed under the primary key id {primary!r}, "
            "and the key given for that id opens none of them: it is the wrong key for that id",
            EXIT_KEYS,
        )


async def run_maintenance(
    kind: str,
    store: SessionStore,
    keyring: Keyring,
    *,
    ttl: float | None,
    dry_run: bool,
    skip_unreadable: bool,
    batch_size: int,
    prechecked: bool = False,
    count_chains: bool = True,
    key_store: KeyStore | None = None,
    shred_ready: bool = False,
) -> tuple[int, dict[str, Any]]:
    """purge / rotate / encrypt: a dry pass first, so a wrong key changes nothing.

    ``prechecked``: that dry pass already ran and passed (on the store opened read-only
    before this one was opened to write), so it is not made again. ``count_chains``: the
    report of rotate and encrypt says how many sessions hold items not in a chain (those
    the pass chains), counted before it runs. ``key_store``: where seeds live, when not in
    the store; ``shred_ready`` (rotate) refuses a store with no key store at all.
    """
    if shred_ready and key_store is None:
        await _check_keeps_seeds(store)
    jobs = {
        "rotate": maintenance.rotate_store,
        "encrypt": maintenance.encrypt_store,
        "purge": maintenance.purge_store,
    }
    job: Any = jobs[kind]
    args: tuple[Any, ...] = (store, keyring) if kind != "purge" else (store, keyring, ttl)
    chains = count_chains and kind != "purge"
    if not prechecked:
        await check_primary_key(store, keyring, key_store)
        preview = await job(*args, batch_size=batch_size, dry_run=True, key_store=key_store)
        if preview["unreadable"] and not skip_unreadable:
            raise await _refusal(kind, store, keyring, key_store)
        if dry_run:
            return EXIT_OK, {**preview, **(await chain_counts(store, kind) if chains else {})}
    counts = await chain_counts(store, kind) if chains else {}
    bar = ProgressBar(kind)
    try:
        result = await job(*args, batch_size=batch_size, progress=bar, key_store=key_store)
    finally:
        bar.finish()
    return EXIT_OK, {**result, **counts}


__all__ = [
    "EXIT_FINDINGS",
    "EXIT_KEYS",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_STORE",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "CommandError",
    "EncmemError",
    "erase",
    "erase_idle",
    "export_session",
    "iso",
    "inspect_store",
    "load_keyring",
    "run_maintenance",
    "verify_store",
]
