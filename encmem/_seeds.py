"""Per-session seeds for crypto-shredding: made at random, kept sealed in a key store.

A session's key is derived from the master key with its seed as HKDF's salt, so destroying
the seed makes every copy of the session's items, wherever they are (backups, replicas, the
WAL, free pages), undecryptable even with the master key. The key store holds the seed
sealed (Fernet) under a key derived from the master key and the session id, so a key store
that leaks without the master key reveals no seed, and a seed row moved to another session
does not open.
"""

from __future__ import annotations

import os
import re

from ._keys import Keyring
from ._protocol import KeyStore, StoredSeed
from .errors import DecryptionError, TamperedItemError, UnknownKeyIdError

SEED_BYTES = 32
_SHOWABLE_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")

SeedMap = dict[str, "bytes | DecryptionError"]
"""Seed id -> the seed, or why it does not open (items sealed with it raise that)."""


def new_seed_id() -> str:
    """A short random id for a seed, carried in the clear by the envelopes sealed with it."""
    return os.urandom(8).hex()


def seal_seed(keyring: Keyring, session_id: str, seed_id: str, seed: bytes) -> StoredSeed:
    """The seed sealed under the keyring's primary key, as a key store keeps it."""
    kid = keyring.primary_kid
    key = keyring.seed_key(kid, session_id)
    assert key is not None
    return StoredSeed(seed_id, kid, key.seal(seed_id.encode("ascii") + seed, 0))


def open_seed(keyring: Keyring, session_id: str, stored: StoredSeed) -> bytes:
    """The seed inside a stored one; an error naming the key store when it does not open."""
    key = keyring.seed_key(stored.kid, session_id)
    kid = stored.kid if _SHOWABLE_KID.fullmatch(stored.kid) else None
    if key is None:
        raise UnknownKeyIdError(
            f"the session's seed is sealed under key id {kid or '<not a valid key id>'!r}, "
            "which the keyring does not hold; add that key to the Keyring to read it",
            kid=kid,
        )
    opened = key.open(stored.sealed)
    expected = stored.seed_id.encode("ascii")
    if opened is None or not opened[0].startswith(expected) or len(opened[0]) != 16 + SEED_BYTES:
        raise TamperedItemError(
            f"the session's seed failed authentication under key id {kid!r} (wrong key for "
            "this id, or the seed row was edited or moved from another session); the items "
            "sealed with it cannot be altered or moved unnoticed, but cannot be read either",
            kid=kid,
        )
    return opened[0][len(expected) :]


def _try_open(seeds: Seeds, stored: StoredSeed) -> bytes | DecryptionError:
    try:
        return open_seed(seeds._keyring, seeds.session_id, stored)
    except DecryptionError as exc:
        return exc


class Seeds:
    """One session's seeds as an EncryptedSession uses them: loaded once, made on first write.

    The seed stays in this object's memory until the session is closed: a copy of the store
    restored after an erase is still refused by every new reader, which asks the key store.
    """

    __slots__ = (
        "_current",
        "_keyring",
        "_loaded",
        "_opened",
        "_sealed",
        "_written",
        "session_id",
        "store",
    )

    def __init__(self, store: KeyStore | None, keyring: Keyring, session_id: str) -> None:
        self.store = store
        self._keyring = keyring
        self.session_id = session_id
        self._loaded = False
        self._current: tuple[str, bytes | DecryptionError] | None = None
        self._opened: tuple[StoredSeed, bytes] | None = None
        """The stored seed opened last, and its seed: the same row again needs no decryption."""
        self._written: tuple[str, bytes] | None = None
        """The session's seed as this object last found it sealed under the primary key (by
        a write, or a load): what a write that checks the seed itself may use unasked."""
        self._sealed: str | None = None
        """The stored, sealed form of that seed."""

    def _open(self, stored: StoredSeed) -> bytes:
        if self._opened is not None and self._opened[0] == stored:
            return self._opened[1]
        seed = open_seed(self._keyring, self.session_id, stored)
        self._opened = (stored, seed)
        return seed

    async def load(self, refresh: bool = False) -> SeedMap | None:
        """Seed id -> seed (at most one), None when there is no key store.

        A seed this keyring cannot open maps to the reason: its items raise it. With
        ``refresh`` the key store is asked again (a reader met a seed id it did not know:
        another process made the seed since).
        """
        if self.store is None:
            return None
        if refresh or not self._loaded:
            stored = await self.store.get_seed(self.session_id)
            self._current = None if stored is None else (stored.seed_id, _try_open(self, stored))
            self._loaded = True
            if stored is not None and stored.kid == self._keyring.primary_kid:
                opened = self._current[1] if self._current is not None else None
                if isinstance(opened, bytes):  # a write may use it: it checks the seed itself
                    self._written, self._sealed = (stored.seed_id, opened), stored.sealed
        return dict([self._current]) if self._current is not None else {}

    async def for_writing(self, remembered: bool = False) -> tuple[str, bytes] | None:
        """The seed new items are sealed with, made and kept now if the session has none.

        Asked of the key store at every write, so that a writer never seals new items under
        a seed another process has destroyed since (an erase, a clear); except, with
        ``remembered``, when this object already knows the session's seed: the caller then
        has the write itself check that it is still the session's (the key store is the
        session store, and checks it in the write's transaction).
        """
        if self.store is None:
            return None
        if remembered and self._written is not None:
            return self._written
        stored = await self.store.get_seed(self.session_id)
        if stored is None:
            seed_id, seed = new_seed_id(), os.urandom(SEED_BYTES)
            sealed = seal_seed(self._keyring, self.session_id, seed_id, seed)
            stored = await self.store.put_seed(self.session_id, sealed)
        seed = self._open(stored)  # a writer must open it
        self._current, self._loaded = (stored.seed_id, seed), True
        if stored.kid != self._keyring.primary_kid:
            # A writer holds the primary key: the seed follows it, so that readers holding
            # only the new key read what is written from now on.
            resealed = seal_seed(self._keyring, self.session_id, stored.seed_id, seed)
            await self.store.replace_seed(self.session_id, resealed)
            stored = resealed
        self._written, self._sealed = (stored.seed_id, seed), stored.sealed
        return self._written

    def stored_form(self, seed_id: str) -> tuple[str, str] | None:
        """(seed id, sealed form) of the stored seed ``seed_id`` this object writes under, for
        a write that checks the seed in its own transaction: the whole stored row, so that
        a row put back under the same id with other content does not pass for it."""
        if self._written is None or self._written[0] != seed_id or self._sealed is None:
            return None
        return seed_id, self._sealed

    async def is_current(self, seed_id: str) -> bool:
        """Whether ``seed_id`` is still the session's seed, as the key store says now: the
        very row this object opened (its id and sealed form)."""
        assert self.store is not None
        stored = await self.store.get_seed(self.session_id)
        return stored is not None and (stored.seed_id, stored.sealed) == self.stored_form(seed_id)

    async def reseal(self) -> None:
        """Seal the session's seed under the keyring's primary key (rotation), same seed."""
        if self.store is None:
            return
        stored = await self.store.get_seed(self.session_id)
        if stored is None or stored.kid == self._keyring.primary_kid:
            return
        seed = open_seed(self._keyring, self.session_id, stored)
        resealed = seal_seed(self._keyring, self.session_id, stored.seed_id, seed)
        await self.store.replace_seed(self.session_id, resealed)

    def forget(self) -> None:
        """Ask the key store again next time (after an erase or a clear)."""
        self._loaded = False
        self._current = self._opened = self._written = None
        self._sealed = None
