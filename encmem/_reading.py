"""Reading a sealed session: opening stored objects under the session's rules, and tail reads.

The rules (TTL, what to do with an unreadable item, the clock, the scan budget) belong to
the :class:`~encmem._session.EncryptedSession`; a :class:`Reader` applies them to what the
wrapped session returns, through the Session protocol and its optional capabilities only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from ._envelope import Opened, Opener
from ._items import Item
from ._protocol import StoredItem
from .errors import DecryptionError, ScanBudgetExceeded

logger = logging.getLogger("encmem")

OnInvalid = Literal["raise", "skip"]
MAX_WINDOW = 1024
"""The widest page a tail read asks for when it has to walk back past unreadable items."""

Fetch = Callable[[int | None, int | None], Awaitable[list[StoredItem]]]
"""``fetch(limit, before_id)``: stored items of one branch, oldest first (ItemAddressing)."""

Window = Callable[[int | None], Awaitable[list[Any]]]
"""``window(limit)``: the newest ``limit`` stored objects of one branch (``get_items``)."""


class ReadRules(Protocol):
    """What a reader needs to know about its session (EncryptedSession has these)."""

    session_id: str
    ttl: float | None
    on_invalid: OnInvalid
    max_scan_items: int | None
    clock: Callable[[], float]


def is_expired(sealed_at: int, ttl: float | None, now: float) -> bool:
    """Whether an item sealed at ``sealed_at`` is past ``ttl`` seconds at ``now``.

    Seal times are whole seconds (Fernet's timestamp: the write time rounded down), so an
    item is kept until a full second past ``sealed_at + ttl``: it stays readable for at
    least ``ttl`` seconds after it was written and is gone at most a second after that. For
    a whole-second ``ttl`` this is Fernet's own ``ttl`` check.
    """
    return ttl is not None and now >= sealed_at + ttl + 1


class Reader:
    """Opens one session's stored objects under its rules."""

    __slots__ = ("opener", "rules")

    def __init__(self, rules: ReadRules, opener: Opener) -> None:
        self.rules = rules
        self.opener = opener

    def refuse(
        self, exc: DecryptionError, position: int | None, item_id: int | None, action: str
    ) -> None:
        """Raise the located error, or in skip mode log that ``action`` stepped over it."""
        located = exc.located(self.rules.session_id, position, item_id)
        if self.rules.on_invalid == "raise":
            raise located from None
        logger.warning("%s an unreadable item: %s [%s]", action, located.reason, located.where)

    def open(
        self,
        obj: object,
        now: float,
        position: int | None,
        item_id: int | None,
        remember: bool = True,
    ) -> Opened | None:
        """The opened item; None when it expired or (in skip mode) cannot be read."""
        try:
            opened = self.opener.open(obj, remember)
        except DecryptionError as exc:
            self.refuse(exc, position, item_id, "skipped")
            return None
        return None if is_expired(opened.sealed_at, self.rules.ttl, now) else opened

    def _charge(self, scanned: int) -> None:
        budget = self.rules.max_scan_items
        if budget is not None and scanned > budget:
            raise ScanBudgetExceeded(
                f"reading the newest items scanned more than max_scan_items={budget} stored "
                "items; raise the budget or purge expired items",
                scanned=scanned,
                budget=budget,
            )

    def open_all(self, stored: Sequence[StoredItem], now: float, cache_size: int) -> list[Item]:
        """Every readable, unexpired item of a whole history, oldest first."""
        self._charge(len(stored))
        items: list[Item] = []
        total = len(stored)
        cached_from = total - cache_size  # only the newest items are worth caching
        for index, (item_id, obj) in enumerate(stored):
            where = item_id if item_id >= 0 else None
            opened = self.open(obj, now, total - index, where, index >= cached_from)
            if opened is not None:
                items.append(opened.item)
        return items

    async def tail_by_id(self, fetch: Fetch, limit: int, now: float) -> list[Item]:
        """The newest ``limit`` readable items, walking back by storage id; each row once."""
        newest_first: list[Item] = []
        before: int | None = None
        window = limit
        scanned = 0
        while True:
            batch = await fetch(window, before)
            for index in range(len(batch) - 1, -1, -1):
                scanned += 1
                item_id, obj = batch[index]
                opened = self.open(obj, now, scanned, item_id)
                if opened is not None:
                    newest_first.append(opened.item)
                    if len(newest_first) == limit:
                        return newest_first[::-1]
            self._charge(scanned)
            if len(batch) < window:
                return newest_first[::-1]
            before = batch[0].id
            window = min(window * 2, MAX_WINDOW)

    async def tail_by_window(self, window: Window, limit: int, now: float) -> list[Item]:
        """For sessions without storage ids: widen a tail window until it holds enough."""
        size = limit
        while True:
            raw = await window(size)
            self._charge(len(raw))
            newest_first: list[Item] = []
            for offset, obj in enumerate(reversed(raw), start=1):
                opened = self.open(obj, now, offset, None)
                if opened is not None:
                    newest_first.append(opened.item)
                    if len(newest_first) == limit:
                        return newest_first[::-1]
            if len(raw) < size:
                return newest_first[::-1]
            size *= 2
