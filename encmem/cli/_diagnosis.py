"""Why stored items do not open, sorted by cause, so that each is reported as what it is.

A key id under which no item of the store authenticates has the wrong key: one key problem,
reported once, as is a key id the given keys lack. An item that fails under a key which
authenticates others was altered or moved: a finding about that item. Plaintext and rows
that hold no item are the store's content, not key problems.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .._envelope import (
    CHAINED_VERSIONS,
    SDK_FORMAT_VERSION,
    Opened,
    is_envelope,
    looks_sealed,
    open_envelope,
)
from .._items import CorruptRow, Item, encode_item
from .._keys import SDK_KID, Keyring
from .._protocol import KeyStore, SessionStore
from .._seeds import SeedMap
from ..errors import DecryptionError, InvalidItemError, SessionErasedError, UnknownKeyIdError
from ._seedbook import SeedBook
from ._walk import Stored, distinct_items, kid_label

EXIT_FINDINGS = 1
EXIT_KEYS = 3
EXIT_STORE = 4
_UNSHOWN = "<a key id that is not a valid one>"
ERASED = "erased (SessionErasedError)"
NOT_CHAINED = "not-chained (run encmem rotate)"
NOT_SHREDDABLE = "not-shreddable (run encmem rotate)"


@dataclass
class KeyUse:
    """The items of the store sealed under one key id, and how many of them authenticate."""

    authentic: int = 0
    unauthentic: list[dict[str, Any]] = field(default_factory=list)
    missing: int = 0
    sessions: list[str] = field(default_factory=list)

    def seen_in(self, session_id: str) -> None:
        if not self.sessions or self.sessions[-1] != session_id:
            self.sessions.append(session_id)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _verb(count: int) -> str:
    return "is" if count == 1 else "are"


def _are(count: int, noun: str) -> str:
    return f"{plural(count, noun)} {_verb(count)}"


def sessions_text(sessions: list[str]) -> str:
    """Session ids for a message: repr() escapes control characters, three at most."""
    named = ", ".join(repr(s) for s in sessions[:3])
    more = f" and {len(sessions) - 3} more" if len(sessions) > 3 else ""
    return f"{'session' if len(sessions) == 1 else 'sessions'} {named}{more}"


class Diagnosis:
    """Opens stored objects with a keyring and records, per cause, those that do not open.

    Findings about single items go to ``findings`` in the order met; key problems are
    settled by :meth:`settle` once every item was seen.
    """

    def __init__(
        self,
        keyring: Keyring,
        findings: list[dict[str, Any]] | None = None,
        key_store: KeyStore | None = None,
    ) -> None:
        self.keyring = keyring
        self.book = SeedBook(keyring, key_store)
        self.findings = findings if findings is not None else []
        self.kids: dict[str | None, KeyUse] = {}
        self.counts = {"plaintext": 0, "corrupt": 0, "altered": 0, "unsealable": 0}
        self.items = 0
        self.erased: Counter[str] = Counter()
        self._altered_alone = 0

    def open(self, session_id: str, stored: Stored) -> Opened | None:
        """Open one stored object; None (and the cause recorded) when it does not open."""
        branch, item_id, obj = stored
        place = {"session_id": session_id, "branch_id": branch, "storage_id": item_id}
        self.items += 1
        if isinstance(obj, CorruptRow):
            self.counts["corrupt"] += 1
            self.findings.append({**place, "problem": f"corrupt-row ({obj.reason})"})
            return None
        if not is_envelope(obj) and not looks_sealed(obj):
            if not sealable(obj):  # `encmem encrypt` would refuse it: not advised
                self.unsealable(session_id, stored, counted=True)
                return None
            self.counts["plaintext"] += 1
            self.findings.append({**place, "problem": "plaintext"})
            return None
        kid = kid_label(obj.get("kid"))
        try:
            opened = open_envelope(obj, self.keyring, session_id, seeds=self.book.get(session_id))
        except UnknownKeyIdError:
            use = self._use(kid, session_id)
            use.missing += 1
            return None
        except SessionErasedError:  # its seed was destroyed: no key opens it, none is wrong
            self.erased[session_id] += 1
            return None
        except DecryptionError as exc:
            finding = {**place, "problem": type(exc).__name__, "kid": kid}
            if kid is not None and self._held(obj, kid) and not self._authentic(obj, session_id):
                self._use(kid, session_id).unauthentic.append(finding)
            else:  # damaged, or authentic but altered around its token: about this item only
                if kid is not None and self._held(obj, kid):
                    self._use(kid, session_id).authentic += 1
                self._altered_alone += 1
            self.findings.append(finding)
            return None
        self._use(opened.kid, session_id).authentic += 1
        return opened

    def unsealable(self, session_id: str, stored: Stored, *, counted: bool = False) -> None:
        """Record a plaintext item that cannot be sealed (it cannot be stored as JSON text)."""
        self.items += 0 if counted else 1
        self.counts["unsealable"] += 1
        branch, item_id, _ = stored
        place = {"session_id": session_id, "branch_id": branch, "storage_id": item_id}
        self.findings.append({**place, "problem": "unsealable-plaintext"})

    def _use(self, kid: str | None, session_id: str) -> KeyUse:
        use = self.kids.setdefault(kid, KeyUse())
        use.seen_in(session_id)
        return use

    def _held(self, obj: dict[str, Any], kid: str) -> bool:
        version = obj.get("v")
        if version == SDK_FORMAT_VERSION and type(version) is int:
            return kid == SDK_KID
        return version in CHAINED_VERSIONS and type(version) is int and kid in self.keyring

    def _authentic(self, obj: dict[str, Any], session_id: str) -> bool:
        return token_authenticates(self.keyring, obj, session_id, self.book.get(session_id))

    async def vouch(self, store: SessionStore) -> None:
        """For a part of the store (one session): a key id whose items here all fail, yet
        under which another item of the store authenticates, has the right key; its failures
        here are about those items (moved or altered). Stops once each such id is settled."""
        suspects = set(self.wrong_keys())
        if not suspects:
            return
        async for session_id, (_, _, obj) in distinct_items(store, self.book):
            if isinstance(obj, CorruptRow) or not is_envelope(obj):
                continue
            kid = kid_label(obj.get("kid"))
            if kid is None or kid not in suspects:
                continue
            if self._held(obj, kid) and self._authentic(obj, session_id):
                self.kids[kid].authentic += 1
                suspects.discard(kid)
                if not suspects:
                    return

    # -- after every item was seen --------------------------------------------------------

    def wrong_keys(self) -> dict[str | None, KeyUse]:
        return {k: u for k, u in self.kids.items() if u.unauthentic and not u.authentic}

    def missing_keys(self) -> dict[str | None, KeyUse]:
        return {k: u for k, u in self.kids.items() if u.missing}

    def settle(self) -> bool:
        """Replace the item findings a wrong key explains by one finding per key id, add one
        per missing key id; True when there is a key problem."""
        wrong, missing = self.wrong_keys(), self.missing_keys()
        explained = {id(f) for use in wrong.values() for f in use.unauthentic}
        self.findings[:] = [f for f in self.findings if id(f) not in explained]
        for kid, use in wrong.items():
            self.findings.append(_key_finding("wrong-key", kid, len(use.unauthentic), use))
        for kid, use in missing.items():
            self.findings.append(_key_finding("missing-key", kid, use.missing, use))
        for session_id, count in self.erased.items():
            self.findings.append(session_finding(session_id, ERASED, count))
        # Failures under a key that authenticates other items: those items were altered.
        under_right_keys = sum(len(u.unauthentic) for u in self.kids.values() if u.authentic)
        self.counts["altered"] = self._altered_alone + under_right_keys
        return bool(wrong or missing)

    def causes(self) -> list[str]:
        """One phrase per cause found (call :meth:`settle` first), each with what to do."""
        phrases = []
        for kid, use in self.missing_keys().items():
            phrases.append(
                f"{plural(use.missing, 'item')} in {sessions_text(use.sessions)} "
                f"{_verb(use.missing)} sealed under key id {_kid_text(kid)}, for which no key "
                "was given (add it to the keys)"
            )
        for kid, use in self.wrong_keys().items():
            phrases.append(
                f"{plural(len(use.unauthentic), 'item')} in {sessions_text(use.sessions)} "
                f"{_verb(len(use.unauthentic))} sealed under key id {_kid_text(kid)}, and the "
                "key given for that id opens none of them: it is the wrong key for that id"
            )
        if self.erased:
            erased = sum(self.erased.values())
            phrases.append(
                f"{plural(erased, 'item')} in {sessions_text(list(self.erased))} "
                f"{_verb(erased)} sealed under a seed the key store no longer holds: the "
                "session was erased, and these are leftovers or a restored copy that nothing "
                "can decrypt (or the key store given is not the one the session uses)"
            )
        count = self.counts
        if count["altered"]:
            one = count["altered"] == 1
            phrases.append(
                f"{plural(count['altered'], 'item')} {'fails' if one else 'fail'} "
                "authentication (altered, damaged, or moved from another session; "
                "`encmem verify` lists them)"
            )
        if count["plaintext"]:
            phrases.append(
                f"{_are(count['plaintext'], 'item')} plaintext, never sealed (`encmem encrypt` "
                "seals plaintext items)"
            )
        if count["unsealable"]:
            one = count["unsealable"] == 1
            phrases.append(
                f"{plural(count['unsealable'], 'plaintext item')} cannot be sealed: "
                f"{'it holds' if one else 'they hold'} a value that cannot be stored as JSON "
                "text, so `encmem encrypt` cannot seal it either (correct or remove such items)"
            )
        if count["corrupt"]:
            one = count["corrupt"] == 1
            phrases.append(
                f"{plural(count['corrupt'], 'stored row')} {'holds' if one else 'hold'} no "
                "readable item (`encmem verify` lists them)"
            )
        return phrases

    def unopened(self) -> int:
        """How many items did not open, whatever the cause (after :meth:`settle`)."""
        keyless = sum(len(u.unauthentic) for u in self.wrong_keys().values())
        keyless += sum(u.missing for u in self.kids.values())
        return keyless + sum(self.counts.values()) + sum(self.erased.values())

    def exit_code(self) -> int:
        """Keys (missing, wrong) and authentication failures: 3; store content alone: 4."""
        if self.missing_keys() or self.wrong_keys() or self.counts["altered"]:
            return EXIT_KEYS
        return EXIT_STORE


def sealable(obj: Item) -> bool:
    """Whether a plaintext item can be sealed (encoded as the JSON text a token holds)."""
    try:
        encode_item(obj)
    except InvalidItemError:
        return False
    return True


def token_authenticates(
    keyring: Keyring,
    obj: dict[str, Any],
    session_id: str,
    seeds: SeedMap | None = None,
) -> bool:
    """Whether the item's token authenticates under the key of its key id (and seed, where
    it names one) whatever else is wrong with the item: the key is right then."""
    token = obj.get("payload")
    if not isinstance(token, str):
        return False
    if obj.get("v") == SDK_FORMAT_VERSION:
        keys = keyring.sdk_keys(session_id)
    else:
        found = (seeds or {}).get(str(obj.get("seed"))) if "seed" in obj else None
        if "seed" in obj and not isinstance(found, bytes):
            return False
        seed = found if isinstance(found, bytes) else None
        key = keyring.session_key(str(obj.get("kid")), session_id, seed)
        keys = [key] if key is not None else []
    return any(key.open(token) is not None for key in keys)


def session_finding(session_id: str, problem: str, items: int) -> dict[str, Any]:
    """A finding about a session as a whole: how many of its items it is about."""
    return {
        "session_id": session_id,
        "branch_id": None,
        "storage_id": None,
        "problem": problem,
        "items": items,
    }


def _kid_text(kid: str | None) -> str:
    return repr(kid) if kid is not None else _UNSHOWN


def _key_finding(problem: str, kid: str | None, items: int, use: KeyUse) -> dict[str, Any]:
    return {
        "session_id": None,
        "branch_id": None,
        "storage_id": None,
        "problem": problem,
        "kid": kid,
        "items": items,
        "sessions": list(use.sessions),
    }
