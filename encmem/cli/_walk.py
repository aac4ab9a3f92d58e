"""Reading a whole store for the command: every stored object of every session and branch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone

from .._envelope import shown
from .._items import CorruptRow, Item
from .._protocol import Capabilities, SessionStore, StoreSession

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


async def all_items(session: StoreSession) -> list[Stored]:
    """(branch, storage id, stored object) of every item, oldest first per branch."""
    caps = Capabilities.of(session)
    found: list[Stored] = []
    for branch in await branches(session):
        if branch is not None and caps.branch_addressing is not None:
            stored = await caps.branch_addressing.get_stored_items(None, branch_id=branch)
        else:
            stored = await session.get_stored_items(None)
        found.extend((branch, item_id, obj) for item_id, obj in stored)
    return found


async def distinct_items(store: SessionStore) -> AsyncIterator[tuple[str, Stored]]:
    """(session id, stored item) of every item of the store, once each (an item shared by
    branches is met on its first branch)."""
    for session_id in await store.session_ids():
        seen: set[int] = set()
        for stored in await all_items(store.session(session_id)):
            if stored[1] not in seen:
                seen.add(stored[1])
                yield session_id, stored
