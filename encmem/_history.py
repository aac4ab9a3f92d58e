"""Checking a run of opened items against their chain and their branch's head.

Written once over (storage id, link) entries, oldest first, so the decorator's reads, ``pop``
and the command's ``verify`` all judge a history by the same rules and name what they find
with the same words (:attr:`encmem.errors.HistoryTamperedError.KINDS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ._chain import Head, Link
from .errors import HistoryTamperedError

UNREAD = Link(0, "", "")
"""The link of an item that could not be opened (skip mode): no link is checked across it."""


class Entry(NamedTuple):
    """One stored item as the check sees it: its storage id (None if unknown) and its link
    (None for an item sealed before chains, :data:`UNREAD` when it could not be opened)."""

    item_id: int | None
    link: Link | None


class Break(NamedTuple):
    """The first place where a history stops being its branch's chain."""

    kind: str
    at: int
    """Index of the first entry that does not fit (``len(entries)`` for a missing tail)."""
    reason: str

    def error(self, entries: Sequence[Entry], branch: str | None) -> HistoryTamperedError:
        """The error for this break, located by position from the newest and storage id."""
        position = len(entries) - self.at if self.at < len(entries) else None
        item_id = entries[self.at].item_id if self.at < len(entries) else None
        return HistoryTamperedError(
            self.reason, kind=self.kind, branch_id=branch, position=position, item_id=item_id
        )


def _pair_break(prev: Link, link: Link, entries: Sequence[Entry], index: int) -> Break | None:
    """What is wrong with ``link`` following ``prev`` (None when it follows it exactly)."""
    seen = _seqs(entries[:index])
    if link.digest == seen.get(link.seq):
        return Break("duplicated", index, f"item {link.seq} of the chain is stored twice")
    if link.seq in seen:
        return Break(
            "resurrected",
            index,
            f"a second, older item {link.seq} is stored after the chain moved past it "
            "(an item removed earlier was put back)",
        )
    if link.seq <= prev.seq:
        return Break("reordered", index, f"item {link.seq} is stored after item {prev.seq}")
    if link.seq > prev.seq + 1:
        if prev.seq + 1 in _seqs(entries[index + 1 :]):
            return Break(
                "reordered", index, f"item {link.seq} is stored before item {prev.seq + 1}"
            )
        return Break(
            "missing", index, f"items {prev.seq + 1} to {link.seq - 1} are missing before it"
        )
    if link.prev != prev.digest:
        return Break(
            "moved",
            index,
            f"item {link.seq} was not written after the item stored before it (copied from "
            "another branch or an earlier history)",
        )
    return None


def _floor_break(first: Link, floor: int, seqs: set[int], index: int) -> Break | None:
    if first.seq == floor:
        return None
    if floor in seqs:
        return Break("reordered", index, f"item {first.seq} is stored before item {floor}")
    if first.seq < floor:
        return Break("resurrected", index, f"item {first.seq} was purged or cleared and is back")
    return Break("missing", index, f"items {floor} to {first.seq - 1} are missing")


def _head_break(last: Link | None, head: Head, entries: Sequence[Entry]) -> Break | None:
    size = len(entries)
    if last is None:
        if head.empty:
            return None
        return Break("missing", size, f"the head says items up to {head.seq} are stored")
    if last.seq > head.seq:
        first_extra = next(
            i for i, e in enumerate(entries) if e.link is not None and e.link.seq > head.seq
        )
        return Break(
            "resurrected",
            first_extra,
            f"item {last.seq} is stored past the head's item {head.seq} (a popped or cut "
            "item was put back)",
        )
    if last.seq < head.seq:
        return Break(
            "missing", size, f"items {last.seq + 1} to {head.seq} are missing from the end"
        )
    if last.digest != head.link:
        return Break(
            "head mismatch", size - 1, f"item {last.seq} is not the item the head recorded"
        )
    return None


def trusted_from(entries: Sequence[Entry], head: Head) -> int:
    """Index of the oldest entry that links back, unbroken, from the head.

    A hash chain is proven from its authenticated end: the newest item must be the one the
    head records, and each item before it the one its successor names. Checked from the
    front, an authentic item of another lineage (another branch's, or an older copy of a
    place that was popped and written again) would pass until the item after it. Items
    sealed before chains count once the walk reaches the floor, the chain's first item.
    """
    at = len(entries)
    if head.empty:
        while at > 0 and entries[at - 1].link is None and head.legacy:
            at -= 1
        return at
    seq, digest = head.seq, head.link
    while at > 0:
        link = entries[at - 1].link
        if link is None or link is UNREAD or (link.seq, link.digest) != (seq, digest):
            return at
        at -= 1
        if link.seq == head.floor:
            while at > 0 and entries[at - 1].link is None and head.legacy:
                at -= 1
            return at
        seq, digest = link.seq - 1, link.prev
    return at


def find_break(
    entries: Sequence[Entry],
    head: Head | None,
    *,
    complete: bool,
    headed: bool,
    head_expected: bool = False,
) -> Break | None:
    """The first break in ``entries`` (oldest first), or None when they are a sound chain.

    ``complete``: the entries are the whole branch, so the first must stand at the floor and
    sealed-before-chains items may only come first (and only where the head allows them).
    ``headed``: the store keeps heads, so chained items without one mean the head was
    removed; ``head_expected``: other branches of the session have heads, so this one must.
    """
    if head is None and headed and head_expected:
        return Break(
            "head mismatch", max(len(entries) - 1, 0), "the branch's history head is missing"
        )
    prev: Link | None = None
    chained = False
    for index, (_, link) in enumerate(entries):
        if link is None:
            if head is not None and not head.legacy:
                return Break(
                    "unchained",
                    index,
                    "an item sealed before chains, in a history that began chained",
                )
            if chained and complete:
                return Break(
                    "unchained", index, "an item without a place in the chain follows chained ones"
                )
            continue
        if link is UNREAD:
            prev = None
            continue
        if prev is not None:
            if link.seq != prev.seq + 1 or link.prev != prev.digest:
                return _pair_break(prev, link, entries, index)
        elif not chained and complete and head is not None:
            seqs = {e.link.seq for e in entries if e.link is not None}
            found = _floor_break(link, head.floor, seqs, index)
            if found is not None:
                return found
        chained = True
        prev = link
    if head is None:
        if headed and chained:
            return Break("head mismatch", len(entries) - 1, "the branch's history head is missing")
        return None
    if prev is None and chained:
        return None  # the newest item could not be opened: reported on its own
    return _head_break(prev, head, entries)


def _seqs(entries: Sequence[Entry]) -> dict[int, str]:
    """seq -> digest of the chained entries among ``entries`` (to name what a break is)."""
    return {
        e.link.seq: e.link.digest for e in entries if e.link is not None and e.link is not UNREAD
    }


def continues(last: Link, entries: Sequence[Entry], head: Head) -> bool:
    """Whether ``entries`` are chained items that follow ``last`` one by one and end where
    ``head`` says (a history checked before, grown by appends only)."""
    seq, digest = last.seq, last.digest
    for _, link in entries:
        if link is None or link.seq != seq + 1 or link.prev != digest:
            return False
        seq, digest = link.seq, link.digest
    return (seq, digest) == (head.seq, head.link)
