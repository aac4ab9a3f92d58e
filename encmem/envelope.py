"""The stored envelope: sealing an item, opening it, and the clear structural fields.

A sealed item is a JSON object::

    {"__enc__": 1, "v": 2, "kid": KID, "payload": FERNET_TOKEN, <clear fields>}

The clear fields (``role``, ``type``, ``name``, ``namespace``, ``server_label`` when the item
has them) let a backend classify the item without decrypting it. They are authenticated on
open: they must equal the same fields of the decrypted item. ``v: 1`` envelopes with kid
``hkdf-v1`` are the Agents SDK's format and are opened, never written.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, NamedTuple

from cryptography.fernet import Fernet, InvalidToken

from .errors import PlaintextItemError, TamperedItemError, UnknownKeyIdError
from .items import Item, decode_item
from .keys import SDK_KID, Keyring

FORMAT_VERSION = 2
SDK_FORMAT_VERSION = 1
CLEAR_FIELDS = ("role", "type", "name", "namespace", "server_label")
_ENVELOPE_KEYS = frozenset(("__enc__", "v", "kid", "payload"))


class Opened(NamedTuple):
    """An opened envelope: the item, the authenticated seal time, and the kid it was under."""

    item: Item
    sealed_at: int
    kid: str
    version: int


def is_envelope(obj: object) -> bool:
    """Whether ``obj`` has the shape of an encrypted envelope (ours or the SDK's)."""
    return (
        isinstance(obj, dict)
        and obj.get("__enc__") == 1
        and "payload" in obj
        and "kid" in obj
        and "v" in obj
    )


def clear_fields(item: Item) -> dict[str, Any]:
    """The structural fields an envelope carries in the clear for ``item``."""
    return {name: item[name] for name in CLEAR_FIELDS if name in item}


def seal(fernet: Fernet, kid: str, item: Item, item_json: str, sealed_at: int) -> Item:
    """Encrypt ``item`` (already encoded as ``item_json``) into a v2 envelope."""
    token = fernet.encrypt_at_time(item_json.encode("utf-8"), sealed_at).decode("ascii")
    envelope: Item = {"__enc__": 1, "v": FORMAT_VERSION, "kid": kid, "payload": token}
    for name in CLEAR_FIELDS:
        if name in item:
            envelope[name] = item[name]
    return envelope


def token_timestamp(token: str) -> int:
    """The seal time written in a Fernet token (unauthenticated until the token is opened)."""
    try:
        head = base64.urlsafe_b64decode(token[:12])
    except (binascii.Error, ValueError, TypeError) as exc:
        raise TamperedItemError("the token is not valid base64") from exc
    if len(head) < 9 or head[0] != 0x80:
        raise TamperedItemError("the token does not have Fernet's layout")
    return int.from_bytes(head[1:9], "big")


def _decrypt(fernet: Fernet, token: str) -> Item | None:
    try:
        plaintext = fernet.decrypt(token)
    except (InvalidToken, TypeError, ValueError):
        return None
    return decode_item(plaintext)


def open_envelope(obj: object, keyring: Keyring, session_id: str) -> Opened:
    """Authenticate and decrypt one stored object; raise a DecryptionError subclass if it fails.

    Expiry is not decided here: the caller compares ``sealed_at`` with its TTL.
    """
    if not is_envelope(obj):
        raise PlaintextItemError("a plaintext item was found where an encrypted one belongs")
    assert isinstance(obj, dict)
    token = obj["payload"]
    kid = obj["kid"]
    version = obj["v"]
    if not isinstance(token, str) or not isinstance(kid, str):
        raise TamperedItemError("the envelope's payload or kid is not a string")
    if version == FORMAT_VERSION:
        fernet = keyring.session_fernet(kid, session_id)
        if fernet is None:
            raise UnknownKeyIdError(
                f"the item was sealed under key id {kid!r}, which the keyring does not hold "
                f"(it holds {list(keyring.kids)}); add that key to the Keyring to read it"
            )
        item = _decrypt(fernet, token)
        if item is None:
            raise TamperedItemError(
                f"the token under key id {kid!r} failed authentication (wrong key for this "
                "id, an item moved from another session, or an edited token)"
            )
        clear = {name: obj[name] for name in CLEAR_FIELDS if name in obj}
        if clear != clear_fields(item):
            raise TamperedItemError("the envelope's clear fields do not match its sealed content")
        extra = obj.keys() - _ENVELOPE_KEYS - set(CLEAR_FIELDS)
        if extra:
            raise TamperedItemError(f"the envelope has unexpected fields {sorted(extra)}")
        return Opened(item, token_timestamp(token), kid, FORMAT_VERSION)
    if version == SDK_FORMAT_VERSION and kid == SDK_KID:
        for fernet in keyring.sdk_fernets(session_id):
            item = _decrypt(fernet, token)
            if item is not None:
                return Opened(item, token_timestamp(token), kid, SDK_FORMAT_VERSION)
        raise TamperedItemError(
            "an Agents SDK (v1) item failed authentication under every key of the keyring; "
            "pass the key the SDK used (Keyring(..., sdk_keys=[...]) for a non-Fernet key)"
        )
    raise TamperedItemError(f"unknown envelope format v={version!r} kid={kid!r}")
