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
import os
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
    """One 32-byte Fernet key, sealing and opening through long-lived AES streams."""

    __slots__ = ("_chain", "_lock", "_sealer", "_signing", "_stream", "fernet")

    def __init__(self, raw32: bytes) -> None:
        if len(raw32) != 32:
            raise ValueError("a Fernet key has 32 bytes")
        self.fernet = Fernet(base64.urlsafe_b64encode(raw32))
        self._signing = raw32[:16]
        # One CBC stream for every token: fed "IV || ciphertext", its first output block is
        # chained to the previous token and thrown away; the rest is chained to this IV.
        self._stream = Cipher(algorithms.AES(raw32[16:]), modes.CBC(bytes(_BLOCK))).decryptor()
        # Sealing uses one CBC encryption stream the same way: the first plaintext block is
        # pre-XORed with the stream's last ciphertext block, so the token chains from its IV.
        self._sealer = Cipher(algorithms.AES(raw32[16:]), modes.CBC(bytes(_BLOCK))).encryptor()
        self._chain = bytes(_BLOCK)
        self._lock = threading.Lock()  # keyrings, and so keys, may be shared across threads

    def seal(self, data: bytes, sealed_at: int) -> str:
        """A Fernet token of ``data`` stamped ``sealed_at``, as Fernet.encrypt_at_time makes."""
        iv = os.urandom(_BLOCK)
        pad = _BLOCK - len(data) % _BLOCK
        padded = data + bytes((pad,)) * pad
        with self._lock:
            first = int.from_bytes(padded[:_BLOCK], "big") ^ int.from_bytes(iv, "big")
            first ^= int.from_bytes(self._chain, "big")
            ciphertext = self._sealer.update(first.to_bytes(_BLOCK, "big") + padded[_BLOCK:])
            self._chain = ciphertext[-_BLOCK:]
        signed = b"\x80" + sealed_at.to_bytes(8, "big") + iv + ciphertext
        mac = hmac.digest(self._signing, signed, "sha256")
        return base64.urlsafe_b64encode(signed + mac).decode("ascii")

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
