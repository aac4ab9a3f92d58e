"""``pop_item`` for a sealed session: take the newest readable item, never an unreadable one.

Expired items met on the way are discarded. An item that fails authentication is never
deleted: it raises, or in skip mode is stepped over and kept. With storage ids the item is
looked at before it is deleted by id; without them it is popped and, when it turns out to be
unreadable, put back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._items import Item
from ._protocol import HistoryHead, Session
from ._reading import Fetch, Reader, is_expired
from ._withdrawal import Conflict
from ._writing import Chainer
from .errors import DecryptionError, UnrestoredItemsError

Delete = Callable[[Sequence[int]], Awaitable[int]]


async def pop_by_id(reader: Reader, fetch: Fetch, delete: Delete) -> Item | None:
    """Pop through item addressing: read the newest row, check it, delete it by id."""
    before: int | None = None
    position = 0
    while True:
        batch = await fetch(1, before)
        if not batch:
            return None
        item_id, obj = batch[0]
        position += 1
        now = reader.rules.clock()
        try:
            opened = reader.opener.open(obj)
        except DecryptionError as exc:
            reader.refuse(exc, position, item_id, "pop_item stepped over")
            before = item_id
            continue
        if await delete([item_id]) == 0:
            before, position = None, 0  # another writer took it first; start again
            continue
        reader.opener.forget(obj)
        reader.known.forget(item_id)
        if not is_expired(opened.sealed_at, reader.rules.ttl, now):
            return opened.item


async def pop_headed(reader: Reader, heads: HistoryHead, chainer: Chainer) -> Item | None:
    """Pop from a store that keeps heads: the item and the head change in one transaction.

    The newest row and the head are read in one snapshot; the delete goes through only if
    the head is still the one read (else another writer came first, and the pop starts
    again) and the row is the item the head records (else the history was tampered with,
    and nothing is deleted). An unreadable newest item raises; in skip mode nothing is
    popped (popping the item under it would cut the chain in the middle).
    """
    while True:
        found = await heads.get_head_and_items(1)
        if not found.items:
            return None
        stored = found.items[0]
        now = reader.rules.clock()
        await reader.know_seeds([stored])
        try:
            opened = reader.opener.open(stored.item)
        except DecryptionError as exc:
            reader.refuse(exc, 1, stored.id, "pop_item popped nothing: it cannot read")
            return None
        update = chainer.after_pop(found.branch, found.head, opened)
        try:
            deleted = await heads.delete_with_head([stored.id], update)
        except Conflict:
            continue
        except DecryptionError as exc:
            raise exc.located(reader.rules.session_id, 1, stored.id) from None
        if deleted == 0:
            continue  # another writer took it first; start again
        reader.opener.forget(stored.item)
        reader.known.forget(stored.id)
        if not is_expired(opened.sealed_at, reader.rules.ttl, now):
            return opened.item


async def pop_generic(reader: Reader, session: Session, kwargs: dict[str, Any]) -> Item | None:
    """Pop from a session without storage ids: look at the newest item before taking it."""
    if reader.rules.on_invalid == "skip":
        return await _pop_skipping(reader, session, kwargs)
    while True:
        newest = await session.get_items(1, **kwargs)
        if not newest:
            return None
        try:
            reader.opener.open(newest[-1], remember=False)  # unreadable: raises, still stored
        except DecryptionError as exc:
            raise exc.located(reader.rules.session_id, 1) from None
        obj = await session.pop_item(**kwargs)
        if obj is None:
            return None
        reader.opener.forget(obj)
        try:
            opened = reader.opener.open(obj, remember=False)
        except DecryptionError as exc:
            # Another writer slipped an unreadable item in between: put it back.
            await _restore(reader, session, [obj], kwargs, exc)
            raise exc.located(reader.rules.session_id, 1) from None
        if not is_expired(opened.sealed_at, reader.rules.ttl, reader.rules.clock()):
            return opened.item


async def _pop_skipping(reader: Reader, session: Session, kwargs: dict[str, Any]) -> Item | None:
    """Skip mode without storage ids: unreadable items popped on the way are put back."""
    kept: list[Any] = []
    first_error: DecryptionError | None = None
    try:
        while True:
            obj = await session.pop_item(**kwargs)
            if obj is None:
                return None
            try:
                opened = reader.opener.open(obj, remember=False)
            except DecryptionError as exc:
                first_error = first_error or exc
                kept.insert(0, obj)
                reader.refuse(exc, len(kept), None, "pop_item stepped over")
                continue
            reader.opener.forget(obj)
            if not is_expired(opened.sealed_at, reader.rules.ttl, reader.rules.clock()):
                return opened.item
    finally:
        if kept:
            assert first_error is not None
            await _restore(reader, session, kept, kwargs, first_error)


async def _restore(
    reader: Reader,
    session: Session,
    kept: list[Any],
    kwargs: dict[str, Any],
    cause: DecryptionError,
) -> None:
    """Put unreadable items back at the end, in order; say so loudly if that fails."""
    try:
        await session.add_items(kept, **kwargs)
    except Exception as exc:
        session_id = reader.rules.session_id
        raise UnrestoredItemsError(
            f"pop_item took {len(kept)} unreadable item(s) off session {session_id!r} and "
            f"could not put them back ({type(exc).__name__}); they are held, as stored, in "
            "this exception's 'items' attribute",
            items=kept,
            session_id=session_id,
        ) from cause
