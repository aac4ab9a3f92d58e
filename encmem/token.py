"""A Fernet key that opens its tokens without per-token setup.

Tokens are made by :class:`cryptography.fernet.Fernet` and are standard Fernet: version byte
0x80, 8-byte big-endian seal time, 16-byte IV, AES-128-CBC ciphertext with PKCS7 padding, and
an HMAC-SHA256 over all of that, in urlsafe base64. Opening follows the same spec but keeps
one AES-CBC stream per key instead of building a context per token (the costliest step of
``Fernet.decrypt``). The HMAC is checked, in constant time, before anything is decrypted, so
a forged or edited token never reaches the padding check. Base64 is decoded strictly: only
characters of the alphabet, with the padding Fernet writes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_VERSION = 0x80
_HEADER = 1 + 8 + 16  # version, time, IV
_MAC = 32
_BLOCK = 16


def _b64decode(token: str) -> bytes | None:
    try:
        raw = token.encode("ascii").translate(_URLSAFE_TO_STANDARD)
        return binascii.a2b_base64(raw, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    except TypeError:  # Python 3.10: no strict mode; validate the alphabet instead
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None


class FernetKey:
    """One 32-byte Fernet key: seals through ``Fernet``, opens through a reused AES context."""

    __slots__ = ("_lock", "_signing", "_stream", "fernet")

    def __init__(self, raw32: bytes) -> None:
        if len(raw32) != 32:
            raise ValueError("a Fernet key has 32 bytes")
        self.fernet = Fernet(base64.urlsafe_b64encode(raw32))
        self._signing = raw32[:16]
        # One CBC stream for every token: fed "IV || ciphertext", its first output block is
        # chained to the previous token and thrown away; the rest is chained to this IV.
        self._stream = Cipher(algorithms.AES(raw32[16:]), modes.CBC(bytes(_BLOCK))).decryptor()
        self._lock = threading.Lock()  # keyrings, and so keys, may be shared across threads

    def open(self, token: str) -> tuple[bytes, int] | None:
        """(plaintext, seal time) if the token is authentic under this key, else None."""
        data = _b64decode(token)
        if data is None or len(data) < _HEADER + _BLOCK + _MAC or data[0] != _VERSION:
            return None
        signed, mac = data[:-_MAC], data[-_MAC:]
        if not hmac.compare_digest(hmac.digest(self._signing, signed, "sha256"), mac):
            return None
        chained = signed[9:]  # the IV, then the ciphertext
        if len(chained) % _BLOCK:
            return None
        with self._lock:
            padded = self._stream.update(chained)[_BLOCK:]
        pad = padded[-1]
        if not 1 <= pad <= _BLOCK or padded[-pad:] != bytes((pad,)) * pad:
            return None
        return padded[:-pad], int.from_bytes(data[1:9], "big")
