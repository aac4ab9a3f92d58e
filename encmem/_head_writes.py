"""What a writer hands a backend that keeps history heads: callbacks run inside the backend's
write transaction, and an append sealed before it. The backend treats heads as opaque text."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ._items import CorruptRow, Item

HeadUpdate = Callable[[str | None], str | None]
"""Given a branch's stored head (None when it has none), the head to store in its place
(None: none). Runs inside the backend's write transaction; raising aborts the transaction."""

Newest = Callable[[], "Item | CorruptRow | None"]
"""Reads the newest stored item of the branch being written (None when it is empty)."""

ChainBuild = Callable[[str, str | None, Newest], tuple[list[Item], list[str], str]]
"""``build(branch_id, stored_head, newest)``: the items to append, their JSON texts and the
branch's new head. Runs inside the backend's write transaction, after the head was read
under the writer lock."""


class Presealed(NamedTuple):
    """An append sealed before its transaction, to be stored as it is while the branch's
    head is still ``after`` (and the session's seed the one it was sealed with)."""

    branch: str
    after: str
    items: list[Item]
    texts: list[str]
    head: str


ForkHead = Callable[[str, str, str | None, "Item | CorruptRow"], str | None]
"""``fork(source_branch, new_branch, source_head, first_item_left_out)``: the new branch's
head (None: none), from the source's head and the first item the new branch leaves out."""
