"""Sealing items into their branch's chain, and the head changes that go with each write.

The callbacks made here run inside a backend's write transaction (HistoryHead capability),
after the branch's head was read under the writer lock, so two writers never give out one
sequence number. Sessions without heads (the Agents SDK's, a user's own) are chained from
their newest item instead, which one process at a time can do safely.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast

from ._chain import GENESIS, Head, Link, first_link, open_head, seal_head
from ._envelope import Opened, Opener, envelope_text, seal_link
from ._items import CorruptRow, Item, encode_items
from ._keys import Keyring
from ._protocol import (
    ChainBuild,
    ForkHead,
    HeadUpdate,
    HistoryHead,
    Newest,
    Presealed,
    SeedChanged,
    Session,
)
from ._reading import OnInvalid
from ._seeds import SeedMap, Seeds
from ._withdrawal import Conflict, Written, withdraw_headed, withdraw_unheaded
from .errors import DecryptionError, HistoryTamperedError, PlaintextItemError, StoreError

logger = logging.getLogger("encmem")


_APPEND_LOCKS: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = (
    weakref.WeakValueDictionary()
)


def _append_lock(session_id: str) -> asyncio.Lock:
    """One lock per session id and event loop: appends to a session without heads read its
    newest item first, so in one process they must take turns, whichever objects they use."""
    try:
        loop: object = asyncio.get_running_loop()
    except RuntimeError:  # driven by hand, without a loop: nothing else can interleave
        loop = None
    key = (id(loop), session_id)
    lock = _APPEND_LOCKS.get(key)
    if lock is None:
        lock = _APPEND_LOCKS[key] = asyncio.Lock()
    return lock


_SEED_ATTEMPTS = 3
"""Appends tried while another writer keeps destroying the session's seed."""

Seed = tuple[str, bytes] | None
"""(seed id, seed) new items are sealed with; None: the session has no key store."""


def _erased_meanwhile() -> StoreError:
    return StoreError(
        "the session's seed was destroyed again at every attempt to write (it is being "
        "erased or cleared meanwhile); nothing was written"
    )


class SealRules(Protocol):
    """What sealing needs to know about its session (EncryptedSession has these)."""

    session_id: str
    clock: Callable[[], float]
    max_item_bytes: int | None
    on_invalid: OnInvalid

    @property
    def keyring(self) -> Keyring: ...


def _head_missing(branch: str) -> HistoryTamperedError:
    return HistoryTamperedError(
        "the branch holds chained items but its history head is missing; nothing was written",
        kind="head mismatch",
        branch_id=branch,
    )


class Ahead(NamedTuple):
    """An append sealed before its transaction, and the head it makes."""

    sealed: Presealed
    head: Head


class Chainer:
    """Seals one session's items as links of its chain and computes its heads."""

    __slots__ = ("_ahead", "_known", "rules", "seeds")

    def __init__(self, rules: SealRules) -> None:
        self.rules = rules
        self._known: tuple[str, str, Head] | None = None
        """(branch, stored form, head) of the head this chainer sealed last: met again as
        the stored head, it is the one just written here and needs no decryption."""
        self._ahead = True
        """Whether to seal an append before its transaction (off after that was wasted)."""
        self.seeds: SeedMap | None = None
        """The session's seeds, as loaded from its key store (to open its newest item)."""

    @property
    def _keyring(self) -> Keyring:
        return self.rules.keyring

    def open_head(self, stored: str | None, branch: str) -> Head | None:
        if stored is None:
            return None
        known = self._known
        if known is not None and known[0] == branch and known[1] == stored:
            return known[2]
        return open_head(stored, self._keyring, self.rules.session_id, branch)

    def _readable_head(self, stored: str | None, branch: str) -> Head | None:
        """The head to extend; in skip mode an unreadable one is replaced by a new chain."""
        try:
            return self.open_head(stored, branch)
        except DecryptionError as exc:
            if self.rules.on_invalid == "raise":
                raise exc.located(self.rules.session_id) from None
            logger.warning(
                "started a new chain after a history head this keyring cannot read: %s",
                exc.reason,
            )
            return None

    def seal_head(self, head: Head) -> str:
        stored = seal_head(self._keyring, self.rules.session_id, head)
        self._known = (head.branch, stored, head)
        return stored

    def _opener(self) -> Opener:
        opener = Opener(self._keyring, self.rules.session_id, clock=self.rules.clock)
        opener.seeds = self.seeds
        return opener

    def link_of(self, obj: Item | CorruptRow | None) -> Link | None:
        """The chain link of a stored object (None: empty, or sealed before chains).

        An object that cannot be opened (other than plaintext) refuses the write: it may be
        a chained item, and starting a new chain after it would hide what came before.
        """
        if obj is None:
            return None
        try:
            return self._opener().open(obj, remember=False).link
        except PlaintextItemError:
            return None
        except DecryptionError as exc:
            if self.rules.on_invalid == "skip":
                return None
            raise exc.located(self.rules.session_id, 1) from None

    def seal_chain(
        self, items: Sequence[Item], texts: Sequence[str], seq: int, prev: str, seed: Seed
    ) -> tuple[list[Item], list[str], int, str]:
        """Envelopes for ``items`` as links ``seq``, ``seq+1``... after ``prev`` (under the
        session's seeded key when it has a ``seed``), and their stored texts; and the last
        sequence number and digest."""
        keyring = self._keyring
        kid = keyring.primary_kid
        seed_id, raw = seed if seed is not None else (None, None)
        key = keyring.session_key(kid, self.rules.session_id, raw)
        assert key is not None
        now = int(self.rules.clock())
        envelopes: list[Item] = []
        stored: list[str] = []
        for item, text in zip(items, texts, strict=True):
            envelope, prev = seal_link(key, kid, item, text, now, seq, prev, seed_id)
            envelopes.append(envelope)
            stored.append(envelope_text(envelope["payload"], kid, item, seed_id))
            seq += 1
        return envelopes, stored, seq - 1, prev

    def _seal_ahead(self, items: list[Item], texts: list[str], seed: Seed) -> Ahead | None:
        """The append sealed now, outside the store's transaction, as the next links after
        the head this chainer wrote last; the transaction uses it only if that head is still
        the branch's (else it seals again there). Sealing here is cheaper: the items and
        keys are at hand in this thread. Not tried again after a wasted attempt until the
        branch's head is found to be this chainer's again."""
        known = self._known
        if known is None or not self._ahead:
            return None
        branch, after, head = known
        seq, prev = first_link(head)
        envelopes, stored, last, link = self.seal_chain(items, texts, seq, prev, seed)
        new = Head(branch, last, link, head.floor, head.legacy)
        sealed = seal_head(self._keyring, self.rules.session_id, new)
        return Ahead(Presealed(branch, after, envelopes, stored, sealed), new)

    def _took(self, ahead: Ahead, written: list[Written]) -> None:
        """Record that the store kept the append sealed ahead."""
        sealed = ahead.sealed
        self._known = (sealed.branch, sealed.head, ahead.head)
        written[:] = [Written(sealed.branch, sealed.after, sealed.head, sealed.items)]

    def encode(self, items: list[Any]) -> list[str]:
        return encode_items(items, self.rules.max_item_bytes)

    def build(
        self,
        items: list[Item],
        texts: list[str],
        seed: Seed,
        written: list[Written],
        ahead: Ahead | None = None,
    ) -> ChainBuild:
        """The append callback for a store that keeps heads (it records what it stored in
        ``written``); it takes the append sealed ``ahead`` when that follows the head."""

        def build(
            branch: str, stored: str | None, newest: Newest
        ) -> tuple[list[Item], list[str], str]:
            if ahead is not None and (branch, stored) == ahead.sealed[:2]:
                self._took(ahead, written)
                return ahead.sealed.items, ahead.sealed.texts, ahead.sealed.head
            if ahead is not None:
                self._ahead = False  # sealed for nothing: another writer moved the head
            elif self._known is not None and stored == self._known[1]:
                self._ahead = True  # the head is this chainer's again
            head = self._readable_head(stored, branch)
            legacy = head.legacy if head is not None else stored is not None
            if stored is None:
                found = newest()
                if self.link_of(found) is not None:
                    raise _head_missing(branch)
                legacy = found is not None  # the chain starts after items sealed before chains
            floor = 1 if head is None else head.floor
            seq, prev = first_link(head)
            envelopes, envelope_texts, last, link = self.seal_chain(items, texts, seq, prev, seed)
            sealed = self.seal_head(Head(branch, last, link, floor, legacy))
            written[:] = [Written(branch, stored, sealed, envelopes)]
            return envelopes, envelope_texts, sealed

        return build

    async def append(
        self,
        heads: HistoryHead,
        seeds: Seeds,
        items: list[Item],
        texts: list[str],
    ) -> None:
        """Seal and append ``items`` in one transaction of a store that keeps heads.

        Where the session store keeps the seeds, a seed this writer used before is not asked
        for again: the append's transaction checks it is still the session's. A separate key
        store is asked before the append and again after it, and an append whose seed an
        erase destroyed meanwhile is taken back. Either way, on a change the seed is asked
        for and the append made again.
        """
        held: bool = cast(object, seeds.store) is heads  # the session store keeps its seeds
        remembered = held
        for _ in range(_SEED_ATTEMPTS):
            seed = await seeds.for_writing(remembered)
            remembered = False
            written: list[Written] = []
            ahead = self._seal_ahead(items, texts, seed)
            build = self.build(items, texts, seed, written, ahead)
            check = None
            if held and seed is not None:
                check = seeds.stored_form(seed[0])
                assert check is not None, "for_writing() keeps the stored form it returns"
            try:
                if await heads.append_chained(
                    build, seed=check, presealed=None if ahead is None else ahead.sealed
                ):
                    assert ahead is not None
                    self._took(ahead, written)
            except SeedChanged:
                seeds.forget()
                continue
            if held or seed is None or await seeds.is_current(seed[0]):
                return
            await withdraw_headed(heads, written[0])
            seeds.forget()
        raise _erased_meanwhile()

    async def append_unheaded(
        self,
        session: Session,
        seeds: Seeds,
        items: list[Item],
        texts: list[str],
        kwargs: dict[str, Any],
    ) -> None:
        """Chain after the session's newest item (no head to keep: one writer at a time);
        an append whose seed an erase destroyed meanwhile is taken back and made again."""
        for _ in range(_SEED_ATTEMPTS):
            seed = await seeds.for_writing()
            async with _append_lock(self.rules.session_id):
                newest = await session.get_items(1, **kwargs)
                link = self.link_of(newest[-1] if newest else None)
                seq, prev = (1, GENESIS) if link is None else (link.seq + 1, link.digest)
                envelopes, _, _, _ = self.seal_chain(items, texts, seq, prev, seed)
                await session.add_items(envelopes, **kwargs)
                if seed is None or await seeds.is_current(seed[0]):
                    return
                await withdraw_unheaded(session, envelopes, kwargs)
            seeds.forget()
        raise _erased_meanwhile()

    def after_pop(self, branch: str, seen: str | None, popped: Opened) -> HeadUpdate:
        """The head update for popping ``popped``, the newest item when the head was ``seen``."""

        def update(stored: str | None) -> str | None:
            if stored != seen:
                raise Conflict
            head = self.open_head(stored, branch)
            link = popped.link
            if head is None:
                if link is not None:
                    raise _head_missing(branch)
                return None
            if link is None:
                if not head.empty:
                    raise HistoryTamperedError(
                        "the newest item has no place in the chain the head records",
                        kind="unchained",
                        branch_id=branch,
                    )
                return stored
            if (link.seq, link.digest) != (head.seq, head.link):
                raise HistoryTamperedError(
                    f"the newest stored item is item {link.seq}, but the head records item "
                    f"{head.seq}; nothing was popped",
                    kind="resurrected" if link.seq > head.seq else "head mismatch",
                    branch_id=branch,
                )
            return self.seal_head(Head(branch, link.seq - 1, link.prev, head.floor, head.legacy))

        return update

    def raise_floor(self, branch: str, floor: int) -> HeadUpdate:
        """The head update for purging every item below ``floor`` from the front."""

        def update(stored: str | None) -> str | None:
            head = self.open_head(stored, branch)
            if head is None or floor <= head.floor:
                return stored
            return self.seal_head(head._replace(floor=min(floor, head.seq + 1)))

        return update

    def reseal_head(self, branch: str) -> HeadUpdate:
        """The head update that seals the same head under the primary key (rotation)."""

        def update(stored: str | None) -> str | None:
            head = self.open_head(stored, branch)
            return None if head is None else self.seal_head(head)

        return update

    def fork(self) -> ForkHead:
        """The head of a new branch that holds the source before ``first_left_out``."""

        def fork(
            source: str, branch: str, source_head: str | None, first_left_out: Item | CorruptRow
        ) -> str | None:
            link = self.link_of(first_left_out)
            head = self.open_head(source_head, source)
            if link is None:  # the new branch holds items sealed before chains only
                if head is None:
                    return None
                return self.seal_head(Head(branch, head.floor - 1, GENESIS, head.floor, True))
            floor, legacy = (1, False) if head is None else (head.floor, head.legacy)
            return self.seal_head(Head(branch, link.seq - 1, link.prev, floor, legacy))

        return fork
