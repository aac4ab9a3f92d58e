"""``encmem inspect`` and ``encmem verify``: what a store holds, and whether all of it is valid.

Both only read: the command opens the store read-only for them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .._envelope import (
    SDK_FORMAT_VERSION,
    SHREDDABLE_VERSION,
    is_envelope,
    looks_sealed,
    open_envelope,
    token_timestamp,
)
from .._items import CorruptRow
from .._keys import Keyring
from .._protocol import KeyStore, SessionStore
from .._reading import is_expired
from .._seeds import SeedMap
from ..errors import DecryptionError, TamperedItemError
from ._diagnosis import EXIT_FINDINGS, EXIT_KEYS, Diagnosis, plural
from ._history_audit import (
    HeadArg,
    history_findings,
    is_unchained,
    not_chained,
    not_shreddable,
)
from ._seedbook import SeedBook
from ._walk import all_items, branches, distinct_items, iso, kid_label, once_each

EXIT_OK = 0
_UNSHOWN_KID = "<invalid>"
_COUNTS = (
    "items",
    "plaintext",
    "sdk_v1",
    "unchained",
    "unshreddable",
    "expired",
    "unreadable",
)


def _count_item(
    obj: object,
    keyring: Keyring | None,
    session_id: str,
    ttl: float | None,
    now: float,
    tally: Counter[str],
    kids: Counter[str],
    seeds: SeedMap | None = None,
) -> int | None:
    """Count one stored object into ``tally`` and ``kids``; its seal time when known."""
    tally["items"] += 1
    if isinstance(obj, CorruptRow):
        tally["unreadable"] += 1
        return None
    if not is_envelope(obj):
        # An object with envelope markers is a damaged envelope, never plaintext.
        damaged = isinstance(obj, dict) and looks_sealed(obj)
        tally["unreadable" if damaged else "plaintext"] += 1
        return None
    assert isinstance(obj, dict)
    kids[kid_label(obj.get("kid")) or _UNSHOWN_KID] += 1
    tally["unshreddable"] += int(not is_shreddable(obj))
    if is_unchained(obj):
        tally["unchained"] += 1
        tally["sdk_v1"] += int(obj.get("v") == SDK_FORMAT_VERSION)
    if keyring is None:
        try:
            return token_timestamp(str(obj.get("payload", "")))
        except TamperedItemError:
            tally["unreadable"] += 1
            return None
    try:
        opened = open_envelope(obj, keyring, session_id, seeds=seeds)
    except DecryptionError:
        tally["unreadable"] += 1
        return None
    if is_expired(opened.sealed_at, ttl, now):
        tally["expired"] += 1
    return opened.sealed_at


def is_shreddable(obj: dict[str, Any]) -> bool:
    """Whether an envelope is sealed with its session's seed (v4): an erase shreds every
    copy of it. Other envelopes stay readable wherever a copy is, while the master key is."""
    version = obj.get("v")
    return type(version) is int and version == SHREDDABLE_VERSION


async def _inspect_session(
    store: SessionStore,
    session_id: str,
    keyring: Keyring | None,
    ttl: float | None,
    key_store: KeyStore | None = None,
) -> dict[str, Any]:
    now = time.time()
    session = store.session(session_id)
    found = await branches(session)
    seeds = await SeedBook(keyring, key_store).load(store, session_id)
    kids: Counter[str] = Counter()
    tally = Counter(dict.fromkeys(_COUNTS, 0))
    times: list[int] = []
    for _, _, obj in once_each(await all_items(session, found)):
        sealed_at = _count_item(obj, keyring, session_id, ttl, now, tally, kids, seeds)
        if sealed_at is not None:
            times.append(sealed_at)
    return {
        "session_id": session_id,
        **tally,
        "expired": tally["expired"] if keyring is not None else None,  # None: not checked
        "branches": len(found) if found != [None] else 1,
        "key_ids": dict(sorted(kids.items())),
        "oldest": iso(min(times)) if times else None,
        "newest": iso(max(times)) if times else None,
    }


async def inspect_store(
    store: SessionStore,
    keyring: Keyring | None,
    ttl: float | None,
    key_store: KeyStore | None = None,
) -> tuple[int, dict[str, Any]]:
    sessions = [
        await _inspect_session(store, session_id, keyring, ttl, key_store)
        for session_id in await store.session_ids()
    ]
    totals: dict[str, int | None] = {}
    for name in _COUNTS:
        counts = [row[name] for row in sessions]
        totals[name] = None if None in counts else sum(counts)
    if keyring is None:
        totals["expired"] = None  # nothing could be checked without a key
    # Items sealed before chains (v2, and the SDK's v1, which sdk_v1 counts too): a total of
    # its own, beside the totals that readers of this report already know.
    unchained = totals.pop("unchained")
    unshreddable = totals.pop("unshreddable")  # sealed without a seed: v3, v2, the SDK's v1
    report = {
        "sessions": sessions,
        "totals": {"sessions": len(sessions), **totals},
        "unchained": unchained,
        "unshreddable": unshreddable,
        "keys_given": keyring is not None,
        "times_authenticated": keyring is not None,
        "ttl": ttl,
    }
    return EXIT_OK, report


async def _item_pass(
    store: SessionStore, diagnosis: Diagnosis, ttl: float | None
) -> tuple[int, Counter[str], Counter[str]]:
    """Open every item once, recording what is wrong with each; how many were checked, and
    per session how many opened items were sealed before chains, and without a seed."""
    now = time.time()
    problems = diagnosis.findings
    checked = 0
    unchained: Counter[str] = Counter()
    unshreddable: Counter[str] = Counter()
    async for session_id, stored in distinct_items(store, diagnosis.book):
        checked += 1
        opened = diagnosis.open(session_id, stored)
        if opened is None:
            continue
        place = {"session_id": session_id, "branch_id": stored[0], "storage_id": stored[1]}
        if opened.link is None:
            unchained[session_id] += 1
        if opened.version != SHREDDABLE_VERSION:
            unshreddable[session_id] += 1
        if opened.version == SDK_FORMAT_VERSION:
            problems.append({**place, "problem": "sdk-v1-format (run encmem encrypt)"})
        elif is_expired(opened.sealed_at, ttl, now):
            problems.append({**place, "problem": "expired-not-purged"})
    return checked, unchained, unshreddable


async def verify_store(
    store: SessionStore,
    keyring: Keyring,
    ttl: float | None,
    heads: Sequence[HeadArg] = (),
    key_store: KeyStore | None = None,
) -> tuple[int, dict[str, Any]]:
    """Every item, opened, then every branch of every session checked as a history (and
    against the ``heads`` anchors): exit 0 when all are valid, 1 with findings, 3 with key
    problems (a key id the keys lack, or one whose key opens none of its items: reported
    once)."""
    problems: list[dict[str, Any]] = []
    diagnosis = Diagnosis(keyring, problems, key_store)
    before = await store.count_items()
    checked, unchained, unshreddable = await _item_pass(store, diagnosis, ttl)
    problems.extend(not_chained(unchained))
    problems.extend(not_shreddable(unshreddable))
    histories, histories_checked = await history_findings(store, keyring, heads, key_store)
    problems.extend(histories)
    key_problem = diagnosis.settle()
    # Rows written or removed by others during the walk move the count; a row that was
    # there from start to end and never reached cannot.
    unreached = min(before, await store.count_items()) - checked
    if unreached > 0:
        problems.append(
            {
                "session_id": None,
                "branch_id": None,
                "storage_id": None,
                "problem": f"unreached: {plural(unreached, 'stored row')} "
                f"{'belongs' if unreached == 1 else 'belong'} to no session or branch the store "
                "can read",
            }
        )
    report = {
        "ok": not problems,
        "keys_ok": not key_problem,
        "checked": checked,
        "unopened": diagnosis.unopened(),
        "histories": histories_checked,
        "anchors": len(heads),
        "problems": problems,
    }
    if key_problem:
        return EXIT_KEYS, report
    return (EXIT_OK if not problems else EXIT_FINDINGS), report
