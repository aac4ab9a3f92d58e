"""Stored rows a reader opened before, known by their storage id and exact stored text.

A session read on every turn returns the same rows again and again. A row whose stored text
is, byte for byte, one that was decoded, authenticated and decrypted before under the same
id is the same envelope, so it needs neither: the caller gets a fresh copy of the item that
was opened then. Its place in the history is still checked on every read, like any other
row's. What is kept is bounded (the session's ``plaintext_cache``, oldest out first).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._envelope import Opened, Opener
from ._history import Entry
from ._items import CorruptRow, Item, decode_stored
from ._protocol import StoredText


class Decoded(NamedTuple):
    """A stored row seen for the first time: decoded, with the text it was decoded from."""

    id: int
    item: Item | CorruptRow
    text: str | bytes


class Kept(NamedTuple):
    """A stored row opened before: its text, and its entry for the history check with what
    was opened from it (never handed out itself: readers hand out copies)."""

    text: str | bytes
    pair: tuple[Entry, Opened]

    @property
    def id(self) -> int:
        """The row's storage id."""
        return self.pair[0].item_id or 0


class KnownRows:
    """Storage id -> the row as it was opened before."""

    __slots__ = ("_rows", "_size", "opener")

    def __init__(self, opener: Opener, size: int) -> None:
        self.opener = opener
        self._size = size
        self._rows: dict[int, Kept] = {}

    def sort(self, rows: list[Any]) -> tuple[list[Any], bool]:
        """``rows`` with every stored text opened before as :class:`Kept`, and every other
        decoded (so that the seeds its items name can be looked up before it is opened);
        and whether any row is not :class:`Kept`."""
        known = self._rows
        out: list[Any] = []
        others = False
        for row in rows:
            if type(row) is StoredText:
                kept = known.get(row.id)
                if kept is not None and kept.text == row.text:
                    out.append(kept)
                    continue
                row = Decoded(row.id, decode_stored(row.text), row.text)
            out.append(row)
            others = True
        return out, others

    def open(self, row: Decoded, remember: bool) -> Opened:
        """Open a row seen for the first time, and keep it when ``remember`` (what it
        returns is then kept too: the caller must copy items before handing them out)."""
        opened = self.opener.open(row.item, remember=False)
        if remember and self._size:
            self._rows[row.id] = Kept(row.text, (Entry(row.id, opened.link), opened))
            if len(self._rows) > self._size:
                del self._rows[next(iter(self._rows))]  # the oldest entry
        return opened

    @property
    def size(self) -> int:
        """How many rows are kept at most."""
        return self._size

    def forget(self, item_id: int) -> None:
        """Drop what was kept of a row that left the store."""
        self._rows.pop(item_id, None)
