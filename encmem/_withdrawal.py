"""Taking back an append whose seed an erase destroyed while it was being written.

With a separate key store, a writer's append and an erase's destruction of the seed happen in
two stores, with no transaction spanning both. So the writer asks the key store once more
after each append: when the seed it sealed under is gone, the append is taken back (the
erase had already deleted the rows, or would delete them anyway) and made again under the
session's new seed. Nothing sealed under a destroyed seed stays in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ._items import Item
from ._protocol import HistoryHead, Session
from .errors import StoreError


class Conflict(Exception):
    """Another writer changed the branch between a read and the write that relied on it."""


class Written(NamedTuple):
    """What one append stored: where, the head it replaced, the head and the envelopes."""

    branch: str
    before: str | None
    head: str
    envelopes: list[Item]


def _stuck(count: int) -> StoreError:
    return StoreError(
        f"the session was erased while {count} item(s) were being written, and another "
        "writer has appended after them since, so they could not be taken back; nobody can "
        "read them (their seed is destroyed): erase the session again when no writer uses it"
    )


def _back_to(written: Written) -> Callable[[str | None], str | None]:
    def update(stored: str | None) -> str | None:
        if stored != written.head:
            raise Conflict
        return written.before

    return update


async def withdraw_headed(heads: HistoryHead, written: Written) -> None:
    """Delete the append ``written`` and put back the head it replaced, in one transaction;
    nothing to do when the erase removed it already."""
    count = len(written.envelopes)
    while True:
        found = await heads.get_head_and_items(count, branch_id=written.branch)
        if found.head != written.head:
            everything = await heads.get_head_and_items(None, branch_id=written.branch)
            if any(stored.item in written.envelopes for stored in everything.items):
                raise _stuck(count)
            return  # the erase deleted them
        if [stored.item for stored in found.items] != written.envelopes:
            raise _stuck(count)
        try:
            await heads.delete_with_head(
                [stored.id for stored in found.items], _back_to(written), branch_id=written.branch
            )
            return
        except Conflict:
            continue  # another writer came in between: look again


async def withdraw_unheaded(
    session: Session, envelopes: list[Item], kwargs: dict[str, Any]
) -> None:
    """Pop the append ``envelopes`` off a session without heads (one writer at a time)."""
    count = len(envelopes)
    newest = await session.get_items(count, **kwargs)
    if newest != envelopes:
        if any(item in envelopes for item in await session.get_items(**kwargs)):
            raise _stuck(count)
        return
    for _ in range(count):
        await session.pop_item(**kwargs)
