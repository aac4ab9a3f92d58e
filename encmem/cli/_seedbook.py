"""Each session's seeds, read from its key store before the command opens its items."""

from __future__ import annotations

from .._keys import Keyring
from .._protocol import KeyStore, SessionStore
from .._seeds import SeedMap, open_seed
from ..errors import DecryptionError


class SeedBook:
    """Seeds by session, for the command's passes over a store.

    A session's seeds come from the key store given (``--key-store``), or else from the
    session store itself when it keeps seeds. A seed that does not open (a key id the keys
    lack) leaves the session's seeded items unopened; they are reported as such.
    """

    def __init__(self, keyring: Keyring | None, key_store: KeyStore | None = None) -> None:
        self.keyring = keyring
        self.key_store = key_store
        self._seeds: dict[str, SeedMap | None] = {}

    async def load(self, store: SessionStore, session_id: str) -> SeedMap | None:
        """The session's seeds (None: no key store for it), read once."""
        if session_id in self._seeds:
            return self._seeds[session_id]
        seeds: SeedMap | None = None
        source = self.key_store
        if source is None:
            session = store.session(session_id)
            source = session if isinstance(session, KeyStore) else None
        if source is not None and self.keyring is not None:
            stored = await source.get_seed(session_id)
            seeds = {}
            if stored is not None:  # a seed that does not open: its items say why
                try:
                    seeds[stored.seed_id] = open_seed(self.keyring, session_id, stored)
                except DecryptionError as exc:
                    seeds[stored.seed_id] = exc
        self._seeds[session_id] = seeds
        return seeds

    def get(self, session_id: str) -> SeedMap | None:
        return self._seeds.get(session_id)
