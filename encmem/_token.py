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

from cryptography.fernet import Fernet, InvalidToken


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
        try:
            spelled = token.encode("ascii")
            raw = base64.urlsafe_b64decode(spelled)
        except (UnicodeEncodeError, ValueError):
            return None
        # Decoding skips characters outside the alphabet and ignores stray low bits; only
        # the one spelling Fernet writes encodes back to itself.
        if len(raw) < 9 or base64.urlsafe_b64encode(raw) != spelled:
            return None
        try:
            plaintext = self.fernet.decrypt(spelled)
        except InvalidToken:
            return None
        return plaintext, int.from_bytes(raw[1:9], "big")  # authenticated by decrypt
