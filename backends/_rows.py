"""Decoding stored (id, JSON text) rows, shared by the SQL backends.

A row that is not one JSON object with unique keys is never dropped quietly: readers that
return plain items raise :class:`~encmem.errors.CorruptRowError` naming the row, and the
addressed reads hand it on as a :class:`~encmem._items.CorruptRow` for the decorator to
refuse or, when told to, skip with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from encmem._exact_json import copy_json
from encmem._items import CorruptRow, Item, decode_stored
from encmem._protocol import StoredItem, StoredText
from encmem.errors import CorruptRowError


def decode_rows(rows: Sequence[Any]) -> list[StoredItem]:
    """Newest-first (id, json) rows in, oldest-first stored items out."""
    return [StoredItem(int(row_id), decode_stored(data)) for row_id, data in reversed(rows)]


def text_rows(rows: Sequence[Any]) -> list[StoredText]:
    """Newest-first (id, json) rows in, oldest-first stored texts out (left undecoded)."""
    return [StoredText(int(row_id), data) for row_id, data in reversed(rows)]


Decode = Callable[[Sequence[Any]], list[Any]]
"""How a query hands on its (id, json) rows: :func:`decode_rows` or :func:`text_rows`."""

KEPT_ITEMS = 4096
"""Items a plain session object keeps decoded, at most (oldest out first)."""


class KnownItems:
    """Items a plain session object decoded before, by storage id and exact stored text: the
    same row read again is copied, not parsed again (each caller gets its own copy)."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[int, tuple[str | bytes, Item]] = {}

    def items(self, session_id: str, rows: Sequence[StoredText]) -> list[Item]:
        """The items of ``rows`` (oldest first); CorruptRowError at the first that holds none."""
        known = self._rows
        found: list[Item] = []
        for row_id, text in rows:
            kept = known.get(row_id)
            if kept is None or kept[0] != text:
                kept = known[row_id] = (text, plain_item(session_id, row_id, decode_stored(text)))
                if len(known) > KEPT_ITEMS:
                    del known[next(iter(known))]  # the oldest entry
            found.append(copy_json(kept[1]))
        return found
"""How a query hands on its (id, json) rows: :func:`decode_rows` or :func:`text_rows`."""


def corrupt_row_error(session_id: str, row_id: int, row: CorruptRow) -> CorruptRowError:
    """The error for a row that holds no item: where it is and why, never its content."""
    return CorruptRowError(
        f"stored row {row_id} of session {session_id!r} cannot be read ({row.reason}); "
        "it was left in place: run `encmem verify` to list such rows, then delete or "
        "restore them",
        session_id=session_id,
        item_id=row_id,
    )


def plain_item(session_id: str, row_id: int, value: Item | CorruptRow) -> Item:
    """The item of a row, or CorruptRowError when the row holds none."""
    if isinstance(value, CorruptRow):
        raise corrupt_row_error(session_id, row_id, value)
    return value


def plain_items(session_id: str, stored: Iterable[StoredItem]) -> list[Item]:
    """The items of stored rows, in order; CorruptRowError at the first row that holds none."""
    return [plain_item(session_id, row_id, value) for row_id, value in stored]
