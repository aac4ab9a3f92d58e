"""Each session's history checked as a chain: ``encmem verify``'s history pass and its
``--head`` anchors, and ``encmem head``, which prints those anchors.

The checks are the library's own (:meth:`EncryptedSession.verify_history` and
:meth:`EncryptedSession.history_head`), run strictly and without expiry, so that the command
and an application reading the store judge a history by the same rules.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from .._envelope import SDK_FORMAT_VERSION, UNCHAINED_VERSION, is_envelope, looks_sealed
from .._envelope import SHREDDABLE_VERSION as SHREDDABLE
from .._items import CorruptRow, Item
from .._keys import Keyring
from .._protocol import Capabilities, KeyStore, SessionStore, StoreSession
from .._session import EncryptedSession
from ..errors import CommandError, DecryptionError, HistoryTamperedError, UnknownKeyIdError
from ._diagnosis import (
    EXIT_FINDINGS,
    EXIT_STORE,
    NOT_CHAINED,
    NOT_SHREDDABLE,
    session_finding,
)
from ._export import EXIT_USAGE
from ._report import safe
from ._walk import branches, distinct_items

ANCHOR_MISMATCH = "history: head mismatch (does not end at the anchor)"
_ANCHOR = re.compile(r"[A-Za-z0-9._-]{1,64}:[0-9]{1,19}-[0-9]{1,19}\.[0-9a-f]{32}")

Target = tuple[str, str | None]
"""(session id, branch id): None for a session without branches, or its current branch."""
Finding = dict[str, Any]


class HeadArg(NamedTuple):
    """One ``--head`` argument: SESSION or SESSION@BRANCH as typed, and its anchor."""

    target: str
    anchor: str


def head_arg(text: str) -> HeadArg:
    """The argparse type of ``--head``: ``SESSION=ANCHOR`` or ``SESSION@BRANCH=ANCHOR``."""
    target, equals, anchor = text.rpartition("=")
    if not equals or not target or not _ANCHOR.fullmatch(anchor):
        raise argparse.ArgumentTypeError(
            f"{safe(repr(text))} is not SESSION=ANCHOR or SESSION@BRANCH=ANCHOR, with an anchor "
            "as `encmem head` prints it (KID:FLOOR-SEQ.MAC)"
        )
    return HeadArg(target, anchor)


# -- items sealed before chains -----------------------------------------------------------


def is_unchained(obj: Item | CorruptRow) -> bool:
    """Whether a stored object is an envelope sealed before chains: encmem 0.2's v2 or the
    Agents SDK's v1 (its token, once opened, holds no place in a chain)."""
    if isinstance(obj, CorruptRow) or not is_envelope(obj):
        return False
    version = obj.get("v")
    return type(version) is int and version in (UNCHAINED_VERSION, SDK_FORMAT_VERSION)


def not_chained(counts: Counter[str]) -> list[Finding]:
    """One finding per session that holds items sealed before chains, with their count."""
    return [session_finding(sid, NOT_CHAINED, count) for sid, count in counts.items()]


def not_shreddable(counts: Counter[str]) -> list[Finding]:
    """One finding per session that holds items sealed without a seed (an erase cannot
    shred their copies in backups), with their count."""
    return [session_finding(sid, NOT_SHREDDABLE, count) for sid, count in counts.items()]


async def chain_counts(store: SessionStore, kind: str) -> dict[str, int]:
    """What ``rotate`` (or ``encrypt``) chains: the sessions holding items not in a chain
    and how many such items (envelopes sealed before chains; for encrypt, plaintext too);
    for rotate, also the sessions and items sealed without a seed (it seals them with one)."""
    counts: Counter[str] = Counter()
    unseeded: Counter[str] = Counter()
    async for session_id, (_, _, obj) in distinct_items(store):
        plaintext = isinstance(obj, dict) and not is_envelope(obj) and not looks_sealed(obj)
        if is_unchained(obj) or (kind == "encrypt" and plaintext):
            counts[session_id] += 1
        if not isinstance(obj, CorruptRow) and is_envelope(obj) and obj.get("v") != SHREDDABLE:
            unseeded[session_id] += 1
    found = {"unchained_sessions": len(counts), "unchained": sum(counts.values())}
    if kind == "rotate":  # what rotation moves to seeded keys (shreddable)
        found.update(unshreddable_sessions=len(unseeded), unshreddable=sum(unseeded.values()))
    return found


# -- the history pass of verify ---------------------------------------------------------------


def _strict(
    session_id: str, underlying: StoreSession, keyring: Keyring, key_store: KeyStore | None
) -> EncryptedSession:
    """The session as a reader that skips nothing and drops nothing as expired."""
    return EncryptedSession(
        session_id, underlying, keyring, ttl=None, on_invalid="raise", key_store=key_store
    )


def _broken(place: Finding, exc: DecryptionError, kind: str, anchor: str | None) -> Finding:
    finding = {
        **place,
        "storage_id": exc.item_id,
        "position": exc.position,
        "problem": f"history: {kind}",
        "kind": kind,
        "reason": exc.reason,
    }
    if anchor is not None:
        finding["anchor"] = anchor
    return finding


async def check_history(
    session: EncryptedSession, branch: str | None, anchor: str | None
) -> Finding | None:
    """The finding about one branch's history: None when it is intact and, given an
    ``anchor``, still ends there."""
    place: Finding = {"session_id": session.session_id, "branch_id": branch}
    current = None
    try:
        if anchor is None:
            await session.verify_history(branch_id=branch)
        else:
            # The same strict check as verify_history(anchor=...), which also says where the
            # history ends now, for the finding.
            current = await session.history_head(branch)
        if Capabilities.of(session.underlying_session).user_turns is not None:
            # Turn structure kept in the clear, checked against the authenticated items.
            await session.get_conversation_turns(branch)
    except HistoryTamperedError as exc:
        return _broken(place, exc, exc.kind, anchor)
    except DecryptionError as exc:
        if exc.position is not None or exc.item_id is not None:
            return None  # an item that does not open on its own: the item pass reports it
        finding = _broken(place, exc, "head mismatch", anchor)  # the head itself does not open
        if isinstance(exc, UnknownKeyIdError):
            finding["reason"] = (
                "the history head is sealed under a key id the given keys lack (replaced, or "
                "sealed under a key that was not given)"
            )
        return finding
    if anchor is None or current == anchor:
        return None
    return {
        **place,
        "storage_id": None,
        "position": None,
        "problem": ANCHOR_MISMATCH,
        "kind": "head mismatch",
        "reason": f"the history ends at {current}, not at the anchor {anchor}: rolled back, "
        "cut or rewritten since the anchor was taken",
        "anchor": anchor,
        "found": current,
    }


async def _target(store: SessionStore, text: str, known: set[str]) -> Target:
    """The session and branch a ``--head`` names: a session id that holds ``@`` is taken
    whole when the store has it; else SESSION@BRANCH when the store has SESSION."""
    session_id, at, branch = text.rpartition("@")
    if text in known or not at or not branch or session_id not in known:
        return text, None
    if await branches(store.session(session_id)) == [None]:
        raise CommandError(
            f"--head {safe(repr(text))}: session {safe(repr(session_id))} has no branches in "
            "this store (write SESSION=ANCHOR)",
            EXIT_USAGE,
        )
    return session_id, branch


async def _anchors(
    store: SessionStore, heads: Sequence[HeadArg], known: set[str]
) -> dict[Target, str]:
    wanted: dict[Target, str] = {}
    for head in heads:
        target = await _target(store, head.target, known)
        if wanted.setdefault(target, head.anchor) != head.anchor:
            raise CommandError(
                f"--head {safe(repr(head.target))} is given twice, with different anchors",
                EXIT_USAGE,
            )
    return wanted


def _unmet(found: Finding, session_known: bool, branch_known: bool) -> Finding:
    """Say why a history the walk did not meet does not end at its anchor."""
    if not session_known:
        found["reason"] = "the store holds no such session (erased, or rolled back to before it)"
    elif found["branch_id"] is not None and not branch_known:
        found["reason"] = "the session has no such branch (deleted, or rolled back to before it)"
    return found


async def history_findings(
    store: SessionStore,
    keyring: Keyring,
    heads: Sequence[HeadArg] = (),
    key_store: KeyStore | None = None,
) -> tuple[list[Finding], int]:
    """Every branch of every session checked as a history (against its ``--head`` anchor
    when one was given); the findings and how many histories were checked."""
    sessions = await store.session_ids()
    anchors = await _anchors(store, heads, set(sessions))
    findings: list[Finding] = []
    met: set[Target] = set()
    for session_id in sessions:
        underlying = store.session(session_id)
        session = _strict(session_id, underlying, keyring, key_store)
        for branch in await branches(underlying):
            met.add((session_id, branch))
            found = await check_history(session, branch, anchors.pop((session_id, branch), None))
            if found is not None:
                findings.append(found)
    for (session_id, branch), anchor in anchors.items():  # not met: gone, or a current branch
        session = _strict(session_id, store.session(session_id), keyring, key_store)
        found = await check_history(session, branch, anchor)
        if found is not None:
            findings.append(_unmet(found, session_id in sessions, (session_id, branch) in met))
    return findings, len(met) + len(anchors)


# -- encmem head ----------------------------------------------------------------------------


async def _chosen(underlying: StoreSession, session_id: str, branch: str | None) -> list[Any]:
    listed = await branches(underlying)
    if branch is None:
        return listed
    if listed == [None]:
        raise CommandError("this store keeps no branches: leave out --branch", EXIT_USAGE)
    if branch not in listed:
        raise CommandError(f"session {session_id!r} has no branch {branch!r}", EXIT_STORE)
    return [branch]


async def _anchor(session: EncryptedSession, branch: str | None) -> str:
    try:
        return await session.history_head(branch)
    except HistoryTamperedError as exc:
        where = f"session {session.session_id!r}" + (f" branch {branch!r}" if branch else "")
        raise CommandError(
            f"the history of {where} does not verify (history: {exc.kind}), so no anchor is "
            "printed; `encmem verify` lists every finding",
            EXIT_FINDINGS,
        ) from None


async def history_heads(
    store: SessionStore,
    keyring: Keyring,
    session_id: str | None,
    branch: str | None,
    key_store: KeyStore | None = None,
) -> tuple[int, dict[str, Any]]:
    """The anchor of each session's history (each branch's), once it verified in full."""
    if branch is not None and session_id is None:
        raise CommandError("--branch needs --session: name the session too", EXIT_USAGE)
    sessions = await store.session_ids()
    if session_id is not None:
        if session_id not in sessions:
            raise CommandError(f"no session {session_id!r} in this store", EXIT_STORE)
        sessions = [session_id]
    heads = []
    for name in sessions:
        underlying = store.session(name)
        session = _strict(name, underlying, keyring, key_store)
        for chosen in await _chosen(underlying, name, branch):
            anchor = await _anchor(session, chosen)
            heads.append({"session_id": name, "branch_id": chosen, "anchor": anchor})
    return 0, {"heads": heads}
