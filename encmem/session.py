"""EncryptedSession: seals every item of any session, drops expired ones, never loses data.

It talks to the wrapped session only through the Session protocol and the optional
capabilities of :mod:`encmem.protocol`; it knows nothing about storage.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from . import turns
from .envelope import Opened, Opener, seal
from .errors import DecryptionError, EncmemError, UnsupportedOperation
from .items import Item, check_session_id, encode_items
from .keys import KeyInput, Keyring, as_keyring
from .protocol import ItemAddressing, Session, StoredItem, TurnRow, UserTurnSource, require
from .settings import SessionSettings, resolve_limit

logger = logging.getLogger("encmem")

OnInvalid = Literal["raise", "skip"]
_HISTORY_METHODS = ("get_items", "add_items", "pop_item", "clear_session")
_REFUSED_ATTRIBUTES = frozenset({"run_compaction"})
_SERVER_SIDE_SESSIONS = frozenset({"OpenAIConversationsSession"})
_MAX_WINDOW = 1024


class ScanBudgetExceeded(EncmemError, RuntimeError):
    """``max_scan_items`` ran out before the requested number of readable items was found."""


def _ttl_seconds(ttl: int | float | timedelta | None) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"ttl must be seconds, a timedelta or None, not {type(ttl).__name__}")
    if not seconds > 0:
        raise ValueError(f"ttl must be positive (got {seconds} s); pass None for no expiry")
    return seconds


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
    default, make reads raise :class:`~encmem.errors.DecryptionError`.
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
    ) -> None:
        if underlying_session is None:
            raise TypeError("EncryptedSession needs underlying_session=<the session to wrap>")
        if encryption_key is None:
            raise TypeError(
                "EncryptedSession needs encryption_key=<a key from encmem.generate_key() "
                "or a Keyring>"
            )
        kind = type(underlying_session).__name__
        if any(cls.__name__ in _SERVER_SIDE_SESSIONS for cls in type(underlying_session).__mro__):
            raise UnsupportedOperation(
                f"{kind} keeps items on the model provider's servers, where the model must read "
                "them in the clear; it cannot be wrapped in EncryptedSession. Use a local store "
                "(encmem.backends.SQLiteSession, SQLAlchemySession) to encrypt history"
            )
        for name in _HISTORY_METHODS:
            if not callable(getattr(underlying_session, name, None)):
                raise TypeError(f"underlying_session has no {name}() method; it is not a Session")
        underlying_id = getattr(underlying_session, "session_id", None)
        if session_id is None:
            session_id = underlying_id
        if session_id is None:
            raise ValueError("session_id is missing: pass it, or wrap a session that has one")
        check_session_id(session_id)
        if underlying_id is not None and underlying_id != session_id:
            raise ValueError(
                f"session_id {session_id!r} differs from the underlying session's "
                f"{underlying_id!r}; the keys would not match the stored items. Pass the same id "
                "to both, or leave session_id out"
            )
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', not {on_invalid!r}")
        if max_scan_items is not None and (
            isinstance(max_scan_items, bool)
            or not isinstance(max_scan_items, int)
            or max_scan_items <= 0
        ):
            raise ValueError("max_scan_items must be a positive int or None")
        self.session_id: str = session_id
        self.underlying_session = underlying_session
        if (
            isinstance(plaintext_cache, bool)
            or not isinstance(plaintext_cache, int)
            or plaintext_cache < 0
        ):
            raise ValueError("plaintext_cache must be a non-negative int (0 disables it)")
        self._plaintext_cache = plaintext_cache
        self.keyring = as_keyring(encryption_key)
        self.ttl = _ttl_seconds(ttl)
        self.max_scan_items = max_scan_items
        self.on_invalid: OnInvalid = on_invalid
        self.clock = clock
        # A runtime Protocol check walks every attribute: do it once, here.
        self._addressable: ItemAddressing | None = (
            underlying_session if isinstance(underlying_session, ItemAddressing) else None
        )
        self._forward_wrapper = all(
            _accepts(getattr(underlying_session, name), "wrapper") for name in _HISTORY_METHODS
        )

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The keys this session seals with (primary) and opens with (all)."""
        return self._opener.keyring

    @keyring.setter
    def keyring(self, value: Keyring) -> None:
        # A new keyring starts a new opener: no cached key or plaintext outlives the old one.
        self._opener = Opener(as_keyring(value), self.session_id, self._plaintext_cache, self._now)

    def _now(self) -> float:
        return self.clock()

    def _forget_plaintexts(self) -> None:
        self._opener = Opener(
            self._opener.keyring, self.session_id, self._plaintext_cache, self._now
        )

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

    def _addressing(self) -> ItemAddressing | None:
        return self._addressable

    def close(self) -> Any:
        """Close the wrapped session if it can be closed (returns what its close returns)."""
        closer = getattr(self.underlying_session, "close", None)
        return closer() if callable(closer) else None

    async def __aenter__(self) -> EncryptedSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        result = self.close()
        if inspect.isawaitable(result):
            await result

    # -- sealing and opening ----------------------------------------------------------------

    def _seal_all(self, items: list[Any]) -> list[Item]:
        texts = encode_items(items)
        kid = self.keyring.primary_kid
        fernet = self.keyring.session_key(kid, self.session_id)
        assert fernet is not None
        now = int(self.clock())
        return [seal(fernet, kid, item, text, now) for item, text in zip(items, texts, strict=True)]

    def _expired(self, opened: Opened, now: float) -> bool:
        return self.ttl is not None and opened.sealed_at + self.ttl < now

    def _located(
        self, exc: DecryptionError, position: int | None, item_id: int | None
    ) -> DecryptionError:
        where = f"session {self.session_id!r}"
        if position is not None:
            where += f", item {position} from the newest"
        if item_id is not None:
            where += f" (storage id {item_id})"
        message = (
            f"{exc} [{where}]. The item was left in storage; read it with the key it was "
            "sealed under, or pass on_invalid='skip' to read past it"
        )
        located = type(exc)(message, session_id=self.session_id, position=position, item_id=item_id)
        located.__cause__ = exc.__cause__
        return located

    def _open(
        self,
        obj: object,
        now: float,
        position: int | None,
        item_id: int | None,
        remember: bool = True,
    ) -> Opened | None:
        """The opened item; None when it expired or (in skip mode) cannot be read."""
        try:
            opened = self._opener.open(obj, remember)
        except DecryptionError as exc:
            located = self._located(exc, position, item_id)
            if self.on_invalid == "raise":
                raise located from None
            logger.warning("skipped an unreadable item: %s", located.args[0].split(". The item")[0])
            return None
        return None if self._expired(opened, now) else opened

    # -- the Session protocol ---------------------------------------------------------------

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        """Seal and append items in one call to the wrapped session (nothing on bad input)."""
        envelopes = self._seal_all(items)
        if envelopes:
            await self.underlying_session.add_items(envelopes, **self._kwargs(wrapper))

    async def get_items(
        self, limit: int | None = None, branch_id: str | None = None, *, wrapper: Any = None
    ) -> list[Any]:
        """The readable, unexpired items, oldest first; ``limit`` counts readable items.

        ``branch_id`` reads another branch of a branching backend (AdvancedSQLiteSession).
        """
        effective = resolve_limit(limit, self.session_settings)
        if effective == 0:
            return []
        now = self.clock()
        addressing = self._addressing()
        branch: dict[str, Any] = {} if branch_id is None else {"branch_id": branch_id}
        if (
            branch
            and addressing is None
            and not _accepts(self.underlying_session.get_items, "branch_id")
        ):
            raise UnsupportedOperation(
                f"branch_id needs a branching backend; {type(self.underlying_session).__name__}"
                ".get_items takes no branch_id"
            )
        if effective is None:
            return self._open_all(await self._read_all(addressing, wrapper, branch), now)
        if addressing is not None:
            return await self._tail_by_id(addressing, effective, now, branch)
        return await self._tail_by_window(effective, now, wrapper, branch)

    async def _read_all(
        self, addressing: ItemAddressing | None, wrapper: Any, branch: dict[str, Any]
    ) -> list[StoredItem]:
        if addressing is not None:
            stored = await addressing.get_stored_items(None, **branch)
        else:
            raw = await self.underlying_session.get_items(None, **self._kwargs(wrapper), **branch)
            stored = [StoredItem(-1, obj) for obj in raw]
        if self.max_scan_items is not None and len(stored) > self.max_scan_items:
            raise ScanBudgetExceeded(
                f"the history has {len(stored)} items, more than max_scan_items="
                f"{self.max_scan_items}; raise the budget or purge expired items"
            )
        return stored

    def _open_all(self, stored: list[StoredItem], now: float) -> list[Item]:
        items: list[Item] = []
        total = len(stored)
        cached_from = total - self._plaintext_cache  # only the newest items are worth caching
        for index, (item_id, obj) in enumerate(stored):
            opened = self._open(
                obj, now, total - index, item_id if item_id >= 0 else None, index >= cached_from
            )
            if opened is not None:
                items.append(opened.item)
        return items

    def _charge(self, scanned: int) -> None:
        if self.max_scan_items is not None and scanned > self.max_scan_items:
            raise ScanBudgetExceeded(
                f"reading the newest items scanned more than max_scan_items={self.max_scan_items} "
                "stored items; raise the budget or purge expired items"
            )

    async def _tail_by_id(
        self, source: ItemAddressing, limit: int, now: float, branch: dict[str, Any]
    ) -> list[Item]:
        """Walk back from the newest item by storage id; each row is read once."""
        newest_first: list[Item] = []
        before: int | None = None
        window = limit
        scanned = 0
        while True:
            batch = await source.get_stored_items(window, before_id=before, **branch)
            for index in range(len(batch) - 1, -1, -1):
                scanned += 1
                item_id, obj = batch[index]
                opened = self._open(obj, now, scanned, item_id)
                if opened is not None:
                    newest_first.append(opened.item)
                    if len(newest_first) == limit:
                        return newest_first[::-1]
            self._charge(scanned)
            if len(batch) < window:
                return newest_first[::-1]
            before = batch[0].id
            window = min(window * 2, _MAX_WINDOW)

    async def _tail_by_window(
        self, limit: int, now: float, wrapper: Any, branch: dict[str, Any]
    ) -> list[Item]:
        """For sessions without storage ids: widen a tail window until it holds enough."""
        window = limit
        while True:
            raw = await self.underlying_session.get_items(window, **self._kwargs(wrapper), **branch)
            self._charge(len(raw))
            newest_first: list[Item] = []
            for offset, obj in enumerate(reversed(raw), start=1):
                opened = self._open(obj, now, offset, None)
                if opened is not None:
                    newest_first.append(opened.item)
                    if len(newest_first) == limit:
                        return newest_first[::-1]
            if len(raw) < window:
                return newest_first[::-1]
            window *= 2

    async def pop_item(self, *, wrapper: Any = None) -> Any | None:
        """Remove and return the newest readable item.

        Expired items met on the way are discarded. An item that fails authentication is
        never deleted: it raises (or, with ``on_invalid='skip'``, is stepped over and kept).
        """
        addressing = self._addressing()
        if addressing is not None:
            return await self._pop_by_id(addressing)
        return await self._pop_generic(wrapper)

    async def _pop_by_id(self, source: ItemAddressing) -> Item | None:
        before: int | None = None
        position = 0
        while True:
            batch = await source.get_stored_items(1, before_id=before)
            if not batch:
                return None
            item_id, obj = batch[0]
            position += 1
            now = self.clock()
            try:
                opened = self._opener.open(obj)
            except DecryptionError as exc:
                located = self._located(exc, position, item_id)
                if self.on_invalid == "raise":
                    raise located from None
                logger.warning(
                    "pop_item stepped over an unreadable item: %s",
                    located.args[0].split(". The item")[0],
                )
                before = item_id
                continue
            if await source.delete_stored_items([item_id]) == 0:
                before, position = None, 0  # another writer took it first; start again
                continue
            self._opener.forget(obj)
            if not self._expired(opened, now):
                return opened.item

    async def _pop_generic(self, wrapper: Any) -> Item | None:
        """Pop from a session without storage ids: look at the newest item before taking it."""
        if self.on_invalid == "skip":
            return await self._pop_generic_skipping(wrapper)
        underlying, kwargs = self.underlying_session, self._kwargs(wrapper)
        while True:
            newest = await underlying.get_items(1, **kwargs)
            if not newest:
                return None
            try:
                self._opener.open(newest[-1])  # an unreadable item raises here, still stored
            except DecryptionError as exc:
                raise self._located(exc, 1, None) from None
            obj = await underlying.pop_item(**kwargs)
            if obj is None:
                return None
            self._opener.forget(obj)
            try:
                opened = self._opener.open(obj, remember=False)
            except DecryptionError as exc:
                # Another writer slipped an unreadable item in between: put it back.
                await self._restore([obj], kwargs, exc)
                raise self._located(exc, 1, None) from None
            if not self._expired(opened, self.clock()):
                return opened.item

    async def _pop_generic_skipping(self, wrapper: Any) -> Item | None:
        """Skip mode without storage ids: unreadable items popped on the way are put back."""
        underlying, kwargs = self.underlying_session, self._kwargs(wrapper)
        kept: list[Any] = []
        first_error: DecryptionError | None = None
        try:
            while True:
                obj = await underlying.pop_item(**kwargs)
                if obj is None:
                    return None
                try:
                    opened = self._opener.open(obj, remember=False)
                except DecryptionError as exc:
                    located = self._located(exc, len(kept) + 1, None)
                    first_error = first_error or located
                    kept.insert(0, obj)
                    logger.warning(
                        "pop_item stepped over an unreadable item: %s",
                        located.args[0].split(". The item")[0],
                    )
                    continue
                self._opener.forget(obj)
                if not self._expired(opened, self.clock()):
                    return opened.item
        finally:
            if kept:
                assert first_error is not None
                await self._restore(kept, kwargs, first_error)

    async def _restore(
        self, kept: list[Any], kwargs: dict[str, Any], cause: DecryptionError
    ) -> None:
        """Put unreadable items back at the end, in order; say so loudly if that fails."""
        try:
            await self.underlying_session.add_items(kept, **kwargs)
        except Exception as exc:
            error = DecryptionError(
                f"pop_item took {len(kept)} unreadable item(s) off session {self.session_id!r} "
                f"and could not put them back ({type(exc).__name__}); they are held, as stored, "
                "in this exception's 'items' attribute",
                session_id=self.session_id,
            )
            error.items = kept  # type: ignore[attr-defined]
            raise error from cause

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Delete every item of the session in the wrapped store."""
        await self.underlying_session.clear_session(**self._kwargs(wrapper))
        self._forget_plaintexts()

    # -- content-aware queries of branching backends -----------------------------------------

    async def _turn_rows(self, branch_id: str | None) -> list[tuple[TurnRow, Item]]:
        source: UserTurnSource = require(self.underlying_session, UserTurnSource, "turn queries")
        rows = await source.get_user_turn_items(branch_id)
        now = self.clock()
        opened_rows: list[tuple[TurnRow, Item]] = []
        for row in rows:
            opened = self._open(row.item, now, None, None)
            if opened is not None:
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
        branch: str = await self.underlying_session.create_branch_from_turn(  # type: ignore[attr-defined]
            turn, branch_name
        )
        return branch

    # -- key lifecycle and retention ----------------------------------------------------------

    async def _maintain(self, job: Any, batch_size: int, progress: Any, dry_run: bool) -> Any:
        """Run a maintenance pass; afterwards no cached plaintext of the old state remains."""
        try:
            return await job(self, batch_size=batch_size, progress=progress, dry_run=dry_run)
        finally:
            self._forget_plaintexts()

    async def rotate_keys(
        self,
        *,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
        dry_run: bool = False,
    ) -> dict[str, int]:
        """Re-seal every item not under the primary key id; keeps each item's seal time.

        Idempotent and resumable (each batch commits on its own). Returns counts:
        ``examined``, ``changed`` (re-sealed), ``unchanged``, ``unreadable``.
        """
        from .maintenance import rotate

        result: dict[str, int] = (
            await self._maintain(rotate, batch_size, progress, dry_run)
        ).as_dict()
        return result

    async def purge_expired(
        self,
        *,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete expired items from storage for real; return how many were deleted."""
        from .maintenance import purge_expired

        deleted: int = (await self._maintain(purge_expired, batch_size, progress, dry_run)).changed
        return deleted

    async def encrypt_existing(
        self,
        *,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
        dry_run: bool = False,
    ) -> dict[str, int]:
        """Seal plaintext items and upgrade the SDK's v1 envelopes in place, keeping order."""
        from .maintenance import encrypt_existing

        result: dict[str, int] = (
            await self._maintain(encrypt_existing, batch_size, progress, dry_run)
        ).as_dict()
        return result
