"""Reading a whole store for the command: every stored object of every session and branch."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime, timezone

from .._envelope import shown
from .._items import CorruptRow, Item
from .._protocol import Capabilities, SessionStore, StoreSession
from ._seedbook import SeedBook

Stored = tuple[str | None, int, Item | CorruptRow]
"""(branch, storage id, stored object) of one item."""


def iso(seconds: float | None) -> str | None:
    """A seal time as UTC text; None when unknown or beyond what a calendar can show."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def kid_label(value: object) -> str | None:
    """A key id read from the store, when it may be shown: only a well-formed one (a key
    pasted where its id belongs never reaches the terminal)."""
    return value if isinstance(value, str) and shown(value) == repr(value) else None


async def branches(session: StoreSession) -> list[str | None]:
    caps = Capabilities.of(session)
    if caps.branching is None or caps.branch_addressing is None:
        return [None]
    return [str(branch["branch_id"]) for branch in await caps.branching.list_branches()]


async def all_items(
    session: StoreSession, of_branches: list[str | None] | None = None
) -> list[Stored]:
    """(branch, storage id, stored object) of every item, oldest first per branch (of the
    given ``of_branches``, when the caller listed them already)."""
    caps = Capabilities.of(session)
    found: list[Stored] = []
    for branch in of_branches if of_branches is not None else await branches(session):
        if branch is not None and caps.branch_addressing is not None:
            stored = await caps.branch_addressing.get_stored_items(None, branch_id=branch)
        else:
            stored = await session.get_stored_items(None)
        found.extend((branch, item_id, obj) for item_id, obj in stored)
    return found


def once_each(found: Iterable[Stored]) -> Iterator[Stored]:
    """Each stored item once: an item shared by branches is met on its first branch."""
    seen: set[int] = set()
    for stored in found:
        if stored[1] not in seen:
            seen.add(stored[1])
            yield stored


async def distinct_items(
    store: SessionStore, book: SeedBook | None = None
) -> AsyncIterator[tuple[str, Stored]]:
    """(session id, stored item) of every item of the store, once each; with a ``book``,
    each session's seeds are read into it before its items."""
    for session_id in await store.session_ids():
        if book is not None:
            await book.load(store, session_id)
        for stored in once_each(await all_items(store.session(session_id))):
            yield session_id, stored
