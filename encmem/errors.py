"""Exceptions raised by encmem, all in one tree::

    EncmemError
    ├── InvalidKeyError (ValueError)          a key or keyring was refused
    ├── InvalidItemError (TypeError)          an item cannot be stored as JSON
    │   └── ItemTooLargeError                 an item is over max_item_bytes
    ├── DecryptionError                       a stored item cannot be read
    │   ├── UnknownKeyIdError                 sealed under a key id the keyring lacks
    │   ├── TamperedItemError                 failed authentication
    │   │   ├── HistoryTamperedError          items reordered, replayed, cut or moved
    │   │   └── SessionErasedError            sealed under a seed no longer kept
    │   ├── PlaintextItemError                plaintext where ciphertext belongs
    │   ├── CorruptRowError                   the stored row holds no JSON object
    │   └── UnrestoredItemsError              pop_item could not put items back
    ├── UnsupportedOperation (NotImplementedError)   a capability is missing
    ├── SessionClosedError (RuntimeError)     used after close()
    ├── ScanBudgetExceeded (RuntimeError)     max_scan_items ran out
    ├── BranchError (ValueError)              a branch operation was refused
    ├── StoreError                            a database cannot be used as a session store
    │   ├── MissingTablesError (RuntimeError) tables missing, create_tables=False
    │   ├── NotASessionStoreError (ValueError)   no session tables there
    │   └── ResiduePendingError               erased, but old pages remain in the WAL
    └── CommandError                          a failure of the ``encmem`` command

Every message says what went wrong and what to do next, and never contains key material or
message content. Failures carry structured fields (``reason``, ``session_id``, ``items``...)
so that callers never parse message text.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, TypeVar

_E = TypeVar("_E", bound="DecryptionError")


class EncmemError(Exception):
    """Base class of every error encmem raises on purpose."""


class InvalidKeyError(EncmemError, ValueError):
    """A key or keyring was refused (too short, password-like, malformed, unknown id)."""


class InvalidItemError(EncmemError, TypeError):
    """An item is not a JSON object that can be stored and read back unchanged."""


class ItemTooLargeError(InvalidItemError):
    """An item's JSON is over the session's ``max_item_bytes``; nothing was written.

    ``index`` is the item's place in the batch, ``size`` its JSON size in UTF-8 bytes and
    ``limit`` the session's ``max_item_bytes``.
    """

    def __init__(self, index: int, size: int, limit: int) -> None:
        super().__init__(
            f"item {index} is {size:,} bytes as JSON, over max_item_bytes={limit:,}; keep "
            "large content elsewhere and store a reference to it, or raise max_item_bytes "
            "(None for no limit)"
        )
        self.index = index
        self.size = size
        self.limit = limit


class DecryptionError(EncmemError):
    """A stored item could not be authenticated or decrypted.

    The item is left in storage untouched. ``reason`` says what is wrong with it;
    ``session_id`` and ``position`` say where it is: ``position`` counts from the newest item
    (1 is the newest) when known, and ``item_id`` is the backend's storage id when the
    backend exposes one.
    """

    def __init__(
        self,
        reason: str,
        *,
        session_id: str | None = None,
        position: int | None = None,
        item_id: int | None = None,
    ) -> None:
        self.reason = reason
        self.session_id = session_id
        self.position = position
        self.item_id = item_id
        super().__init__(self._message())

    @property
    def where(self) -> str:
        """The item's place, for messages and logs ('' when unknown)."""
        if self.session_id is None:
            return ""
        where = f"session {self.session_id!r}"
        if self.position is not None:
            where += f", item {self.position} from the newest"
        if self.item_id is not None:
            where += f" (storage id {self.item_id})"
        return where

    remedy = "read it with the key it was sealed under"
    """What to do about such an item, for the message."""

    def _message(self) -> str:
        if self.session_id is None:
            return self.reason
        return (
            f"{self.reason} [{self.where}]. The item was left in storage; {self.remedy}, or "
            "pass on_invalid='skip' to read past it"
        )

    def located(
        self: _E, session_id: str, position: int | None = None, item_id: int | None = None
    ) -> _E:
        """A copy of this error that names where the item is."""
        located = copy.copy(self)
        located.session_id, located.position, located.item_id = session_id, position, item_id
        located.args = (located._message(),)
        return located

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.__dict__.copy())


def _rebuild(cls: type[DecryptionError], state: dict[str, Any]) -> DecryptionError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    error.args = (error._message(),)
    return error


class UnknownKeyIdError(DecryptionError):
    """An item was sealed under a key id that the keyring does not hold (``kid``)."""

    def __init__(self, reason: str, *, kid: str | None = None, **where: Any) -> None:
        self.kid = kid
        super().__init__(reason, **where)


class TamperedItemError(DecryptionError):
    """An item's token or its clear metadata failed authentication.

    ``kid`` is the key id the token claims when it is a well-formed one (None otherwise).
    """

    remedy = (
        "read it with the key it was sealed under; if that key was given, the item was "
        "altered or moved"
    )

    def __init__(self, reason: str, *, kid: str | None = None, **where: Any) -> None:
        self.kid = kid
        super().__init__(reason, **where)


class HistoryTamperedError(TamperedItemError):
    """The items authenticate one by one, but not as this branch's history.

    ``kind`` names what the stored history shows: ``reordered``, ``duplicated``, ``missing``,
    ``resurrected``, ``moved``, ``unchained``, ``forged structure`` or ``head mismatch``;
    ``branch_id`` is the branch read (None for sessions without branches). ``position`` and
    ``item_id`` locate the first item that does not fit.
    """

    KINDS = (
        "reordered",
        "duplicated",
        "missing",
        "resurrected",
        "moved",
        "unchained",
        "forged structure",
        "head mismatch",
    )

    remedy = "run `encmem verify` to list every finding, then restore a backup you trust"

    def __init__(
        self, reason: str, *, kind: str, branch_id: str | None = None, **where: Any
    ) -> None:
        self.kind = kind
        self.branch_id = branch_id
        super().__init__(reason, **where)

    @property
    def where(self) -> str:
        where = super().where
        if where and self.branch_id is not None:
            where += f", branch {self.branch_id!r}"
        return where


class SessionErasedError(TamperedItemError):
    """An item was sealed under a seed its session's key store does not hold: the session
    was erased (crypto-shredded) and this is a leftover or restored copy that nothing can
    decrypt, or the item was moved in from another session."""

    remedy = (
        "nothing can decrypt it any more; delete the copy (if the session was not erased, "
        "restore the key store from a backup)"
    )


class PlaintextItemError(DecryptionError):
    """A plaintext item was found where an encrypted envelope was expected."""

    remedy = "seal the session's plaintext items with encrypt_existing() (encmem encrypt)"


class CorruptRowError(DecryptionError):
    """A stored row is not one JSON object with unique keys, so no item can be read from it."""

    remedy = "repair or delete the row by its storage id"


class UnrestoredItemsError(DecryptionError):
    """``pop_item`` took unreadable items off a session and could not put them back.

    ``items`` holds them, exactly as they were stored, so that nothing is lost.
    """

    def __init__(self, reason: str, *, items: Sequence[Any] = (), **where: Any) -> None:
        self.items = list(items)
        super().__init__(reason, **where)

    def _message(self) -> str:
        return self.reason


class UnsupportedOperation(EncmemError, NotImplementedError):
    """The wrapped session lacks the capability (``capability``) an operation needs."""

    def __init__(self, message: str, *, capability: str | None = None) -> None:
        super().__init__(message)
        self.capability = capability


class SessionClosedError(EncmemError, RuntimeError):
    """The session was used after ``close()``."""


class ScanBudgetExceeded(EncmemError, RuntimeError):
    """``max_scan_items`` ran out before the requested number of readable items was found."""

    def __init__(self, message: str, *, scanned: int, budget: int) -> None:
        super().__init__(message)
        self.scanned = scanned
        self.budget = budget


class BranchError(EncmemError, ValueError):
    """A branch operation was refused (unknown, deleted, reserved or malformed branch)."""

    def __init__(self, message: str, *, branch_id: str | None = None) -> None:
        super().__init__(message)
        self.branch_id = branch_id


class StoreError(EncmemError):
    """A database cannot be used as a session store, or a store operation fell short."""


class MissingTablesError(StoreError, RuntimeError):
    """The database lacks the tables (``tables``) the session needs and may not create them."""

    def __init__(self, message: str, *, tables: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.tables = tuple(tables)


class NotASessionStoreError(StoreError, ValueError):
    """A path or URL does not point at a database holding session tables."""


class ResiduePendingError(StoreError):
    """An erase deleted the session's rows, but copies of their old pages remain.

    Another connection held a read transaction, so the WAL file could not be emptied: until
    it is, it holds the pages as they were before the delete. Erasing again once the other
    readers have finished removes them (it deletes nothing more). ``rows_removed`` counts
    what the erase deleted.
    """

    def __init__(self, session_id: str, rows_removed: int) -> None:
        super().__init__(
            f"{rows_removed} rows of the session were deleted, but another connection holds a "
            "read transaction on the store, so its WAL file still holds copies of their pages "
            "from before the delete; once the other readers have finished, call erase_session "
            "again or run `encmem erase --finish` (it deletes nothing more and empties the WAL)"
        )
        self.session_id = session_id
        self.rows_removed = rows_removed


class CommandError(EncmemError):
    """A failure of the ``encmem`` command a person can act on, with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
