"""Master keys, keyrings and the per-session key derivation.

A :class:`Keyring` holds one or more master keys by key id (``kid``); the primary one seals
new items, all of them open old ones. Each session gets its own Fernet key, derived with
HKDF-SHA256 from a master key, the format version, the kid and the session id, so a token
copied into another session or relabelled with another kid fails authentication.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Union

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import InvalidKeyError
from .token import FernetKey

KeyInput = Union[str, bytes]  # noqa: UP007 - a runtime alias, evaluated on Python 3.10 too

SDK_KID = "hkdf-v1"
"""The constant key id the Agents SDK's EncryptedSession writes; reserved for reading it."""

_SDK_INFO = b"agents.session-store.hkdf.v1"
_V2_INFO = b"encmem.session-key.v2"
_KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MIN_KEY_BYTES = 32
_CACHE_SIZE = 4096

_PASSWORD_HINT = (
    "a master key must be at least 32 random bytes. Generate one with "
    "encmem.generate_key() or `encmem keygen`, or derive one from a passphrase with "
    "Keyring.from_passphrase(passphrase, salt=...)"
)


def generate_key() -> str:
    """Return a new random master key (a Fernet key: 32 bytes, urlsafe base64)."""
    return Fernet.generate_key().decode("ascii")


def _looks_random(text: str) -> bool:
    """Reject human-made strings that merely use a base64 alphabet."""
    classes = sum(
        (
            any(c.islower() for c in text),
            any(c.isupper() for c in text),
            any(c.isdigit() for c in text),
            any(c in "-_+/=" for c in text),
        )
    )
    return len(set(text)) >= 16 and classes >= 2


def _decode_text_key(text: str) -> bytes | None:
    stripped = text.strip()
    if len(stripped) >= 2 * _MIN_KEY_BYTES and re.fullmatch(r"[0-9a-fA-F]+", stripped):
        if len(stripped) % 2 == 0 and len(set(stripped.lower())) >= 10:
            return bytes.fromhex(stripped)
        return None
    if len(stripped) < 43 or not re.fullmatch(r"[A-Za-z0-9_+/-]+={0,2}", stripped):
        return None
    if not _looks_random(stripped):
        return None
    padded = stripped + "=" * (-len(stripped) % 4)
    alphabet_fixed = padded.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(alphabet_fixed, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) >= _MIN_KEY_BYTES else None


def _sdk_material(text: str) -> bytes:
    """The bytes the Agents SDK feeds to HKDF for this key string (for reading v1 items)."""
    try:
        raw = base64.urlsafe_b64decode(text)
        if len(raw) == 32:
            return raw
    except (binascii.Error, ValueError):
        pass
    return text.encode("utf-8")


def parse_key(value: KeyInput) -> tuple[bytes, bytes | None]:
    """Return (material for encmem's derivation, material the SDK would derive from).

    Accepts a Fernet key, a base64 or hex string of at least 32 bytes, or at least 32 raw
    bytes. Refuses anything shorter or password-like, with a message naming the fix.
    """
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            text = None
        if text is None or not text.isprintable():
            if len(value) >= _MIN_KEY_BYTES and len(set(value)) >= 16:
                return value, None
            raise InvalidKeyError(
                f"the key has {len(value)} bytes of too little variety; {_PASSWORD_HINT}"
            )
        value = text
    if not isinstance(value, str):
        raise InvalidKeyError(
            f"a key must be str or bytes, not {type(value).__name__}; {_PASSWORD_HINT}"
        )
    if not value:
        raise InvalidKeyError(f"the encryption key is empty; {_PASSWORD_HINT}")
    raw = _decode_text_key(value)
    if raw is None:
        raise InvalidKeyError(
            f"the key ({len(value)} characters) is too short or looks like a password; "
            f"{_PASSWORD_HINT}"
        )
    return raw, _sdk_material(value)


def fingerprint(material: bytes) -> str:
    """A short public id for a key, so items sealed under different keys can be told apart."""
    digest = hmac.new(material, b"encmem.key-id", hashlib.sha256).hexdigest()
    return "k" + digest[:10]


def check_kid(kid: object) -> str:
    """Validate a key id: 1-64 characters of letters, digits, '.', '_' and '-'.

    A rejected value is never echoed: a key pasted where its id belongs must not end up in
    an error message or a log.
    """
    if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
        raise InvalidKeyError(
            "a key id must be 1-64 characters of letters, digits, '.', '_' or '-' "
            "(the value given is not repeated here)"
        )
    if kid == SDK_KID:
        raise InvalidKeyError(f"the key id {SDK_KID!r} is reserved for the Agents SDK's format")
    if len(kid) >= 40 and _decode_text_key(kid) is not None:
        raise InvalidKeyError(
            "that key id looks like a key; a key id is a short public label such as '2026-11' "
            "(the value given is not repeated here)"
        )
    return kid


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
            if sdk_raw is not None:
                sdk.append(sdk_raw)
        elif isinstance(keys, Mapping):
            for kid, value in keys.items():
                raw, sdk_raw = parse_key(value)
                material[check_kid(kid)] = raw
                if sdk_raw is not None:
                    sdk.append(sdk_raw)
        else:
            raise InvalidKeyError(
                f"Keyring takes a key or a mapping of key id to key, not {type(keys).__name__}"
            )
        if not material:
            raise InvalidKeyError("a Keyring needs at least one key; " + _PASSWORD_HINT)
        for extra in sdk_keys:
            if not isinstance(extra, str) or not extra:
                raise InvalidKeyError("sdk_keys must be non-empty strings")
            sdk.append(_sdk_material(extra))
        chosen = primary if primary is not None else next(iter(material))
        if chosen not in material:
            raise InvalidKeyError(
                f"the primary key id is not in the keyring (it holds {sorted(material)}); "
                "name one of those"
            )
        self._material = material
        self._sdk = list(dict.fromkeys(sdk))
        self._primary = chosen
        self._cache: OrderedDict[tuple[str, str], FernetKey] = OrderedDict()
        self._sdk_cache: OrderedDict[str, list[FernetKey]] = OrderedDict()

    @classmethod
    def from_passphrase(
        cls,
        passphrase: str | bytes,
        *,
        salt: str | bytes,
        log2_n: int = 15,
        r: int = 8,
        p: int = 1,
    ) -> Keyring:
        """Derive a master key from a passphrase with scrypt (N=2**log2_n, r, p).

        The parameters are part of the key id (``scrypt.n15.r8.p1.<fingerprint>``) so that
        items sealed under different parameters stay distinguishable. Use a salt of at least
        16 bytes, unique to your deployment, and keep it with your configuration.
        """
        secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
        salt_bytes = salt.encode("utf-8") if isinstance(salt, str) else salt
        if not isinstance(secret, bytes) or len(secret) < 8:
            raise InvalidKeyError("a passphrase must have at least 8 characters")
        if not isinstance(salt_bytes, bytes) or len(salt_bytes) < 16:
            raise InvalidKeyError("the scrypt salt must have at least 16 bytes")
        if not (14 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
            raise InvalidKeyError(
                "scrypt parameters out of range: 14<=log2_n<=22, 1<=r<=32, 1<=p<=16"
            )
        raw = Scrypt(salt=salt_bytes, length=32, n=2**log2_n, r=r, p=p).derive(secret)
        kid = f"scrypt.n{log2_n}.r{r}.p{p}.{fingerprint(raw)}"
        keyring = cls.__new__(cls)
        keyring._material = {kid: raw}
        keyring._sdk = []
        keyring._primary = kid
        keyring._cache = OrderedDict()
        keyring._sdk_cache = OrderedDict()
        return keyring

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
        parts = [part.strip() for part in re.split(r"[,\s]+", text.strip()) if part.strip()]
        if len(parts) == 1 and ":" not in parts[0]:
            return cls(parts[0])
        pairs: dict[str, str] = {}
        for position, part in enumerate(parts, start=1):
            kid, sep, key = part.partition(":")
            if not sep or not kid or not key:
                raise InvalidKeyError(
                    f"entry {position} is not of the form kid:key; write 'kid:key' pairs "
                    "separated by commas, primary first"
                )
            if kid in pairs:
                raise InvalidKeyError(f"key id {kid!r} appears twice")
            pairs[kid] = key
        return cls(pairs)

    def with_primary(self, key: KeyInput, kid: str | None = None) -> Keyring:
        """A new keyring with ``key`` added as primary and every current key kept for reading."""
        raw, sdk_raw = parse_key(key)
        new_kid = check_kid(kid) if kid is not None else fingerprint(raw)
        ring = Keyring.__new__(Keyring)
        ring._material = {new_kid: raw, **{k: v for k, v in self._material.items() if k != new_kid}}
        ring._sdk = list(dict.fromkeys(self._sdk + ([sdk_raw] if sdk_raw else [])))
        ring._primary = new_kid
        ring._cache = OrderedDict()
        ring._sdk_cache = OrderedDict()
        return ring

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

    def session_key(self, kid: str, session_id: str) -> FernetKey | None:
        """The key of ``session_id`` under master key ``kid``; None for an unknown kid."""
        cache_key = (kid, session_id)
        key = self._cache.get(cache_key)
        if key is not None:
            self._cache.move_to_end(cache_key)
            return key
        material = self._material.get(kid)
        if material is None:
            return None
        kid_bytes = kid.encode("ascii")
        info = _V2_INFO + len(kid_bytes).to_bytes(2, "big") + kid_bytes + session_id.encode("utf-8")
        key = FernetKey(_hkdf(material, None, info))
        self._cache[cache_key] = key
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return key

    def session_fernet(self, kid: str, session_id: str) -> Fernet | None:
        """The Fernet that seals ``session_id``'s items under ``kid``; None for an unknown kid."""
        key = self.session_key(kid, session_id)
        return None if key is None else key.fernet

    def sdk_keys(self, session_id: str) -> list[FernetKey]:
        """The keys the Agents SDK would use for ``session_id``, one per candidate master key."""
        keys = self._sdk_cache.get(session_id)
        if keys is None:
            salt = session_id.encode("utf-8")
            keys = [FernetKey(_hkdf(material, salt, _SDK_INFO)) for material in self._sdk]
            self._sdk_cache[session_id] = keys
            if len(self._sdk_cache) > _CACHE_SIZE:
                self._sdk_cache.popitem(last=False)
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
