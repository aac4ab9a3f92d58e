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
from ._envelope import Opener, seal
from ._items import DEFAULT_MAX_ITEM_BYTES, Item, encode_items
from ._keys import KeyInput, Keyring, as_keyring
from ._options import (
    HISTORY_METHODS,
    check_cache_size,
    check_max_item_bytes,
    check_max_scan_items,
    check_on_invalid,
    check_underlying,
    resolve_session_id,
    ttl_seconds,
)
from ._popping import pop_by_id, pop_generic
from ._protocol import Capabilities, Session, StoredItem, TurnRow
from ._reading import Fetch, OnInvalid, Reader, Window
from ._settings import SessionSettings, resolve_limit
from .errors import TamperedItemError

_REFUSED_ATTRIBUTES = frozenset({"run_compaction"})

Progress = Callable[[int], None]
Stored = Awaitable[list[StoredItem]]


def _accepts(method: Any, name: str) -> bool:
    """Whether ``method`` takes a keyword argument called ``name``."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == name
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        for p in parameters
    )


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
        plaintext_cache: int = 1024,
        max_item_bytes: int | None = DEFAULT_MAX_ITEM_BYTES,
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
        self.keyring = as_keyring(encryption_key)
        self._caps = Capabilities.of(underlying)
        self._forward_wrapper = all(
            _accepts(getattr(underlying, name), "wrapper") for name in HISTORY_METHODS
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
        """Addressed reads of one branch; None when the session has no storage ids."""
        if branch_id is not None:
            addressed = self._caps.branch_addressing
            if addressed is None:
                return None

            def fetch_branch(limit: int | None, before: int | None) -> Stored:
                return addressed.get_stored_items(limit, before_id=before, branch_id=branch_id)

            return fetch_branch
        addressing = self._caps.addressing
        if addressing is None:
            return None

        def fetch(limit: int | None, before: int | None) -> Stored:
            return addressing.get_stored_items(limit, before_id=before)

        return fetch

    def _window(self, branch_id: str | None, wrapper: Any) -> Window:
        """Plain tail reads (``get_items(n)``) of one branch, for sessions without ids."""
        if branch_id is not None:
            branching = self._caps.need(self._caps.branching, "Branching", "branch_id=...")
            return lambda limit: branching.get_items(limit, branch_id=branch_id)
        underlying, kwargs = self.underlying_session, self._kwargs(wrapper)
        return lambda limit: underlying.get_items(limit, **kwargs)

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

    def _seal_all(self, items: list[Any]) -> list[Item]:
        texts = encode_items(items, self.max_item_bytes)
        kid = self.keyring.primary_kid
        key = self.keyring.session_key(kid, self.session_id)
        assert key is not None
        now = int(self.clock())
        return [seal(key, kid, item, text, now) for item, text in zip(items, texts, strict=True)]

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        """Seal and append items in one call to the wrapped session (nothing on bad input)."""
        envelopes = self._seal_all(items)
        if envelopes:
            await self.underlying_session.add_items(envelopes, **self._kwargs(wrapper))

    async def get_items(
        self, limit: int | None = None, branch_id: str | None = None, *, wrapper: Any = None
    ) -> list[Any]:
        """The readable, unexpired items, oldest first; ``limit`` counts readable items.

        ``branch_id`` reads another branch of a backend with the Branching capability.
        """
        if branch_id is not None:
            self._caps.need(self._caps.branching, "Branching", "get_items(branch_id=...)")
        fetch = self._fetcher(branch_id)
        effective = resolve_limit(limit, self.session_settings)
        if effective == 0:
            return []
        now = self.clock()
        if fetch is not None:
            if effective is None:
                stored = await fetch(None, None)
                return self._reader.open_all(stored, now, self._plaintext_cache)
            return await self._reader.tail_by_id(fetch, effective, now)
        window = self._window(branch_id, wrapper)
        if effective is None:
            stored = [StoredItem(-1, obj) for obj in await window(None)]
            return self._reader.open_all(stored, now, self._plaintext_cache)
        return await self._reader.tail_by_window(window, effective, now)

    async def pop_item(self, *, wrapper: Any = None) -> Any | None:
        """Remove and return the newest readable item.

        Expired items met on the way are discarded. An item that fails authentication is
        never deleted: it raises (or, with ``on_invalid='skip'``, is stepped over and kept).
        """
        addressing = self._caps.addressing
        fetch = self._fetcher(None)
        if addressing is not None and fetch is not None:
            return await pop_by_id(self._reader, fetch, addressing.delete_stored_items)
        return await pop_generic(self._reader, self.underlying_session, self._kwargs(wrapper))

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Delete every item of the session in the wrapped store."""
        await self.underlying_session.clear_session(**self._kwargs(wrapper))
        self._forget_plaintexts()

    # -- content-aware queries of branching backends -----------------------------------------

    async def _turn_rows(self, branch_id: str | None) -> list[tuple[TurnRow, Item]]:
        source = self._caps.need(self._caps.user_turns, "UserTurnSource", "turn queries")
        rows = await source.get_user_turn_items(branch_id)
        now = self.clock()
        opened_rows: list[tuple[TurnRow, Item]] = []
        for row in rows:
            opened = self._reader.open(row.item, now, None, None)
            if opened is None:
                continue
            if opened.item.get("role") != "user":  # the structure row is clear text: check it
                forged = TamperedItemError(
                    f"turn {row.turn} is listed as a user turn, but its sealed item is not a "
                    "user message (the structure rows were edited)"
                )
                self._reader.refuse(forged, None, row.message_id, "skipped")
                continue
            opened_rows.append((row, opened.item))
        return opened_rows

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
        branching = self._caps.need(
            self._caps.branching, "Branching", "create_branch_from_content()"
        )
        return await branching.create_branch_from_turn(turn, branch_name)

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
