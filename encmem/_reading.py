"""Reading a sealed session: opening stored objects under the session's rules, and tail reads.

The rules (TTL, what to do with an unreadable item, the clock, the scan budget) belong to
the :class:`~encmem._session.EncryptedSession`; a :class:`Reader` applies them to what the
wrapped session returns, through the Session protocol and its optional capabilities only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NamedTuple, Protocol

from ._chain import Head, Link, open_head
from ._envelope import MAX_CLOCK_SKEW, Opened, Opener
from ._exact_json import copy_json
from ._history import UNREAD, Entry, continues, find_break, trusted_from
from ._items import Item, decode_stored
from ._known_rows import Decoded, Kept, KnownRows
from ._protocol import StoredItem
from ._seeds import SeedMap
from .errors import DecryptionError, ScanBudgetExceeded

logger = logging.getLogger("encmem")

OnInvalid = Literal["raise", "skip"]
MAIN = "main"
"""The branch of a session that has no branches of its own (heads are kept under it)."""
MAX_WINDOW = 1024
"""The widest page a tail read asks for when it has to walk back past unreadable items."""

Fetch = Callable[[int | None, int | None], Awaitable[list[StoredItem]]]
"""``fetch(limit, before_id)``: stored items of one branch, oldest first (ItemAddressing)."""


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


Newest = Callable[[int | None], Awaitable[tuple[str | None, str | None, list[Any], bool]]]
"""``newest(limit)``: (branch id, stored head, newest ``limit`` stored objects, all when None,
oldest first, as :class:`StoredItem` or, without storage ids, bare objects; whether other
branches of the session have heads)."""


class Branch(NamedTuple):
    """How to read one branch: its newest items with its head, then older pages by id."""

    newest: Newest
    older: Fetch | None
    headed: bool
    """Whether the store keeps heads (so a chained branch without one was tampered with)."""


class BranchHead(NamedTuple):
    """A branch's head as a reader found it: authenticated, absent, or refused (skip mode);
    and whether the session's other branches have heads (so this one must)."""

    head: Head | None
    refused: DecryptionError | None
    expected: bool = False


class Reader:
    """Opens one session's stored objects under its rules and checks them as a history."""

    __slots__ = ("_checked", "_heads", "known", "opener", "refresh_seeds", "rules")

    def __init__(self, rules: ReadRules, opener: Opener) -> None:
        self.rules = rules
        self.opener = opener
        self.known = KnownRows(opener, opener.cache_size)
        self._checked: dict[str, tuple[list[Entry], Link, Head]] = {}
        """Per branch: the entries of its last whole read found sound, the last link, and
        the head they were checked against."""
        self._heads: dict[str, tuple[str, Head]] = {}
        self.refresh_seeds: Callable[[], Awaitable[SeedMap | None]] | None = None
        """Asks the key store for the session's seeds again (set by EncryptedSession)."""

    async def know_seeds(self, rows: Sequence[Any]) -> None:
        """Before opening ``rows``: if one names a seed this reader does not know (made by
        another writer since it last asked), ask the key store again, once."""
        known = self.opener.seeds
        if known is None or self.refresh_seeds is None:
            return
        for row in rows:
            if type(row) is Kept:
                continue  # opened before: its seed is known
            obj = row.item if isinstance(row, StoredItem | Decoded) else row
            seed_id = obj.get("seed") if isinstance(obj, dict) else None
            if isinstance(seed_id, str) and seed_id not in known:
                self.opener.seeds = await self.refresh_seeds()
                return

    def refuse(
        self, exc: DecryptionError, position: int | None, item_id: int | None, action: str
    ) -> None:
        """Raise the located error, or in skip mode log that ``action`` stepped over it."""
        located = exc.located(self.rules.session_id, position, item_id)
        if self.rules.on_invalid == "raise":
            raise located from None
        logger.warning("%s an unreadable item: %s [%s]", action, located.reason, located.where)

    def head(self, stored: str | None, branch: str, expected: bool = False) -> BranchHead:
        """The authenticated head of ``branch`` from its stored text (cached once verified).

        One that fails raises in raise mode; in skip mode the failure is kept, to be logged
        once by :meth:`check` as the reason nothing chained can be trusted.
        """
        if stored is None:
            return BranchHead(None, None, expected)
        known = self._heads.get(branch)
        if known is not None and known[0] == stored:
            return BranchHead(known[1], None)
        try:
            head = open_head(stored, self.opener.keyring, self.rules.session_id, branch)
        except DecryptionError as exc:
            if self.rules.on_invalid == "raise":
                raise exc.located(self.rules.session_id) from None
            return BranchHead(None, exc.located(self.rules.session_id))
        self._heads[branch] = (stored, head)
        return BranchHead(head, None)

    def open(
        self,
        obj: object,
        now: float,
        position: int | None,
        item_id: int | None,
        remember: bool = True,
    ) -> Opened | None:
        """The opened item; None when it expired or (in skip mode) cannot be read."""
        opened = self.open_any(obj, position, item_id, remember)
        if opened is None or is_expired(opened.sealed_at, self.rules.ttl, now):
            return None
        return opened

    def open_any(
        self, obj: object, position: int | None, item_id: int | None, remember: bool = True
    ) -> Opened | None:
        """The opened item, expired or not; None when (in skip mode) it cannot be read."""
        try:
            return self.opener.open(obj, remember)
        except DecryptionError as exc:
            self.refuse(exc, position, item_id, "skipped")
            return None

    def _open_row(self, row: Kept | Decoded, position: int, remember: bool) -> Opened | None:
        """Open a row seen for the first time (or one opened before whose seal time is now
        too far ahead of the clock: it is refused as it would be the first time)."""
        if isinstance(row, Kept):
            row = Decoded(row.id, decode_stored(row.text), row.text)
        try:
            return self.known.open(row, remember)
        except DecryptionError as exc:
            self.refuse(exc, position, row.id, "skipped")
            return None

    def _charge(self, scanned: int) -> None:
        budget = self.rules.max_scan_items
        if budget is not None and scanned > budget:
            raise ScanBudgetExceeded(
                f"reading the newest items scanned more than max_scan_items={budget} stored "
                "items; raise the budget or purge expired items",
                scanned=scanned,
                budget=budget,
            )

    def _open_rows(
        self, rows: list[Any], total: int, remember_from: int, consume: bool = False
    ) -> list[tuple[Entry, Opened | None]]:
        """Open stored rows (oldest first); ``total - index`` is each one's position. Items
        may be the reader's own kept objects: whoever hands them out copies them. With
        ``consume``, each row is dropped from ``rows`` once opened (a long read then holds
        fewer rows and items at once)."""
        opened_rows: list[tuple[Entry, Opened | None]] = []
        skew = self.rules.clock() + MAX_CLOCK_SKEW
        for index, row in enumerate(rows):
            if consume:
                rows[index] = None
            if type(row) is Kept and row.pair[1].sealed_at <= skew:
                opened_rows.append(row.pair)
                continue
            if isinstance(row, Kept | Decoded):
                opened = self._open_row(row, total - index, index >= remember_from)
                where: int | None = row.id
            else:
                item_id, obj = (row.id, row.item) if isinstance(row, StoredItem) else (-1, row)
                where = item_id if item_id >= 0 else None
                opened = self.open_any(obj, total - index, where, index >= remember_from)
            link = UNREAD if opened is None else opened.link
            opened_rows.append((Entry(where, link), opened))
        return opened_rows

    def check(
        self,
        opened_rows: list[tuple[Entry, Opened | None]],
        head: BranchHead,
        name: str | None,
        *,
        complete: bool,
        headed: bool,
    ) -> list[tuple[Entry, Opened | None]]:
        """The rows that are provably the branch's history: all of them when the chain is
        sound. Raise mode raises at a break; skip mode logs it once and keeps the rows that
        link back unbroken from the head (without a head: the rows before the break)."""
        entries = [entry for entry, _ in opened_rows]
        if complete and self._grown(name or MAIN, entries, head.head):
            return opened_rows
        found = find_break(
            entries, head.head, complete=complete, headed=headed, head_expected=head.expected
        )
        if found is None and complete and head.head is not None:
            self._remember_checked(name or MAIN, entries, head.head)
        if found is not None:
            error = head.refused or found.error(entries, name)
            self.refuse(error, error.position, error.item_id, "stopped reading at")
        elif self.rules.on_invalid == "raise":
            return opened_rows
        if head.head is not None:
            return opened_rows[trusted_from(entries, head.head) :]
        if found is None:
            return opened_rows
        return [] if headed else opened_rows[: found.at]

    def _remember_checked(self, branch: str, entries: list[Entry], head: Head) -> None:
        """Keep a sound history's entries for the next read: not past an unreadable item
        (skip mode: only what follows it is trusted), nor for more rows than are kept."""
        last = entries[-1].link if entries else None
        if (
            last is not None
            and len(entries) <= self.known.size
            and all(entry.link is not UNREAD for entry in entries)
        ):
            self._checked[branch] = (entries, last, head)
        else:
            self._checked.pop(branch, None)

    def _grown(self, branch: str, entries: list[Entry], head: Head | None) -> bool:
        """Whether ``entries`` are the branch's history this reader found sound last time,
        unchanged, followed by appended items only, up to ``head``: then what was checked
        then needs no second check."""
        checked = self._checked.get(branch)
        if checked is None or head is None:
            return False
        before, last, then = checked
        if (head.floor, head.legacy) != (then.floor, then.legacy) or len(entries) < len(before):
            return False
        # Rows opened before come with the very Entry objects they had: a C-speed compare.
        if entries[: len(before)] != before or not continues(last, entries[len(before) :], head):
            return False
        if len(entries) > len(before):  # the next read checks only what comes after these
            if len(entries) <= self.known.size:
                self._checked[branch] = (entries, entries[-1].link or last, head)
            else:
                self._checked.pop(branch, None)
        return True

    def _settle(
        self,
        opened_rows: list[tuple[Entry, Opened | None]],
        head: BranchHead,
        name: str | None,
        branch: Branch,
        complete: bool,
        now: float,
    ) -> list[Item]:
        """Copies of the readable, unexpired items before any break of the chain."""
        opened_rows = self.check(opened_rows, head, name, complete=complete, headed=branch.headed)
        ttl = self.rules.ttl
        if ttl is None:
            return [copy_json(opened.item) for _, opened in opened_rows if opened is not None]
        return [  # is_expired() inlined: this runs for every item of every read
            copy_json(opened.item)
            for _, opened in opened_rows
            if opened is not None and opened.sealed_at + ttl + 1 > now
        ]

    async def open_branch(
        self, branch: Branch, cache_size: int = 0
    ) -> tuple[list[tuple[Entry, Opened | None]], BranchHead, str | None]:
        """Every row of a whole branch opened (expired ones too), its head and its name."""
        name, stored_head, rows, expected = await branch.newest(None)
        self._charge(len(rows))
        rows, new = self.known.sort(rows)
        if new:
            await self.know_seeds(rows)
        opened_rows = self._open_rows(rows, len(rows), len(rows) - cache_size, consume=True)
        return opened_rows, self.head(stored_head, name or MAIN, expected), name

    async def read_all(self, branch: Branch, now: float, cache_size: int) -> list[Item]:
        """Every readable, unexpired item of a whole branch, oldest first, checked as a chain."""
        opened_rows, head, name = await self.open_branch(branch, cache_size)
        return self._settle(opened_rows, head, name, branch, True, now)

    async def read_tail(self, branch: Branch, limit: int, now: float) -> list[Item]:
        """The newest ``limit`` readable items: the newest rows and the head from one
        snapshot, walking back by storage id (or a wider window) past unreadable items."""
        name, stored_head, rows, expected = await branch.newest(limit)
        window = limit
        complete = len(rows) < window
        rows, new = self.known.sort(rows)
        if new:
            await self.know_seeds(rows)
        opened_rows = self._open_rows(rows, len(rows), 0)
        while not complete and _usable(opened_rows, self.rules.ttl, now) < limit:
            self._charge(len(opened_rows))
            window = min(window * 2, MAX_WINDOW)
            if branch.older is not None:
                older: list[Any] = await branch.older(window, rows[0].id)
                complete = len(older) < window
            else:  # no storage ids: read a wider tail again
                size = len(rows) * 2
                _, _, wider, _ = await branch.newest(size)
                older, complete = wider[: len(wider) - len(rows)], len(wider) < size
            rows = older + rows
            total = len(rows)
            await self.know_seeds(older)
            opened_rows = self._open_rows(older, total, total) + [
                (entry, opened) for entry, opened in opened_rows
            ]
        self._charge(len(opened_rows))
        head = self.head(stored_head, name or MAIN, expected)
        items = self._settle(opened_rows, head, name, branch, complete, now)
        return items[-limit:] if len(items) > limit else items


class _Strict:
    """A session's read rules with ``on_invalid='raise'``, for checks that must not skip."""

    on_invalid: OnInvalid = "raise"

    def __init__(self, rules: ReadRules) -> None:
        self._rules = rules

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rules, name)


def strict_reader(reader: Reader) -> Reader:
    """The same reader with ``on_invalid='raise'``, for checks that must not skip."""
    return Reader(_Strict(reader.rules), reader.opener)


async def verify_branch(reader: Reader, branch: Branch) -> tuple[int, Head]:
    """Check a whole branch as a chain, raising at the first problem whatever ``on_invalid``
    says; return how many items it holds and where it starts and ends (its head, or, for a
    session without heads, what its items say)."""
    strict = strict_reader(reader)
    opened_rows, head, name = await strict.open_branch(branch)
    strict.check(opened_rows, head, name, complete=True, headed=branch.headed)
    if head.head is not None:
        return len(opened_rows), head.head
    links = [entry.link for entry, _ in opened_rows if entry.link is not None]
    if not links:
        return len(opened_rows), Head(name or MAIN, 0, "", 1)
    return len(opened_rows), Head(name or MAIN, links[-1].seq, links[-1].digest, links[0].seq)


def _usable(opened_rows: list[tuple[Entry, Opened | None]], ttl: float | None, now: float) -> int:
    return sum(
        1
        for _, opened in opened_rows
        if opened is not None and not is_expired(opened.sealed_at, ttl, now)
    )
