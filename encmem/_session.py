"""EncryptedSession: seals every item of any session, drops expired ones, never loses data.

It talks to the wrapped session only through the Session protocol and the optional
capabilities of :mod:`encmem._protocol`; it knows nothing about storage.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from . import _maintenance as maintenance
from . import _turns as turns
from ._chain import anchor as _anchor
from ._chain import anchor_kid
from ._envelope import Opener
from ._items import DEFAULT_MAX_ITEM_BYTES, Item
from ._keys import KeyInput, Keyring, as_keyring
from ._options import (
    HISTORY_METHODS,
    accepts_keyword,
    check_cache_size,
    check_key_store,
    check_max_item_bytes,
    check_max_scan_items,
    check_on_invalid,
    check_underlying,
    resolve_session_id,
    ttl_seconds,
)
from ._popping import pop_by_id, pop_generic, pop_headed
from ._protocol import Capabilities, KeyStore, SeedDestruction, Session, TurnRow
from ._reading import Branch, Fetch, OnInvalid, Reader, strict_reader, verify_branch
from ._seeds import Seeds
from ._settings import SessionSettings, resolve_limit
from ._sources import branch_source, fetcher
from ._structure import verified_turns
from ._writing import Chainer
from .errors import DecryptionError, HistoryTamperedError

_REFUSED_ATTRIBUTES = frozenset({"run_compaction"})

Progress = Callable[[int], None]


class EncryptedSession:
    """Transparent encryption and expiry around any session.

    Every item is sealed with Fernet under a key derived for this session from the keyring's
    primary key, with its structural fields (role, type, tool name) kept in the clear and
    authenticated so that branching and analytics keep working underneath. Items older than
    ``ttl`` are dropped from reads; items that fail authentication are never deleted and, by
    default, make reads raise :class:`~encmem.errors.DecryptionError`. A batch holding an
    item whose JSON is over ``max_item_bytes`` (16 MiB by default) is refused before anything
    is sealed or written.
    """

    def __init__(
        self,
        session_id: str | None = None,
        underlying_session: Session | None = None,
        encryption_key: KeyInput | Keyring | None = None,
        ttl: int | float | timedelta | None = 600,
        max_scan_items: int | None = None,
        *,
        on_invalid: OnInvalid = "raise",
        clock: Callable[[], float] = time.time,
        plaintext_cache: int = 4096,
        max_item_bytes: int | None = DEFAULT_MAX_ITEM_BYTES,
        key_store: KeyStore | None = None,
    ) -> None:
        underlying = check_underlying(underlying_session)
        if encryption_key is None:
            raise TypeError(
                "EncryptedSession needs encryption_key=<a key from encmem.generate_key() "
                "or a Keyring>"
            )
        self.session_id: str = resolve_session_id(session_id, underlying)
        self.underlying_session = underlying
        self.ttl = ttl_seconds(ttl)
        self.max_scan_items = check_max_scan_items(max_scan_items)
        self.on_invalid: OnInvalid = check_on_invalid(on_invalid)
        self.clock = clock
        self._plaintext_cache = check_cache_size(plaintext_cache)
        self.max_item_bytes = check_max_item_bytes(max_item_bytes)
        self._key_store = check_key_store(key_store)
        self._caps = Capabilities.of(underlying)
        self.keyring = as_keyring(encryption_key)
        self._forward_wrapper = all(
            accepts_keyword(getattr(underlying, name), "wrapper") for name in HISTORY_METHODS
        )

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The keys this session seals with (primary) and opens with (all)."""
        return self._reader.opener.keyring

    @keyring.setter
    def keyring(self, value: Keyring) -> None:
        # A new keyring starts a new opener: no cached key or plaintext outlives the old one.
        self._start_reader(as_keyring(value))

    def _now(self) -> float:
        return self.clock()

    def _start_reader(self, keyring: Keyring) -> None:
        opener = Opener(keyring, self.session_id, self._plaintext_cache, self._now)
        self._reader = Reader(self, opener)
        self._chainer = Chainer(self)
        store = self._key_store if self._key_store is not None else self._caps.key_store
        seeds = self._seeds = Seeds(store, keyring, self.session_id)
        self._reader.refresh_seeds = lambda: seeds.load(refresh=True)

    @property
    def key_store(self) -> KeyStore | None:
        """Where this session's seed lives (None: items are sealed without one)."""
        return self._seeds.store

    async def _load_seeds(self) -> None:
        """Hand the session's seeds to the opener and the chainer (asked once per object)."""
        seeds = await self._seeds.load()
        self._reader.opener.seeds = seeds
        self._chainer.seeds = seeds

    def _forget_plaintexts(self) -> None:
        self._start_reader(self.keyring)

    def __repr__(self) -> str:
        return (
            f"EncryptedSession(session_id={self.session_id!r}, "
            f"underlying={type(self.underlying_session).__name__}, "
            f"kids={list(self.keyring.kids)!r}, ttl={self.ttl!r})"
        )

    __str__ = __repr__

    def __getattr__(self, name: str) -> Any:
        # Only public names pass through: private hooks of the wrapped session (compaction
        # snapshots and the like) would read or write around the encryption.
        if name.startswith("_") or name in _REFUSED_ATTRIBUTES:
            raise AttributeError(name)
        try:
            underlying = object.__getattribute__(self, "underlying_session")
        except AttributeError:
            raise AttributeError(name) from None
        return getattr(underlying, name)

    @property
    def session_settings(self) -> SessionSettings | None:
        """The wrapped session's settings (shared, as in the Agents SDK)."""
        return getattr(self.underlying_session, "session_settings", None)

    @session_settings.setter
    def session_settings(self, value: SessionSettings | None) -> None:
        self.underlying_session.session_settings = value  # type: ignore[attr-defined]

    def _kwargs(self, wrapper: Any) -> dict[str, Any]:
        return {"wrapper": wrapper} if wrapper is not None and self._forward_wrapper else {}

    def _fetcher(self, branch_id: str | None) -> Fetch | None:
        return fetcher(self._caps, branch_id)

    def _branch(self, branch_id: str | None, wrapper: Any = None) -> Branch:
        return branch_source(self._caps, self.underlying_session, branch_id, self._kwargs(wrapper))

    def close(self) -> Any:
        """Close the wrapped session if it can be closed (returns what its close returns)."""
        closer = getattr(self.underlying_session, "close", None)
        return closer() if callable(closer) else None

    async def aclose(self) -> None:
        """Close the wrapped session, awaiting its close when it is a coroutine."""
        result = self.close()
        if inspect.isawaitable(result):
            await result

    async def __aenter__(self) -> EncryptedSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the Session protocol ---------------------------------------------------------------

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        """Seal and append items as the next links of the branch's chain, in one call to the
        wrapped session (nothing is written on bad input)."""
        texts = self._chainer.encode(items)
        if not texts:
            return
        heads = self._caps.heads
        try:
            await self._load_seeds()
            if heads is not None:
                await self._chainer.append(heads, self._seeds, items, texts)
            else:
                session, kwargs = self.underlying_session, self._kwargs(wrapper)
                await self._chainer.append_unheaded(session, self._seeds, items, texts, kwargs)
        except DecryptionError as exc:
            raise exc.located(self.session_id, exc.position, exc.item_id) from None

    async def get_items(
        self, limit: int | None = None, branch_id: str | None = None, *, wrapper: Any = None
    ) -> list[Any]:
        """The readable, unexpired items, oldest first; ``limit`` counts readable items.

        Every read checks the items it returns against their chain and the branch's head.
        ``branch_id`` reads another branch of a backend with the Branching capability.
        """
        if branch_id is not None:
            self._caps.need(self._caps.branching, "Branching", "get_items(branch_id=...)")
        effective = resolve_limit(limit, self.session_settings)
        if effective == 0:
            return []
        branch = self._branch(branch_id, wrapper)
        await self._load_seeds()
        now = self.clock()
        if effective is None:
            return await self._reader.read_all(branch, now, self._plaintext_cache)
        return await self._reader.read_tail(branch, effective, now)

    async def pop_item(self, *, wrapper: Any = None) -> Any | None:
        """Remove and return the newest readable item.

        Expired items met on the way are discarded. An item that fails authentication is
        never deleted: it raises (or, with ``on_invalid='skip'``, is stepped over and kept).
        """
        heads = self._caps.heads
        fetch = self._fetcher(None)
        await self._load_seeds()
        if heads is not None and fetch is not None:
            return await pop_headed(self._reader, heads, self._chainer)
        addressing = self._caps.addressing
        if addressing is not None and fetch is not None:
            return await pop_by_id(self._reader, fetch, addressing.delete_stored_items)
        return await pop_generic(self._reader, self.underlying_session, self._kwargs(wrapper))

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Delete every item of the session: its seed first, where it has one (so no copy of
        the items, in a backup or anywhere, can be decrypted any more), then the rows."""
        await self._shred()
        await self.underlying_session.clear_session(**self._kwargs(wrapper))
        self._forget_plaintexts()

    async def _shred(self) -> SeedDestruction | None:
        """Destroy the session's seed in its key store (None: it has no key store)."""
        store = self._seeds.store
        self._seeds.forget()
        return None if store is None else await store.destroy_seed(self.session_id)

    # -- content-aware queries of branching backends -----------------------------------------

    async def _turn_rows(self, branch_id: str | None) -> list[tuple[TurnRow, Item]]:
        source = self._caps.need(self._caps.user_turns, "UserTurnSource", "turn queries")
        branch = self._branch(branch_id)
        await self._load_seeds()
        return await verified_turns(
            self._reader, branch, lambda: source.get_user_turn_items(branch_id)
        )

    async def get_conversation_turns(self, branch_id: str | None = None) -> list[dict[str, Any]]:
        """User turns with previews, answered over decrypted items."""
        return turns.conversation_turns(await self._turn_rows(branch_id))

    async def find_turns_by_content(
        self, search_term: str, branch_id: str | None = None
    ) -> list[dict[str, Any]]:
        """User turns whose text contains ``search_term`` (literal, case-insensitive)."""
        return turns.find_turns(await self._turn_rows(branch_id), search_term)

    async def create_branch_from_content(
        self, search_term: str, branch_name: str | None = None
    ) -> str:
        """Branch from the first user turn whose text contains ``search_term``."""
        turn = turns.first_matching_turn(await self.find_turns_by_content(search_term), search_term)
        return await self._create_branch(turn, branch_name, "create_branch_from_content()")

    async def create_branch_from_turn(
        self, turn_number: int, branch_name: str | None = None
    ) -> str:
        """Branch before user turn ``turn_number`` (checked against the authenticated items)."""
        if self._caps.user_turns is not None and type(turn_number) is int:
            await self._turn_rows(None)
        return await self._create_branch(turn_number, branch_name, "create_branch_from_turn()")

    async def _create_branch(self, turn: int, branch_name: str | None, operation: str) -> str:
        branching = self._caps.need(self._caps.branching, "Branching", operation)
        await self._load_seeds()
        if self._caps.heads is None:
            return await branching.create_branch_from_turn(turn, branch_name)
        create = branching.create_branch_from_turn
        try:
            created: str = await create(turn, branch_name, fork=self._chainer.fork())  # type: ignore[call-arg]
        except DecryptionError as exc:
            raise exc.located(self.session_id, exc.position, exc.item_id) from None
        return created

    async def get_turn_usage(
        self, user_turn_number: int | None = None, branch_id: str | None = None
    ) -> Any:
        """The wrapped session's turn usage, once its turn structure checked out."""
        if self._caps.user_turns is not None:
            await self._turn_rows(branch_id)
        return await self.underlying_session.get_turn_usage(  # type: ignore[attr-defined]
            user_turn_number, branch_id
        )

    async def history_head(self, branch_id: str | None = None) -> str:
        """A short printable digest of the branch's history as it ends now: keep it outside
        the database, and :meth:`verify_history` tells whether the history still ends there."""
        await self._load_seeds()
        _, head = await verify_branch(self._reader, self._branch(branch_id))
        return _anchor(self.keyring, self.session_id, head)

    async def _unremembering_reader(self) -> Reader:
        """A reader that keeps nothing from before, with the seeds the key store holds now
        (an object keeps its seed while it lives; a check must not)."""
        opener = Opener(self.keyring, self.session_id, 0, self._now)
        opener.seeds = await self._seeds.load(refresh=True)
        return Reader(self, opener)

    async def verify_history(self, anchor: str | None = None, branch_id: str | None = None) -> int:
        """Check the whole branch as a chain, and its turn structure where it has one
        (whatever ``on_invalid`` says), and, given an ``anchor`` from :meth:`history_head`,
        that the branch still ends there. Returns how many items it checked; raises
        HistoryTamperedError (or another DecryptionError)."""
        branch = self._branch(branch_id)
        reader = await self._unremembering_reader()
        count, head = await verify_branch(reader, branch)
        source = self._caps.user_turns
        if source is not None:

            def rows() -> Awaitable[list[TurnRow]]:
                return source.get_user_turn_items(branch_id)

            await verified_turns(strict_reader(reader), branch, rows)
        kid = None if anchor is None else anchor_kid(anchor)
        if anchor is not None and (
            kid is None or _anchor(self.keyring, self.session_id, head, kid) != anchor
        ):
            raise HistoryTamperedError(
                "the history no longer ends where the anchor says (rolled back, cut or "
                "rewritten since the anchor was taken)",
                kind="head mismatch",
                branch_id=branch_id,
                session_id=self.session_id,
            )
        return count

    # -- key lifecycle and retention ----------------------------------------------------------

    async def _maintain(
        self, job: maintenance.Job, batch_size: int, progress: Progress | None, dry_run: bool
    ) -> maintenance.MaintenanceResult:
        """Run a maintenance pass; afterwards no cached plaintext of the old state remains."""
        try:
            return await job(self, batch_size=batch_size, progress=progress, dry_run=dry_run)
        finally:
            self._forget_plaintexts()

    async def rotate_keys(
        self, *, batch_size: int = 500, progress: Progress | None = None, dry_run: bool = False
    ) -> dict[str, int]:
        """Re-seal every item not under the primary key id; keeps each item's seal time.

        Idempotent and resumable (each batch commits on its own). Returns counts:
        ``examined``, ``changed`` (re-sealed), ``unchanged``, ``unreadable``.
        """
        return (await self._maintain(maintenance.rotate, batch_size, progress, dry_run)).as_dict()

    async def purge_expired(
        self, *, batch_size: int = 500, progress: Progress | None = None, dry_run: bool = False
    ) -> int:
        """Delete expired items from storage for real; return how many were deleted."""
        job = maintenance.purge_expired
        return (await self._maintain(job, batch_size, progress, dry_run)).changed

    async def encrypt_existing(
        self, *, batch_size: int = 500, progress: Progress | None = None, dry_run: bool = False
    ) -> dict[str, int]:
        """Seal plaintext items and upgrade the SDK's v1 envelopes in place, keeping order.

        One-way: upgraded items are in encmem's format, which the Agents SDK's
        EncryptedSession cannot read.
        """
        job = maintenance.encrypt_existing
        return (await self._maintain(job, batch_size, progress, dry_run)).as_dict()
