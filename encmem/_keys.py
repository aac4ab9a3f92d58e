"""Master keys, keyrings and the per-session key derivation.

A :class:`Keyring` holds one or more master keys by key id (``kid``); the primary one seals
new items, all of them open old ones. Each session gets its own Fernet key, derived with
HKDF-SHA256 from a master key, the format version, the kid and the session id, so a token
copied into another session or relabelled with another kid fails authentication. Which keys
are accepted is decided in ``_keyparse``. A Keyring is safe to share across threads.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TypeVar, Union

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ._keyparse import HINT, SDK_KID, check_kid, fingerprint, parse_key, sdk_material, split_spec
from ._token import FernetKey
from .errors import InvalidKeyError

__all__ = [
    "SDK_KID",
    "KeyInput",
    "Keyring",
    "as_keyring",
    "check_kid",
    "fingerprint",
    "generate_key",
    "parse_key",
]

KeyInput = Union[str, bytes]  # noqa: UP007 - a runtime alias, evaluated on Python 3.10 too

_SDK_INFO = b"agents.session-store.hkdf.v1"
_V2_INFO = b"encmem.session-key.v2"
_SHREDDABLE_INFO = b"encmem.shreddable-session-key.v1"
_SEED_INFO = b"encmem.seed-key.v1"
_ANCHOR_INFO = b"encmem.anchor-key.v1"
_CACHE_SIZE = 4096
_MIN_PASSPHRASE_CHARS = 12

# One lock for the derived-key caches of every Keyring: it guards a few dict operations and
# never a key derivation. A child process gets a fresh one, in case another thread of the
# parent held it at the moment of the fork.
_CACHE_LOCK = threading.Lock()


def _reset_cache_lock() -> None:
    global _CACHE_LOCK
    _CACHE_LOCK = threading.Lock()


if sys.platform != "win32":
    os.register_at_fork(after_in_child=_reset_cache_lock)

_K = TypeVar("_K")
_V = TypeVar("_V")


def _cached(cache: OrderedDict[_K, _V], key: _K) -> _V | None:
    with _CACHE_LOCK:
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
        return value


def _remember(cache: OrderedDict[_K, _V], key: _K, value: _V) -> _V:
    """Store ``value`` unless another thread stored one first; return the one kept."""
    with _CACHE_LOCK:
        kept = cache.setdefault(key, value)
        cache.move_to_end(key)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return kept


def generate_key() -> str:
    """Return a new random master key (a Fernet key: 32 bytes, urlsafe base64)."""
    return Fernet.generate_key().decode("ascii")


def _parse_entry(position: int, value: object) -> tuple[bytes, bytes | None]:
    """parse_key, naming the entry by position: even a valid key id may be a piece of a key."""
    try:
        return parse_key(value)
    except InvalidKeyError as exc:
        raise InvalidKeyError(f"entry {position}: {exc}") from None


def _bound(kid: str, session_id: str) -> bytes:
    """``len(kid) ‖ kid ‖ session_id``: what a derived key is bound to, unambiguously."""
    kid_bytes = kid.encode("ascii")
    return len(kid_bytes).to_bytes(2, "big") + kid_bytes + session_id.encode("utf-8")


def _hkdf(material: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(material)


class Keyring:
    """Master keys by id, one of them primary (the one new items are sealed with).

    ``Keyring(key)`` holds one key whose id is its fingerprint. ``Keyring({"2026-11": new,
    "2026-05": old})`` holds several; the first is primary unless ``primary`` names another.
    ``sdk_keys`` are keys used with the Agents SDK's EncryptedSession: they only open its
    ``v: 1`` items (which carry no key id), never seal, and any string the SDK took is
    accepted.
    """

    __slots__ = ("_cache", "_material", "_primary", "_sdk", "_sdk_cache")

    def __init__(
        self,
        keys: KeyInput | Mapping[str, KeyInput],
        *,
        primary: str | None = None,
        sdk_keys: Iterable[str] = (),
    ) -> None:
        material: dict[str, bytes] = {}
        sdk: list[bytes] = []
        if isinstance(keys, (str, bytes)):
            raw, sdk_raw = parse_key(keys)
            material[fingerprint(raw)] = raw
            sdk += [sdk_raw] if sdk_raw is not None else []
        elif isinstance(keys, Mapping):
            for position, (kid, value) in enumerate(keys.items(), start=1):
                checked = check_kid(kid, entry=position)
                raw, sdk_raw = _parse_entry(position, value)
                material[checked] = raw
                sdk += [sdk_raw] if sdk_raw is not None else []
        else:
            raise InvalidKeyError(
                f"Keyring takes a key or a mapping of key id to key, not {type(keys).__name__}"
            )
        if not material:
            raise InvalidKeyError(f"a Keyring needs at least one key; {HINT}")
        for extra in sdk_keys:
            if not isinstance(extra, str) or not extra:
                raise InvalidKeyError("sdk_keys must be non-empty strings")
            sdk.append(sdk_material(extra))
        chosen = primary if primary is not None else next(iter(material))
        if chosen not in material:
            raise InvalidKeyError(
                f"the primary key id is not one of the {len(material)} key ids given; name one "
                "of those (the value given is not repeated here)"
            )
        self._setup(material, sdk, chosen)

    def _setup(self, material: dict[str, bytes], sdk: list[bytes], primary: str) -> None:
        self._material = material
        self._sdk = list(dict.fromkeys(sdk))
        self._primary = primary
        self._cache: OrderedDict[tuple[str, str, bytes], FernetKey] = OrderedDict()
        self._sdk_cache: OrderedDict[str, list[FernetKey]] = OrderedDict()

    @classmethod
    def _assemble(cls, material: dict[str, bytes], sdk: list[bytes], primary: str) -> Keyring:
        ring = cls.__new__(cls)
        ring._setup(material, sdk, primary)
        return ring

    @classmethod
    def from_passphrase(
        cls,
        passphrase: str | bytes,
        *,
        salt: str | bytes,
        log2_n: int = 17,
        r: int = 8,
        p: int = 1,
    ) -> Keyring:
        """Derive a master key from a passphrase with scrypt (N=2**log2_n, r, p).

        The default, N=2**17, r=8, p=1, takes 128 MiB of memory and about half a second. The
        parameters are part of the key id (``scrypt.n17.r8.p1.<fingerprint>``): a key derived
        with other ones is derived again by passing them (e.g. ``log2_n=15``). Use a
        passphrase of at least 12 characters and a salt of at least 16 bytes, unique to your
        deployment, kept with your configuration.
        """
        if not isinstance(passphrase, (str, bytes)):
            raise InvalidKeyError("a passphrase must be str or bytes")
        if len(passphrase) < _MIN_PASSPHRASE_CHARS:
            raise InvalidKeyError(
                f"a passphrase must have at least {_MIN_PASSPHRASE_CHARS} characters; a random "
                "key from `encmem keygen` is stronger than any passphrase"
            )
        secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
        salt_bytes = salt.encode("utf-8") if isinstance(salt, str) else salt
        if not isinstance(salt_bytes, bytes) or len(salt_bytes) < 16:
            raise InvalidKeyError("the scrypt salt must have at least 16 bytes")
        if not (14 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
            raise InvalidKeyError(
                "scrypt parameters out of range: 14<=log2_n<=22, 1<=r<=32, 1<=p<=16"
            )
        raw = Scrypt(salt=salt_bytes, length=32, n=2**log2_n, r=r, p=p).derive(secret)
        kid = f"scrypt.n{log2_n}.r{r}.p{p}.{fingerprint(raw)}"
        return cls._assemble({kid: raw}, [], kid)

    @classmethod
    def from_env(cls, name: str = "ENCMEM_KEYS") -> Keyring:
        """Read ``kid:key`` pairs (primary first, separated by commas) or one bare key."""
        value = os.environ.get(name)
        if not value or not value.strip():
            raise InvalidKeyError(
                f"environment variable {name} is not set; put 'kid:key' pairs there "
                "(primary first, comma-separated) or one key from `encmem keygen`"
            )
        return cls.parse(value)

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Parse ``kid:key,kid:key`` (primary first) or one bare key."""
        return cls(split_spec(text))

    def with_primary(self, key: KeyInput, kid: str | None = None) -> Keyring:
        """A new keyring with ``key`` added as primary and every current key kept for reading."""
        raw, sdk_raw = parse_key(key)
        new_kid = check_kid(kid) if kid is not None else fingerprint(raw)
        material = {new_kid: raw, **{k: v for k, v in self._material.items() if k != new_kid}}
        sdk = self._sdk + ([sdk_raw] if sdk_raw else [])
        return Keyring._assemble(material, sdk, new_kid)

    @property
    def primary_kid(self) -> str:
        """The key id new items are sealed under."""
        return self._primary

    @property
    def kids(self) -> tuple[str, ...]:
        """Every key id this keyring can open, primary first."""
        return (self._primary, *(kid for kid in self._material if kid != self._primary))

    def __contains__(self, kid: object) -> bool:
        return kid in self._material

    def __repr__(self) -> str:
        return f"Keyring(kids={list(self.kids)!r}, primary={self._primary!r})"

    __str__ = __repr__

    def session_key(
        self, kid: str, session_id: str, seed: bytes | None = None
    ) -> FernetKey | None:
        """The key of ``session_id`` under master key ``kid``; None for an unknown kid.

        With a ``seed`` (the session's random 32 bytes, kept in a key store) the seed is
        HKDF's salt: destroying the seed makes every copy of the session's items
        undecryptable, whoever holds the master key.
        """
        label = _V2_INFO if seed is None else _SHREDDABLE_INFO
        return self._fernet_key(kid, session_id, seed, label, seed or b"")

    def anchor_key(self, kid: str, session_id: str) -> bytes | None:
        """The HMAC key of ``session_id``'s history anchors under ``kid`` (None: unknown)."""
        material = self._material.get(kid)
        if material is None:
            return None
        return _hkdf(material, None, _ANCHOR_INFO + _bound(kid, session_id))

    def seed_key(self, kid: str, session_id: str) -> FernetKey | None:
        """The key that seals ``session_id``'s seed in a key store (None for an unknown kid)."""
        # A seed is 32 bytes: b"seed" never names one in the cache.
        return self._fernet_key(kid, session_id, None, _SEED_INFO, b"seed")

    def _fernet_key(
        self, kid: str, session_id: str, salt: bytes | None, label: bytes, variant: bytes
    ) -> FernetKey | None:
        """A derived key of ``session_id`` under ``kid``, cached by (kid, session, variant)."""
        cache_key = (kid, session_id, variant)
        key = _cached(self._cache, cache_key)
        if key is not None:
            return key
        material = self._material.get(kid)
        if material is None:
            return None
        derived = _hkdf(material, salt, label + _bound(kid, session_id))
        return _remember(self._cache, cache_key, FernetKey(derived))

    def session_fernet(self, kid: str, session_id: str) -> Fernet | None:
        """The Fernet that seals ``session_id``'s items under ``kid``; None for an unknown kid."""
        key = self.session_key(kid, session_id)
        return None if key is None else key.fernet

    def sdk_keys(self, session_id: str) -> list[FernetKey]:
        """The keys the Agents SDK would use for ``session_id``, one per candidate master key."""
        keys = _cached(self._sdk_cache, session_id)
        if keys is None:
            salt = session_id.encode("utf-8")
            keys = [FernetKey(_hkdf(material, salt, _SDK_INFO)) for material in self._sdk]
            keys = _remember(self._sdk_cache, session_id, keys)
        return keys


def as_keyring(value: KeyInput | Keyring) -> Keyring:
    """Accept what ``EncryptedSession(encryption_key=...)`` accepts and return a Keyring."""
    if isinstance(value, Keyring):
        return value
    if isinstance(value, (str, bytes)):
        return Keyring(value)
    raise InvalidKeyError(
        f"encryption_key must be a str, bytes or Keyring, not {type(value).__name__}"
    )
