"""Fernet tokens, made and opened by :class:`cryptography.fernet.Fernet` and nothing else.

A :class:`FernetKey` holds one derived 32-byte key and the ``Fernet`` object built from it, so
a session builds its ``Fernet`` once rather than per item. Sealing is ``encrypt_at_time``;
opening is ``decrypt``, which checks the HMAC before it decrypts. The seal time is read from
the token only after ``decrypt`` has authenticated the whole token.

Tokens are also held to the one spelling Fernet writes (urlsafe base64 with its padding):
``Fernet.decrypt`` skips characters outside the alphabet, so without this check two
different stored strings could open to the same item.
"""

from __future__ import annotations

import base64
import string

from cryptography.fernet import Fernet, InvalidToken

_ALPHABET = (string.ascii_letters + string.digits + "-_").encode("ascii")
_LAST_OF_ONE_BYTE = frozenset("AQgw")
"""Final characters (before ``==``) whose four unused low bits are zero."""
_LAST_OF_TWO_BYTES = frozenset("AEIMQUYcgkosw048")
"""Final characters (before ``=``) whose two unused low bits are zero."""
_HEADER_BYTES = 9
"""A token's version byte and seal time."""
_HEADER_CHARS = 12
"""The base64 characters that hold them."""


def canonical(token: str) -> bool:
    """Whether ``token`` is spelled as urlsafe base64 encoding writes it: only the alphabet,
    whole 4-character groups, padding at the end only, no stray bits in the last character,
    and a header's bytes at least. Such a string decodes and encodes back to itself; this
    checks that without decoding it."""
    size = len(token)
    if size % 4 or not token.isascii():
        return False
    body = token.rstrip("=")
    padding = size - len(body)
    if padding > 2 or size // 4 * 3 - padding < _HEADER_BYTES:
        return False
    if body.encode("ascii").translate(None, _ALPHABET):  # what is left is outside it
        return False
    if padding == 0:
        return True
    return body[-1] in (_LAST_OF_ONE_BYTE if padding == 2 else _LAST_OF_TWO_BYTES)


class FernetKey:
    """One session key: seals and opens Fernet tokens through ``cryptography``'s Fernet."""

    __slots__ = ("fernet",)

    def __init__(self, raw32: bytes) -> None:
        if len(raw32) != 32:
            raise ValueError("a Fernet key has 32 bytes")
        self.fernet = Fernet(base64.urlsafe_b64encode(raw32))

    def __repr__(self) -> str:
        return "FernetKey(<hidden>)"

    def seal(self, data: bytes, sealed_at: int) -> str:
        """A Fernet token of ``data`` stamped ``sealed_at`` (seconds since the epoch)."""
        return self.fernet.encrypt_at_time(data, sealed_at).decode("ascii")

    def open(self, token: str) -> tuple[bytes, int] | None:
        """(plaintext, seal time) if the token is authentic under this key, else None."""
        # Decoding skips characters outside the alphabet and ignores stray low bits: only
        # the one spelling Fernet writes is let through to it.
        if not canonical(token):
            return None
        spelled = token.encode("ascii")
        try:
            plaintext = self.fernet.decrypt(spelled)
        except InvalidToken:
            return None
        header = base64.urlsafe_b64decode(spelled[:_HEADER_CHARS])
        return plaintext, int.from_bytes(header[1:9], "big")  # authenticated by decrypt
