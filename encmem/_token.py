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
import re

from cryptography.fernet import Fernet, InvalidToken

_TOKEN_SPELLING = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def _seal_time(token: str) -> int:
    """The seal time of a token that Fernet has already authenticated."""
    header = base64.urlsafe_b64decode(token[:12])  # version byte, then 8 bytes of time
    return int.from_bytes(header[1:9], "big")


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
        if len(token) % 4 or not _TOKEN_SPELLING.fullmatch(token):
            return None
        if base64.urlsafe_b64encode(base64.urlsafe_b64decode(token)) != token.encode("ascii"):
            return None  # unused low bits set: another spelling of the same bytes
        try:
            plaintext = self.fernet.decrypt(token)
        except InvalidToken:
            return None
        return plaintext, _seal_time(token)
