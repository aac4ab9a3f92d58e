"""Exceptions raised by encmem.

Every error message says what went wrong and what to do next. None of them ever
contains key material or message content.
"""

from __future__ import annotations


class EncmemError(Exception):
    """Base class of every error encmem raises on purpose."""


class InvalidKeyError(EncmemError, ValueError):
    """A key or keyring was refused (too short, password-like, malformed, unknown id)."""


class InvalidItemError(EncmemError, TypeError):
    """An item is not a JSON object that can be stored and read back unchanged."""


class DecryptionError(EncmemError):
    """A stored item could not be authenticated or decrypted.

    The item is left in storage untouched; ``session_id`` and ``position`` say where it is.
    ``position`` counts from the newest item of the session (1 is the newest) when it is
    known; ``item_id`` is the backend's storage id when the backend exposes one.
    """

    def __init__(
        self,
        message: str,
        *,
        session_id: str | None = None,
        position: int | None = None,
        item_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.position = position
        self.item_id = item_id


class UnknownKeyIdError(DecryptionError):
    """An item was sealed under a key id that the keyring does not hold."""


class TamperedItemError(DecryptionError):
    """An item's token or its clear metadata failed authentication."""


class PlaintextItemError(DecryptionError):
    """A plaintext item was found where an encrypted envelope was expected."""


class CorruptRowError(DecryptionError):
    """A stored row is not one JSON object with unique keys, so no item can be read from it."""


class UnsupportedOperation(EncmemError, NotImplementedError):
    """The wrapped session lacks a capability the operation needs."""


class SessionClosedError(EncmemError, RuntimeError):
    """The session was used after ``close()``."""


class MissingTablesError(EncmemError, RuntimeError):
    """The database lacks the tables the session needs and was told not to create them."""


class NotASessionStoreError(EncmemError, ValueError):
    """A path or URL does not point at a database holding session tables."""
