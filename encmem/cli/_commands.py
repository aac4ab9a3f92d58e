"""What each ``encmem`` subcommand does, as async functions returning (exit code, report).

The report is a dict: printed as JSON with ``--json``, as readable lines otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from .. import _stores as maintenance
from .._envelope import FORMAT_VERSION, is_envelope, open_envelope, token_timestamp
from .._items import CorruptRow, Item
from .._keys import Keyring
from .._protocol import Capabilities, SessionStore, StoreSession
from ..errors import (
    CommandError,
    DecryptionError,
    EncmemError,
    InvalidKeyError,
    TamperedItemError,
)
from ._progress import ProgressBar

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_KEYS = 3
EXIT_STORE = 4
EXIT_UNEXPECTED = 5


def _keyring_from_file(path: Path) -> Keyring:
    """A key file holds text ('kid:key' pairs or one key) or exactly 32 raw key bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read the key file: {exc.strerror}", EXIT_KEYS) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if len(data) == 32:
            return Keyring(data)
        raise CommandError(
            f"the key file is not a text key ({len(data)} bytes that are not UTF-8 text); "
            "write 'kid:key' pairs or one key from `encmem keygen` into it",
            EXIT_KEYS,
        ) from None
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


def iso(seconds: float | None) -> str | None:
    """A seal time as UTC text; None when unknown or beyond what a calendar can show."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


async def _branches(session: StoreSession) -> list[str | None]:
    caps = Capabilities.of(session)
    if caps.branching is None or caps.branch_addressing is None:
        return [None]
    return [str(branch["branch_id"]) for branch in await caps.branching.list_branches()]


async def _all_items(session: StoreSession) -> list[tuple[str | None, int, Item | CorruptRow]]:
    """(branch, storage id, stored object) of every item, oldest first per branch."""
    caps = Capabilities.of(session)
    found: list[tuple[str | None, int, Item | CorruptRow]] = []
    for branch in await _branches(session):
        if branch is not None and caps.branch_addressing is not None:
            stored = await caps.branch_addressing.get_stored_items(None, branch_id=branch)
        else:
            stored = await session.get_stored_items(None)
        found.extend((branch, item_id, obj) for item_id, obj in stored)
    return found


# -- inspect / verify -----------------------------------------------------------------------


def _count_item(
    obj: object,
    keyring: Keyring | None,
    session_id: str,
    ttl: float | None,
    now: float,
    tally: Counter[str],
    kids: Counter[str],
) -> int | None:
    """Count one stored object into ``tally`` and ``kids``; its seal time when known."""
    tally["items"] += 1
    if isinstance(obj, CorruptRow):
        tally["unreadable"] += 1
        return None
    if not is_envelope(obj):
        tally["plaintext"] += 1
        return None
    assert isinstance(obj, dict)
    kids[str(obj.get("kid"))] += 1
    if obj.get("v") != FORMAT_VERSION:
        tally["sdk_v1"] += 1
    if keyring is None:
        try:
            return token_timestamp(str(obj.get("payload", "")))
        except TamperedItemError:
            tally["unreadable"] += 1
            return None
    try:
        opened = open_envelope(obj, keyring, session_id)
    except DecryptionError:
        tally["unreadable"] += 1
        return None
    if ttl is not None and opened.sealed_at + ttl < now:
        tally["expired"] += 1
    return opened.sealed_at


async def _inspect_session(
    store: SessionStore, session_id: str, keyring: Keyring | None, ttl: float | None
) -> dict[str, Any]:
    now = time.time()
    session = store.session(session_id)
    branches = await _branches(session)
    kids: Counter[str] = Counter()
    tally = Counter({"items": 0, "plaintext": 0, "sdk_v1": 0, "expired": 0, "unreadable": 0})
    times: list[int] = []
    seen: set[int] = set()
    for _, item_id, obj in await _all_items(session):
        if item_id not in seen:
            seen.add(item_id)
            sealed_at = _count_item(obj, keyring, session_id, ttl, now, tally, kids)
            if sealed_at is not None:
                times.append(sealed_at)
    return {
        "session_id": session_id,
        **tally,
        "branches": len(branches) if branches != [None] else 1,
        "key_ids": dict(sorted(kids.items())),
        "oldest": iso(min(times)) if times else None,
        "newest": iso(max(times)) if times else None,
    }


async def inspect_store(
    store: SessionStore, keyring: Keyring | None, ttl: float | None
) -> tuple[int, dict[str, Any]]:
    sessions = [
        await _inspect_session(store, session_id, keyring, ttl)
        for session_id in await store.session_ids()
    ]
    totals = Counter[str]()
    for row in sessions:
        for name in ("items", "plaintext", "sdk_v1", "expired", "unreadable"):
            totals[name] += row[name]
    report = {
        "sessions": sessions,
        "totals": {"sessions": len(sessions), **totals},
        "keys_given": keyring is not None,
        "times_authenticated": keyring is not None,
        "ttl": ttl,
    }
    return EXIT_OK, report


async def verify_store(
    store: SessionStore, keyring: Keyring, ttl: float | None
) -> tuple[int, dict[str, Any]]:
    now = time.time()
    problems: list[dict[str, Any]] = []
    checked = 0
    for session_id in await store.session_ids():
        session = store.session(session_id)
        items = await _all_items(session)
        seen: set[int] = set()
        for branch, item_id, obj in items:
            if item_id in seen:
                continue
            seen.add(item_id)
            checked += 1
            place = {"session_id": session_id, "branch_id": branch, "storage_id": item_id}
            if isinstance(obj, CorruptRow):
                problems.append({**place, "problem": f"corrupt-row ({obj.reason})"})
                continue
            if not is_envelope(obj):
                problems.append({**place, "problem": "plaintext"})
                continue
            try:
                opened = open_envelope(obj, keyring, session_id)
            except DecryptionError as exc:
                problems.append({**place, "problem": type(exc).__name__, "kid": obj.get("kid")})
                continue
            if opened.version != FORMAT_VERSION:
                problems.append({**place, "problem": "sdk-v1-format (run encmem encrypt)"})
            elif ttl is not None and opened.sealed_at + ttl < now:
                problems.append({**place, "problem": "expired-not-purged"})
    unreached = await store.count_items() - checked
    if unreached > 0:
        problems.append(
            {
                "session_id": "-",
                "branch_id": None,
                "storage_id": "-",
                "problem": f"unreached: {unreached} stored rows belong to no session or branch "
                "the store can read",
            }
        )
    report = {"ok": not problems, "checked": checked, "problems": problems}
    return (EXIT_OK if not problems else EXIT_FINDINGS), report


# -- maintenance ----------------------------------------------------------------------------


async def run_maintenance(
    kind: str,
    store: SessionStore,
    keyring: Keyring,
    *,
    ttl: float | None,
    dry_run: bool,
    skip_unreadable: bool,
    batch_size: int,
) -> tuple[int, dict[str, Any]]:
    """purge / rotate / encrypt: a dry pass first, so a wrong key changes nothing."""
    jobs = {
        "rotate": maintenance.rotate_store,
        "encrypt": maintenance.encrypt_store,
        "purge": maintenance.purge_store,
    }
    job: Any = jobs[kind]
    args: tuple[Any, ...] = (store, keyring) if kind != "purge" else (store, keyring, ttl)
    preview = await job(*args, batch_size=batch_size, dry_run=True)
    if preview["unreadable"] and not skip_unreadable:
        raise CommandError(
            f"{preview['unreadable']} of {preview['examined']} items cannot be opened with the "
            "given keys (wrong or missing key?); nothing was changed. Add the missing keys, or "
            "pass --skip-unreadable to leave those items as they are",
            EXIT_KEYS,
        )
    if dry_run:
        return EXIT_OK, preview
    bar = ProgressBar(kind)
    try:
        result = await job(*args, batch_size=batch_size, progress=bar)
    finally:
        bar.finish()
    return EXIT_OK, result


# -- export / erase -------------------------------------------------------------------------


async def export_session(
    store: SessionStore, keyring: Keyring, session_id: str, out: TextIO
) -> tuple[int, dict[str, Any]]:
    if session_id not in await store.session_ids():
        raise CommandError(f"no session {session_id!r} in this store", EXIT_STORE)
    session = store.session(session_id)
    written = 0
    unreadable = 0
    for branch, item_id, obj in await _all_items(session):
        try:
            opened = open_envelope(obj, keyring, session_id)
        except DecryptionError:
            unreadable += 1
            continue
        line = {
            "session_id": session_id,
            "branch_id": branch,
            "storage_id": item_id,
            "sealed_at": iso(opened.sealed_at),
            "item": opened.item,
        }
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        written += 1
    out.flush()
    report = {"session_id": session_id, "exported": written, "unreadable": unreadable}
    if unreadable:
        raise CommandError(
            f"{unreadable} items of session {session_id!r} cannot be opened with the given "
            f"keys; the other {written} were exported",
            EXIT_KEYS,
        )
    return EXIT_OK, report


def confirm(session_id: str, items: int, stdin: TextIO = sys.stdin) -> bool:
    """Ask on the terminal; without one, refuse (``--yes`` is the way to say yes)."""
    if not stdin.isatty():
        return False
    sys.stderr.write(
        f"Erase every row of session {session_id!r} ({items} items) for good? "
        "Type the session id to confirm: "
    )
    sys.stderr.flush()
    return stdin.readline().strip() == session_id


async def erase(store: SessionStore, session_id: str, yes: bool) -> tuple[int, dict[str, Any]]:
    if session_id not in await store.session_ids():
        raise CommandError(f"no session {session_id!r} in this store", EXIT_STORE)
    session: Any = store.session(session_id)
    items = len(await session.get_stored_items(None))
    if not yes and not confirm(session_id, items):
        raise CommandError(
            "not confirmed; nothing was erased (pass --yes to erase without asking)",
            EXIT_FINDINGS,
        )
    removed = await store.erase_session(session_id)
    return EXIT_OK, {"session_id": session_id, "rows_removed": removed}


__all__ = [
    "EXIT_FINDINGS",
    "EXIT_KEYS",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "CommandError",
    "EncmemError",
    "erase",
    "export_session",
    "inspect_store",
    "load_keyring",
    "run_maintenance",
    "verify_store",
]
