"""How EncryptedSession reads one branch of the wrapped session, by what that session offers:
items with their head in one snapshot (encmem's backends), items with storage ids, or only
the Session protocol's ``get_items``."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from ._protocol import Capabilities, Session, StoredItem
from ._reading import Branch, Fetch

Stored = Awaitable[list[StoredItem]]
Newest = tuple[str | None, str | None, list[Any], bool]


def fetcher(caps: Capabilities, branch_id: str | None) -> Fetch | None:
    """Addressed reads of one branch; None when the session has no storage ids."""
    if branch_id is not None:
        addressed = caps.branch_addressing
        if addressed is None:
            return None

        def fetch_branch(limit: int | None, before: int | None) -> Stored:
            return addressed.get_stored_items(limit, before_id=before, branch_id=branch_id)

        return fetch_branch
    addressing = caps.addressing
    if addressing is None:
        return None

    def fetch(limit: int | None, before: int | None) -> Stored:
        return addressing.get_stored_items(limit, before_id=before)

    return fetch


def branch_source(
    caps: Capabilities, session: Session, branch_id: str | None, kwargs: dict[str, Any]
) -> Branch:
    """How to read one branch: with its head where the store keeps heads."""
    fetch = fetcher(caps, branch_id)
    heads = caps.heads
    if heads is not None:

        async def headed(limit: int | None) -> Newest:
            found = await heads.get_head_and_texts(limit, branch_id=branch_id)
            return found.branch, found.head, found.items, found.others

        return Branch(headed, fetch, True)
    if fetch is not None:

        async def addressed(limit: int | None) -> Newest:
            return branch_id, None, await fetch(limit, None), False

        return Branch(addressed, fetch, False)
    if branch_id is not None:
        branching = caps.need(caps.branching, "Branching", "branch_id=...")

        async def window(limit: int | None) -> Newest:
            return branch_id, None, await branching.get_items(limit, branch_id=branch_id), False

        return Branch(window, None, False)

    async def tail(limit: int | None) -> Newest:
        return None, None, await session.get_items(limit, **kwargs), False

    return Branch(tail, None, False)
