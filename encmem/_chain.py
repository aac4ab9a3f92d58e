"""Tamper-evident history: each sealed item's place in its branch, and each branch's head.

A v3 item's token seals ``{"seq": N, "prev": LINK, "item": {...}}``: its sequence number in
the branch and the digest of the previous item's sealed text (``""`` for the first item of a
chain). Each digest covers the previous one, so the newest digest stands for the whole chain.
Re-sealing the same text under another key (rotation) keeps every digest.

A backend with the HistoryHead capability keeps one head per session and branch, written in
the same transaction as the items: a Fernet token, under the session key, of the branch id,
the newest sequence number and digest, and the *floor*, the lowest sequence number still
stored (raised when expired items are purged from the front). A read compares the stored
items with their head, so a cut tail, a re-inserted pop or a copied branch disagree with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import NamedTuple

from ._keys import Keyring
from .errors import HistoryTamperedError, TamperedItemError, UnknownKeyIdError

GENESIS = ""
"""The ``prev`` of the first item of a chain."""

_DIGEST_CHARS = 64  # SHA-256 in hex
_ascii = json.JSONEncoder(ensure_ascii=True).encode
"""A string as ``json.dumps(..., ensure_ascii=True)`` writes it (encoding a str alone takes
the encoder's short path, without setting it up)."""


class Link(NamedTuple):
    """Where a chained item stands: its sequence number, its predecessor's digest, its own."""

    seq: int
    prev: str
    digest: str


class Head(NamedTuple):
    """What a branch's head records (authenticated): branch, newest seq and digest, floor,
    and whether items sealed before chains may precede the chain (``legacy``)."""

    branch: str
    seq: int
    link: str
    floor: int
    legacy: bool = False

    @property
    def empty(self) -> bool:
        """Whether the branch is expected to hold no chained item at all."""
        return self.seq < self.floor


def anchor(keyring: Keyring, session_id: str, head: Head, kid: str | None = None) -> str:
    """``KID:FLOOR-SEQ.MAC``: where a branch's history starts and ends, keyed.

    The MAC (HMAC-SHA256 under a key derived from master key ``kid``, cut to 128 bits)
    covers the branch, floor, newest number and digest: a copy rolled back past a write or
    a purge ends elsewhere, and without the key an anchor says nothing about content.
    """
    kid = keyring.primary_kid if kid is None else kid
    key = keyring.anchor_key(kid, session_id)
    if key is None:
        raise UnknownKeyIdError(
            "the anchor was made under a key id the keyring does not hold; add that key to "
            "the Keyring to check it"
        )
    message = f"{head.branch}\0{head.floor}\0{head.seq}\0{head.link}".encode()
    mac = hmac.new(key, message, hashlib.sha256).digest()[:16]
    return f"{kid}:{head.floor}-{head.seq}.{mac.hex()}"


def anchor_kid(text: str) -> str | None:
    """The key id an anchor names (None when it is not one of ours)."""
    kid, sep, rest = text.rpartition(":")
    return kid if sep and kid and rest else None


def digest(sealed_text: bytes) -> str:
    """The link to an item: SHA-256 of its sealed plaintext, in hex."""
    return hashlib.sha256(sealed_text).hexdigest()


def wrap(item_json: str, seq: int, prev: str) -> str:
    """The text a v3 token seals: the item's place in its chain, then the item."""
    return f'{{"seq":{seq},"prev":"{prev}","item":{item_json}}}'


def _is_link(value: object) -> bool:
    return isinstance(value, str) and (value == GENESIS or len(value) == _DIGEST_CHARS)


def unwrap(value: dict[str, object]) -> tuple[dict[str, object], int, str]:
    """(item, seq, prev) of a decoded v3 plaintext; TamperedItemError when it has another shape."""
    item, seq, prev = value.get("item"), value.get("seq"), value.get("prev")
    if (
        len(value) != 3
        or not isinstance(item, dict)
        or type(seq) is not int
        or seq < 1
        or not _is_link(prev)
    ):
        raise TamperedItemError("the sealed content does not have the chained item's shape")
    assert isinstance(prev, str)
    return item, seq, prev


def first_link(head: Head | None) -> tuple[int, str]:
    """(seq, prev) for the next item appended after ``head`` (a new chain when None)."""
    if head is None:
        return 1, GENESIS
    return head.seq + 1, head.link


# -- heads ------------------------------------------------------------------------------------


def seal_head(keyring: Keyring, session_id: str, head: Head) -> str:
    """The stored form of a head: the primary key id and a Fernet token of its fields."""
    kid = keyring.primary_kid
    key = keyring.session_key(kid, session_id)
    assert key is not None
    return f"{kid} {key.seal(head_text(head).encode('ascii'), 0)}"


def head_text(head: Head) -> str:
    """The JSON text a head token seals (ASCII), as ``json.dumps`` of ``{"head": {...}}``
    would write it, without setting up an encoder per write."""
    branch, seq, link, floor, legacy = head
    if type(seq) is not int or type(floor) is not int or type(legacy) is not bool:
        fields = {"branch": branch, "seq": seq, "link": link, "floor": floor, "legacy": legacy}
        return json.dumps({"head": fields}, ensure_ascii=True, separators=(",", ":"))
    return (
        f'{{"head":{{"branch":{_ascii(branch)},"seq":{seq},"link":{_ascii(link)},'
        f'"floor":{floor},"legacy":{"true" if legacy else "false"}}}}}'
    )


def _head_error(reason: str, branch: str) -> HistoryTamperedError:
    return HistoryTamperedError(
        f"the history head {reason}", kind="head mismatch", branch_id=branch
    )


def open_head(stored: str, keyring: Keyring, session_id: str, branch: str) -> Head:
    """Authenticate a stored head of ``branch``; HistoryTamperedError if it is not one."""
    kid, _, token = stored.rpartition(" ")
    key = keyring.session_key(kid, session_id) if kid else None
    if key is None:
        if kid and kid not in keyring:
            raise UnknownKeyIdError(
                "the history head was sealed under a key id the keyring does not hold; add "
                "that key to the Keyring to read this session"
            )
        raise _head_error("is not in encmem's format", branch)
    opened = key.open(token)
    if opened is None:
        raise _head_error("failed authentication (edited, or copied from elsewhere)", branch)
    try:
        fields = json.loads(opened[0].decode("ascii"))["head"]
        head = Head(
            fields["branch"], fields["seq"], fields["link"], fields["floor"], fields["legacy"]
        )
    except (UnicodeDecodeError, ValueError, StopIteration, KeyError, TypeError):
        raise _head_error("does not have a head's shape", branch) from None
    if head.branch != branch:
        raise _head_error(f"belongs to another branch, not {branch!r}", branch)
    return head
