"""The stored envelope: sealing an item, opening it, and the clear structural fields.

A sealed item is a JSON object::

    {"__enc__": 1, "v": 3, "kid": KID, "payload": FERNET_TOKEN, <clear fields>}

The token of a ``v: 3`` envelope seals the item together with its place in the branch's chain
(:mod:`encmem._chain`); ``v: 2`` envelopes (encmem 0.2) seal the item alone and still open.

The clear fields (``role``, ``type``, ``name``, ``namespace``, ``server_label`` when the item
has them) let a backend classify the item without decrypting it. They are authenticated on
open: they must equal the same fields of the decrypted item. ``v: 1`` envelopes with kid
``hkdf-v1`` are the Agents SDK's format and are opened, never written.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ._chain import GENESIS, Link, digest, unwrap, wrap
from ._exact_json import decode_sealed, same_envelope, same_json, scan_json, sealed_text
from ._items import CorruptRow, Item, decode_item, encode_value
from ._keys import SDK_KID, Keyring
from ._token import FernetKey
from .errors import (
    CorruptRowError,
    DecryptionError,
    PlaintextItemError,
    SessionErasedError,
    TamperedItemError,
    UnknownKeyIdError,
)

FORMAT_VERSION = 3
SHREDDABLE_VERSION = 4
"""Chained, under a key derived with the session's seed (crypto-shredding)."""
CHAINED_VERSIONS = (FORMAT_VERSION, SHREDDABLE_VERSION)
UNCHAINED_VERSION = 2
SDK_FORMAT_VERSION = 1
CLEAR_FIELDS = ("role", "type", "name", "namespace", "server_label")
_ENVELOPE_KEYS = frozenset(("__enc__", "v", "kid", "payload"))
_SEEDED_KEYS = _ENVELOPE_KEYS | {"seed"}
_SEED_ID = re.compile(r"[0-9a-f]{16}")
_CLEAR_SET = frozenset(CLEAR_FIELDS)
_SHOWABLE = re.compile(r"[A-Za-z0-9._-]{1,64}|hkdf-v1")
MAX_CLOCK_SKEW = 60
"""Seconds a seal time may lie ahead of the reader's clock (Fernet's own allowance)."""


class Opened(NamedTuple):
    """An opened envelope: the item, the authenticated seal time, the kid it was under, and
    (v3) its place in the chain."""

    item: Item
    sealed_at: int
    kid: str
    version: int
    link: Link | None = None
    seed_id: str | None = None


def is_envelope(obj: object) -> bool:
    """Whether ``obj`` has the shape of an encrypted envelope (ours or the SDK's)."""
    return (
        isinstance(obj, dict)
        and type(obj.get("__enc__")) is int  # 1, not True or 1.0: one spelling only
        and obj["__enc__"] == 1
        and "payload" in obj
        and "kid" in obj
        and "v" in obj
    )


def looks_sealed(obj: dict[str, Any]) -> bool:
    """Whether a stored object carries any of an envelope's markers.

    Such an object is never plaintext: a damaged or edited envelope is refused as tampered,
    never sealed (or read) as if the key holder had written it.
    """
    return "__enc__" in obj or ("payload" in obj and "kid" in obj)


def clear_fields(item: Item) -> dict[str, Any]:
    """The structural fields an envelope carries in the clear for ``item``."""
    return {name: item[name] for name in CLEAR_FIELDS if name in item}


def seal_link(
    key: FernetKey,
    kid: str,
    item: Item,
    item_json: str,
    sealed_at: int,
    seq: int,
    prev: str,
    seed_id: str | None = None,
) -> tuple[Item, str]:
    """Encrypt ``item`` (encoded as ``item_json``) as item ``seq`` of its chain, after the
    item whose digest is ``prev``; return the envelope and this item's digest. With the
    ``seed_id`` of the seed ``key`` was derived with, the envelope is a v4 one."""
    sealed = wrap(item_json, seq, prev).encode("utf-8")
    return _envelope(key.seal(sealed, sealed_at), kid, item, seed_id), digest(sealed)


def seal(
    key: FernetKey,
    kid: str,
    item: Item,
    item_json: str,
    sealed_at: int,
    seq: int = 1,
    prev: str = GENESIS,
) -> Item:
    """The v3 envelope of ``item`` as item ``seq`` of its chain (the first by default)."""
    return seal_link(key, kid, item, item_json, sealed_at, seq, prev)[0]


def reseal(
    key: FernetKey, kid: str, opened: Opened, sealed_text: bytes, seed_id: str | None = None
) -> Item:
    """The same sealed text under ``key`` with its original seal time (rotation)."""
    return _envelope(key.seal(sealed_text, opened.sealed_at), kid, opened.item, seed_id)


def _envelope(token: str, kid: str, item: Item, seed_id: str | None = None) -> Item:
    envelope: Item = {"__enc__": 1, "v": FORMAT_VERSION, "kid": kid, "payload": token}
    if seed_id is not None:
        envelope["v"] = SHREDDABLE_VERSION
        envelope["seed"] = seed_id
    for name in CLEAR_FIELDS:
        if name in item:
            envelope[name] = item[name]
    return envelope


def envelope_text(token: str, kid: str, item: Item, seed_id: str | None = None) -> str:
    """The stored JSON text of the envelope :func:`seal_link` makes of ``token`` (a Fernet
    token, which needs no escaping), exactly as the JSON encoder would write the envelope,
    without walking it."""
    version = FORMAT_VERSION if seed_id is None else SHREDDABLE_VERSION
    text = f'{{"__enc__":1,"v":{version},"kid":{encode_value(kid)},"payload":"{token}"'
    if seed_id is not None:
        text += f',"seed":{encode_value(seed_id)}'
    for name in CLEAR_FIELDS:
        if name in item:
            text += f',"{name}":{encode_value(item[name])}'
    return text + "}"


def token_timestamp(token: str) -> int:
    """The seal time written in a Fernet token (unauthenticated until the token is opened)."""
    try:
        head = base64.urlsafe_b64decode(token[:12])
    except (binascii.Error, ValueError, TypeError) as exc:
        raise TamperedItemError("the token is not valid base64") from exc
    if len(head) < 9 or head[0] != 0x80:
        raise TamperedItemError("the token does not have Fernet's layout")
    return int.from_bytes(head[1:9], "big")


def shown(value: object) -> str:
    """A stored value for an error message: short, and a valid key id or nothing of it."""
    if isinstance(value, str) and _SHOWABLE.fullmatch(value):
        return repr(value)
    return f"<a {type(value).__name__} that is not a valid key id>"


def _check_clear_fields(obj: dict[str, Any], item: Item, envelope_keys: frozenset[str]) -> None:
    """The clear fields must be exactly the item's structural fields, with nothing else."""
    for name, value in obj.items():
        if name in envelope_keys:
            continue
        if name not in _CLEAR_SET:
            raise TamperedItemError(f"the envelope has an unexpected field {name!r}")
        if name not in item or not same_json(item[name], value):
            raise TamperedItemError("the envelope's clear fields do not match its sealed content")
    for name in CLEAR_FIELDS:
        if name in item and name not in obj:
            raise TamperedItemError("the envelope's clear fields do not match its sealed content")


def check_seal_time(sealed_at: int, now: float) -> None:
    """Refuse a seal time further ahead of the clock than Fernet allows."""
    if sealed_at > now + MAX_CLOCK_SKEW:
        raise TamperedItemError(
            f"the item's seal time is {int(sealed_at - now)} s ahead of this reader's clock, "
            f"more than the {MAX_CLOCK_SKEW} s allowed; fix the clock of the writer or reader"
        )


class Opener:
    """Opens the envelopes of one session, caching per-kid keys and recent plaintexts.

    The plaintext cache (``cache_size`` entries, oldest out first, 0 to disable) is keyed
    by the token. An entry is made only after the token's HMAC and the clear fields were
    verified, and a hit requires the stored envelope to equal, field for field, the one that
    was verified then; so a hit skips only the decryption. It holds decrypted JSON in process
    memory, which is why its size is the caller's choice.
    """

    __slots__ = ("_cache", "_cache_size", "_clock", "_keys", "keyring", "seeds", "session_id")

    def __init__(
        self,
        keyring: Keyring,
        session_id: str,
        cache_size: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.session_id = session_id
        self._keys: dict[tuple[str, str | None], FernetKey | None] = {}
        self.seeds: dict[str, bytes | DecryptionError] | None = None
        """Seed id -> seed of this session, from its key store (None: no key store)."""
        self._cache: dict[str, tuple[dict[str, Any], str, int, Link | None]] = {}
        self._cache_size = cache_size
        self._clock = clock

    def forget(self, obj: object) -> None:
        """Drop the cached plaintext of ``obj`` (an item that left the store)."""
        if self._cache and isinstance(obj, dict):
            token = obj.get("payload")
            if isinstance(token, str):
                self._cache.pop(token, None)

    def _key(self, kid: str, seed_id: str | None = None) -> FernetKey | None:
        try:
            return self._keys[kid, seed_id]
        except KeyError:
            seed = None if seed_id is None else self._seed(seed_id)
            key = self._keys[kid, seed_id] = self.keyring.session_key(kid, self.session_id, seed)
            return key

    def _seed(self, seed_id: str) -> bytes:
        if self.seeds is None:
            raise UnknownKeyIdError(
                "the item was sealed under a key derived with the session's seed, and no key "
                "store was given: pass EncryptedSession(..., key_store=...) (encmem's own "
                "backends keep seeds in the same store by default)"
            )
        seed = self.seeds.get(seed_id)
        if isinstance(seed, DecryptionError):  # the key store holds it; it does not open
            raise copy.copy(seed)
        if seed is None and self.seeds:
            raise TamperedItemError(
                "the item was sealed under another seed than the session's: an item moved "
                "from another session, or a copy left from before the session was erased"
            )
        if seed is None:
            raise SessionErasedError(
                "the item was sealed under a seed the key store no longer holds: the session "
                "was erased (or, if it was not, the key store lost the seed: restore the key "
                "store from a backup)"
            )
        return seed

    def open(self, obj: object, remember: bool = True) -> Opened:
        """Authenticate and decrypt one stored object; raise a DecryptionError subclass if not.

        Expiry is not decided here: the caller compares ``sealed_at`` with its TTL. A seal
        time more than ``MAX_CLOCK_SKEW`` seconds ahead of the clock is refused as tampered.
        With ``remember=False`` the plaintext is not cached (a long read would only churn it).
        """
        opened = self._open(obj, remember)
        check_seal_time(opened.sealed_at, self._clock())
        return opened

    def _open(self, obj: object, remember: bool) -> Opened:
        if isinstance(obj, CorruptRow):
            raise CorruptRowError(f"a stored row cannot be read: {obj.reason}")
        if not is_envelope(obj):
            if isinstance(obj, dict) and looks_sealed(obj):
                raise TamperedItemError("an envelope's markers were damaged or removed")
            raise PlaintextItemError("a plaintext item was found where an encrypted one belongs")
        assert isinstance(obj, dict)
        token, kid, version = obj["payload"], obj["kid"], obj["v"]
        if not isinstance(token, str) or not isinstance(kid, str):
            raise TamperedItemError("the envelope's payload or kid is not a string")
        if type(version) is not int:
            raise TamperedItemError(
                f"the envelope's format version is not an integer (a {type(version).__name__})"
            )
        if version in (FORMAT_VERSION, UNCHAINED_VERSION):
            return self._open_ours(obj, token, kid, version, None, remember)
        if version == SHREDDABLE_VERSION:
            seed_id = obj.get("seed")
            if not isinstance(seed_id, str) or not _SEED_ID.fullmatch(seed_id):
                raise TamperedItemError("the envelope's seed id is not one")
            return self._open_ours(obj, token, kid, version, seed_id, remember)
        if version == SDK_FORMAT_VERSION and kid == SDK_KID:
            if obj.keys() != _ENVELOPE_KEYS:
                raise TamperedItemError(
                    "an Agents SDK (v1) envelope has fields the SDK never writes"
                )
            return self._open_sdk(token)
        shown_version = version if abs(version) < 10**6 else "<a large number>"
        raise TamperedItemError(f"unknown envelope format v={shown_version} kid={shown(kid)}")

    def _open_ours(
        self,
        obj: dict[str, Any],
        token: str,
        kid: str,
        version: int,
        seed_id: str | None,
        remember: bool,
    ) -> Opened:
        cached = self._cache.get(token) if self._cache_size else None
        if cached is not None and same_envelope(cached[0], obj):
            # The very envelope that was verified before: same token, kid and clear fields.
            return _reopened(cached)
        key = self._key(kid, seed_id)
        if key is None:
            raise UnknownKeyIdError(
                f"the item was sealed under key id {shown(kid)}, which the keyring does not "
                f"hold (it holds {list(self.keyring.kids)}); add that key to the Keyring "
                "to read it",
                kid=kid if _SHOWABLE.fullmatch(kid) else None,
            )
        opened = key.open(token)
        if opened is None:
            raise TamperedItemError(
                f"the token under key id {kid!r} failed authentication (wrong key for this "
                "id, an item moved from another session, or an edited token)",
                kid=kid if _SHOWABLE.fullmatch(kid) else None,
            )
        plaintext, sealed_at = opened
        text = sealed_text(plaintext)
        item = decode_sealed(text)
        link: Link | None = None
        if version != UNCHAINED_VERSION:
            item, seq, prev = unwrap(item)
            link = Link(seq, prev, digest(plaintext))
        _check_clear_fields(obj, item, _ENVELOPE_KEYS if seed_id is None else _SEEDED_KEYS)
        if self._cache_size and remember:
            self._cache[token] = (dict(obj), text, sealed_at, link)
            if len(self._cache) > self._cache_size:
                del self._cache[next(iter(self._cache))]  # the oldest entry
        return Opened(item, sealed_at, kid, version, link, seed_id)

    @property
    def cache_size(self) -> int:
        """How many verified plaintexts are kept at most."""
        return self._cache_size

    def sealed_plaintext(self, obj: Item, opened: Opened) -> bytes:
        """The exact plaintext of an envelope that opened (to re-seal it under another key)."""
        key = self._key(opened.kid, opened.seed_id)
        found = key.open(obj["payload"]) if key is not None else None
        assert found is not None, "sealed_plaintext() takes an envelope that opened"
        return found[0]

    def _open_sdk(self, token: str) -> Opened:
        for key in self.keyring.sdk_keys(self.session_id):
            opened = key.open(token)
            item = decode_item(opened[0]) if opened is not None else None
            if opened is not None and item is not None:
                return Opened(item, opened[1], SDK_KID, SDK_FORMAT_VERSION)
        raise TamperedItemError(
            "an Agents SDK (v1) item failed authentication under every key of the keyring; "
            "pass the key the SDK used (Keyring(..., sdk_keys=[...]) for a non-Fernet key)"
        )


def _reopened(cached: tuple[dict[str, Any], str, int, Link | None]) -> Opened:
    """A kept plaintext as an opened item: its JSON text was checked when it was first opened;
    each call parses a fresh copy for the caller."""
    envelope, text, sealed_at, link = cached
    value = scan_json(text, 0)[0]
    item = value["item"] if link is not None else value
    return Opened(item, sealed_at, envelope["kid"], envelope["v"], link, envelope.get("seed"))


def open_envelope(
    obj: object,
    keyring: Keyring,
    session_id: str,
    clock: Callable[[], float] = time.time,
    seeds: dict[str, bytes | DecryptionError] | None = None,
) -> Opened:
    """Authenticate and decrypt one stored object (see :meth:`Opener.open`), with the
    session's ``seeds`` from its key store when it has one."""
    opener = Opener(keyring, session_id, clock=clock)
    opener.seeds = seeds
    return opener.open(obj)
