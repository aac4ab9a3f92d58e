"""Which master keys are accepted, how a keyring spec is read, and key ids.

A master key is 32 bytes from a cryptographically secure random generator, given either as
``encmem keygen`` and ``Fernet.generate_key()`` write it (urlsafe base64, 44 characters with
the ``=``) or as 32 raw bytes. Entropy cannot be measured from a key, so these checks prove
nothing about a key that passes; they refuse the shapes people type or build by hand
(passwords, hex, longer or re-encoded keys, sequences, repeats). Each threshold has a
false-refusal probability for a truly random key, noted beside it: together under 1.2e-11.

Nothing here ever puts a key, or a value given where a key id belongs, into a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from itertools import pairwise

from .errors import InvalidKeyError

KEY_BYTES = 32

# Raw bytes (32 independent uniform bytes).
MIN_DISTINCT_BYTES = 18  # P(fewer distinct values) = 1.1e-13
MIN_DISTINCT_BYTE_STEPS = 18  # of the 31 steps b[i+1]-b[i] mod 256: P(fewer) = 1.3e-12
# Also refused: 32 printable ASCII bytes (text, not random bytes): P = (95/256)**32 = 1.7e-14.

# Key text: its first 42 characters are 42 independent uniform base64 digits (the 43rd carries
# only 4 bits), so the rules look at those.
TEXT_SPAN = 42
MIN_DISTINCT_CHARS = 17  # P(fewer) = 7.7e-12; any hex-only string (16 symbols) is refused
MIN_DISTINCT_CHAR_STEPS = 16  # of the 41 steps between digit values mod 64: P(fewer) = 8.8e-13
MAX_LOWERCASE_CHARS = 39  # of [a-z_-] (28 of 64 symbols): P(40 or more) = 1.2e-12

_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_DIGIT = {c: i for i, c in enumerate(_URLSAFE)}
_LOWERCASE = frozenset("abcdefghijklmnopqrstuvwxyz-_")
_KEY_TEXT_RE = re.compile(r"[A-Za-z0-9_-]{43}=")
_KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

SDK_KID = "hkdf-v1"

HINT = (
    "generate a key with `encmem keygen` or encmem.generate_key() (or pass os.urandom(32)), "
    "or derive one from a passphrase with Keyring.from_passphrase(passphrase, salt=...)"
)


def _steps(values: Sequence[int], modulus: int) -> int:
    """How many different steps there are between neighbours (1 for an arithmetic sequence)."""
    return len({(b - a) % modulus for a, b in pairwise(values)})


def _byte_pattern(raw: bytes) -> str | None:
    """Why 32 bytes cannot have come from a random generator, or None."""
    if len(set(raw)) < MIN_DISTINCT_BYTES:
        return "too few distinct byte values (a repeat or a constant)"
    if _steps(raw, 256) < MIN_DISTINCT_BYTE_STEPS:
        return "a sequence of bytes with regular steps"
    if all(0x20 <= b < 0x7F for b in raw):
        return "only printable characters (text, not random bytes)"
    return None


def _text_pattern(text: str) -> str | None:
    """Why a key text cannot have come from a random generator, or None."""
    head = text[:TEXT_SPAN]
    if len(set(head)) < MIN_DISTINCT_CHARS:
        return "too few distinct characters"
    if _steps([_DIGIT[c] for c in head], 64) < MIN_DISTINCT_CHAR_STEPS:
        return "a run of characters in alphabet order"
    if sum(c in _LOWERCASE for c in head) > MAX_LOWERCASE_CHARS:
        return "lowercase words, not random base64"
    return None


def _patterned(reason: str) -> InvalidKeyError:
    return InvalidKeyError(
        f"the key has the form of a generated key but {reason}, which a random key does not "
        f"have; {HINT}"
    )


def _key_text_bytes(text: str) -> bytes:
    """The 32 bytes of a key text in the form ``Fernet.generate_key()`` writes."""
    stripped = text.strip()
    if not stripped:
        raise InvalidKeyError(f"the encryption key is empty; {HINT}")
    if not _KEY_TEXT_RE.fullmatch(stripped):
        raise InvalidKeyError(
            f"the key ({len(stripped)} characters) is not in the form `encmem keygen` writes: "
            "44 characters of urlsafe base64 ending in '=' (32 bytes). Passwords, hex keys "
            f"and longer keys are refused; {HINT}"
        )
    raw = base64.urlsafe_b64decode(stripped)
    if base64.urlsafe_b64encode(raw).decode("ascii") != stripped:
        raise _patterned("its last character is not one a generated key can end with")
    reason = _text_pattern(stripped) or _byte_pattern(raw)
    if reason is not None:
        raise _patterned(reason)
    return raw


def sdk_material(text: str) -> bytes:
    """The bytes the Agents SDK feeds to HKDF for this key string (for reading v1 items)."""
    try:
        raw = base64.urlsafe_b64decode(text)
        if len(raw) == 32:
            return raw
    except (binascii.Error, ValueError):
        pass
    return text.encode("utf-8")


def parse_key(value: object) -> tuple[bytes, bytes | None]:
    """Return (material for encmem's derivation, material the SDK would derive from).

    Accepts a key text as ``encmem keygen`` / ``Fernet.generate_key()`` write it (str or its
    ASCII bytes, surrounding whitespace ignored) or exactly 32 raw bytes; refuses anything
    else, and those forms too when they carry a pattern, with a message naming the fix.
    """
    if isinstance(value, bytes):
        if len(value) == KEY_BYTES:
            reason = _byte_pattern(value)
            if reason is not None:
                raise _patterned(reason)
            return value, None
        text = value.decode("ascii") if value.isascii() else None
        if text is None:
            raise InvalidKeyError(
                f"a raw key must be exactly {KEY_BYTES} bytes (this one has {len(value)}); {HINT}"
            )
        value = text
    if not isinstance(value, str):
        raise InvalidKeyError(f"a key must be str or bytes, not {type(value).__name__}; {HINT}")
    return _key_text_bytes(value), sdk_material(value)


def fingerprint(material: bytes) -> str:
    """A short public id for a key, so items sealed under different keys can be told apart."""
    digest = hmac.new(material, b"encmem.key-id", hashlib.sha256).hexdigest()
    return "k" + digest[:10]


def _looks_random(text: str) -> bool:
    classes = sum(
        (
            any(c.islower() for c in text),
            any(c.isupper() for c in text),
            any(c.isdigit() for c in text),
            any(c in "-_+/=" for c in text),
        )
    )
    return len(set(text)) >= 16 and classes >= 2


def _looks_like_key(text: str) -> bool:
    """Whether an id could be key material in any spelling in use (hex, base64, unpadded)."""
    if len(text) >= 2 * KEY_BYTES and re.fullmatch(r"[0-9a-fA-F]+", text):
        return True
    return (
        len(text) >= 43
        and re.fullmatch(r"[A-Za-z0-9_+/-]+={0,2}", text) is not None
        and _looks_random(text)
    )


def check_kid(kid: object, *, entry: int | None = None) -> str:
    """Validate a key id: 1-64 characters of letters, digits, '.', '_' and '-'.

    A rejected value is never echoed: a key pasted where its id belongs must not end up in
    an error message or a log.
    """
    where = f"entry {entry}: " if entry is not None else ""
    if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
        raise InvalidKeyError(
            f"{where}a key id must be 1-64 characters of letters, digits, '.', '_' or '-' "
            "(the value given is not repeated here)"
        )
    if kid == SDK_KID:
        raise InvalidKeyError(f"{where}the key id {SDK_KID!r} is reserved for the Agents SDK")
    if len(kid) >= 40 and _looks_like_key(kid):
        raise InvalidKeyError(
            f"{where}that key id looks like a key; a key id is a short public label such as "
            "'2026-11' (the value given is not repeated here)"
        )
    return kid


def split_spec(text: str) -> str | dict[str, str]:
    """``kid:key,kid:key`` (primary first) as a dict, or one bare key as it is."""
    parts = [part for part in re.split(r"[,\s]+", text.strip()) if part]
    if len(parts) == 1 and ":" not in parts[0]:
        return parts[0]
    pairs: dict[str, str] = {}
    entries: dict[str, int] = {}
    for position, part in enumerate(parts, start=1):
        kid, sep, key = part.partition(":")
        if not sep or not kid or not key:
            raise InvalidKeyError(
                f"entry {position} is not of the form kid:key; write 'kid:key' pairs "
                "separated by commas, primary first"
            )
        check_kid(kid, entry=position)
        if kid in entries:
            raise InvalidKeyError(
                f"entries {entries[kid]} and {position} have the same key id; give each key "
                "its own id"
            )
        entries[kid] = position
        pairs[kid] = key
    return pairs
