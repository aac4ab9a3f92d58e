"""The Session protocol the decorator relies on, and the optional capabilities of backends.

``EncryptedSession`` wraps anything that satisfies :class:`Session` (the Agents SDK's sessions
and a user's own included). Our backends also implement the capability protocols below; the
decorator uses a capability when the wrapped session has it and raises
:class:`~encmem.errors.UnsupportedOperation` naming it when an operation needs it and it is
missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from ._head_writes import ChainBuild as ChainBuild
from ._head_writes import ForkHead as ForkHead
from ._head_writes import HeadUpdate as HeadUpdate
from ._head_writes import Newest as Newest
from ._head_writes import Presealed as Presealed
from ._items import CorruptRow, Item
from .errors import ResiduePendingError, UnsupportedOperation


@runtime_checkable
class Session(Protocol):
    """What every session offers: the Agents SDK's Session protocol."""

    session_id: str

    async def get_items(self, limit: int | None = None) -> list[Any]: ...

    async def add_items(self, items: list[Any]) -> None: ...

    async def pop_item(self) -> Any | None: ...

    async def clear_session(self) -> None: ...


class StoredItem(NamedTuple):
    """An item as stored, with the backend's id for it (ids grow with insertion order).

    A row that holds no readable item comes as a :class:`~encmem._items.CorruptRow`, so
    that the reader decides, loudly, what to do with it.
    """

    id: int
    item: Item | CorruptRow


class StoredText(NamedTuple):
    """A stored row as its JSON text, not yet decoded: a reader that opened the very same
    text before needs neither to decode nor to decrypt it again."""

    id: int
    text: str | bytes


@runtime_checkable
class ItemAddressing(Protocol):
    """Read items together with their storage ids, and delete or replace them by id.

    What purge, rotation, migration and an exact ``pop_item`` need without disturbing order,
    branches or structure rows. On a branching backend every call works on the current
    branch.
    """

    async def get_stored_items(
        self, limit: int | None = None, *, before_id: int | None = None
    ) -> list[StoredItem]:
        """The newest ``limit`` items (all when None) older than ``before_id``, oldest first."""
        ...

    async def delete_stored_items(self, ids: Sequence[int]) -> int:
        """Delete the items with these ids from this session; return how many were deleted."""
        ...

    async def replace_stored_items(self, replacements: Mapping[int, Item]) -> int:
        """Overwrite items in place, keeping id, position and structure; return the count."""
        ...


class TurnRow(NamedTuple):
    """One user turn of a branch: its number, when it was stored, and its user item as stored."""

    turn: int
    timestamp: Any
    item: Item | CorruptRow
    message_id: int = -1


@runtime_checkable
class UserTurnSource(Protocol):
    """Backends with turn structure hand out their user-turn items for content-aware queries."""

    async def get_user_turn_items(self, branch_id: str | None = None) -> list[TurnRow]:
        """Every user turn of ``branch_id`` (the current branch when None), in turn order."""
        ...


@runtime_checkable
class Branching(Protocol):
    """Several branches per session: reads on a ``branch_id``, listing, creating and
    switching branches (AdvancedSQLiteSession, ours and the Agents SDK's)."""

    async def get_items(self, limit: int | None = None, branch_id: str | None = None) -> list[Any]:
        """Items of ``branch_id`` (the current branch when None), oldest first."""
        ...

    async def list_branches(self) -> list[dict[str, Any]]:
        """Every live branch, each a dict with at least ``branch_id``."""
        ...

    async def create_branch_from_turn(
        self, turn_number: int, branch_name: str | None = None
    ) -> str:
        """A new branch holding the current branch before user turn ``turn_number``."""
        ...

    async def switch_to_branch(self, branch_id: str) -> None:
        """Make ``branch_id`` the branch that reads and writes go to."""
        ...


@runtime_checkable
class BranchAddressing(Protocol):
    """Item addressing on any branch: ItemAddressing's reads and deletes with a ``branch_id``
    (the current branch when None)."""

    async def get_stored_items(
        self,
        limit: int | None = None,
        *,
        before_id: int | None = None,
        branch_id: str | None = None,
    ) -> list[StoredItem]: ...

    async def delete_stored_items(
        self, ids: Sequence[int], *, branch_id: str | None = None
    ) -> int: ...


class HeadedItems(NamedTuple):
    """A branch's stored head and items, read in one snapshot."""

    branch: str
    """The branch read (the session's one branch is called ``main``)."""
    head: str | None
    items: list[StoredItem]
    others: bool = False
    """Whether other branches of the session have heads (then this one must have one)."""


class HeadedTexts(NamedTuple):
    """A branch's stored head and rows, undecoded, read in one snapshot (see HeadedItems)."""

    branch: str
    head: str | None
    items: list[StoredText]
    others: bool = False


@runtime_checkable
class HistoryHead(Protocol):
    """An opaque head per session and branch, read and written with the items it covers.

    The backend stores the text the decorator hands it and never interprets it; what makes
    it useful is that every change of a branch's items and of its head happens in one
    transaction, and that reads return items and head from one snapshot.
    """

    async def get_head_and_items(
        self, limit: int | None = None, *, branch_id: str | None = None
    ) -> HeadedItems:
        """The branch's head and its newest ``limit`` items (all when None), one snapshot."""
        ...

    async def get_head_and_texts(
        self, limit: int | None = None, *, branch_id: str | None = None
    ) -> HeadedTexts:
        """:meth:`get_head_and_items` with the rows left as their stored JSON text."""
        ...

    async def append_chained(
        self,
        build: ChainBuild,
        *,
        seed: tuple[str, str] | None = None,
        presealed: Presealed | None = None,
    ) -> bool:
        """Append to the current branch what ``build`` returns, and store its head.

        With ``seed``, (seed id, sealed form), given when this store keeps the session's
        seeds too, the append goes ahead only while that is still the session's stored seed
        (both), else raises SeedChanged.
        A store may store ``presealed`` as it is instead, without calling ``build``, when its
        conditions hold; it returns whether it did.
        """
        ...

    async def delete_with_head(
        self, ids: Sequence[int], update: HeadUpdate, *, branch_id: str | None = None
    ) -> int:
        """Delete items of the branch by id and store ``update``'s head, in one transaction."""
        ...

    async def update_heads(
        self, updates: Mapping[str, HeadUpdate], replacements: Mapping[int, Item] | None = None
    ) -> None:
        """Overwrite items in place by id and replace these branches' heads, in one
        transaction."""
        ...

    async def list_head_branches(self) -> list[str]:
        """Every branch of the session that has a stored head."""
        ...


class SeedChanged(Exception):
    """The session's seed is no longer the one an append was sealed under (an erase or a
    clear elsewhere destroyed it): nothing was written, and the writer asks for the seed."""


class StoredSeed(NamedTuple):
    """A session's seed as a key store keeps it: its id, and the seed sealed under a key
    derived from master key ``kid`` (a key store never sees a seed in the clear)."""

    seed_id: str
    kid: str
    sealed: str


class SeedDestruction(NamedTuple):
    """What destroying a seed did: whether there was one, and whether old copies of its row
    may still sit in the key store's WAL until readers finish (``residue_pending``)."""

    existed: bool
    residue_pending: bool


@runtime_checkable
class KeyStore(Protocol):
    """Where sessions' seeds live: a table in the session store itself, or a separate store
    on storage with short backup retention. Destroying a seed shreds its session."""

    async def get_seed(self, session_id: str) -> StoredSeed | None:
        """The session's seed, or None when it has none (never had one, or it was erased)."""
        ...

    async def put_seed(self, session_id: str, seed: StoredSeed) -> StoredSeed:
        """Keep ``seed`` unless the session has one already; return the one kept."""
        ...

    async def replace_seed(self, session_id: str, seed: StoredSeed) -> None:
        """Re-seal the session's seed (same id, another key: rotation)."""
        ...

    async def destroy_seed(self, session_id: str) -> SeedDestruction:
        """Delete the seed for good: committed, its pages overwritten, the WAL emptied."""
        ...

    async def seed_session_ids(self) -> list[str]:
        """Every session that has a seed, sorted."""
        ...


@runtime_checkable
class StoreSession(Session, ItemAddressing, Protocol):
    """A session handed out by a store: the Session protocol plus item addressing."""


class ErasedRows(NamedTuple):
    """What deleting a session's rows did: rows per table, and whether old copies of their
    pages remain for now (SQLite: a WAL other readers kept; PostgreSQL: dead tuples that no
    ``VACUUM`` removed yet), with a word on which."""

    rows: dict[str, int]
    residue_pending: bool
    residue: str

    def removed(self, session_id: str) -> int:
        """The rows removed; ResiduePendingError (the delete stands) while residue remains."""
        count = sum(self.rows.values())
        if self.residue_pending:
            raise ResiduePendingError(session_id, count)
        return count


@runtime_checkable
class SessionStore(Protocol):
    """A whole database of sessions, for store-wide maintenance (purge, rotate, erase)."""

    async def session_ids(self) -> list[str]:
        """Every session id that has a session row or stored items, sorted."""
        ...

    async def count_items(self) -> int:
        """How many items the store holds across all sessions (for progress reports)."""
        ...

    def session(self, session_id: str) -> StoreSession:
        """A backend session on this store (branching too, when the store has branches)."""
        ...

    async def erase_session(self, session_id: str) -> int:
        """Delete every row of the session from every table; return the number of rows."""
        ...

    async def aclose(self) -> None:
        """Release connections and sessions opened through this store."""
        ...


@runtime_checkable
class ErasableStore(Protocol):
    """A store that reports what an erase did, table by table, and what is left of it."""

    async def erase_rows(self, session_id: str) -> ErasedRows:
        """Delete every row of the session from every table, then clear the residue (SQLite:
        empty the WAL; PostgreSQL: VACUUM) as far as other readers allow."""
        ...

    async def residue_hits(
        self, session_id: str, tokens: Sequence[str]
    ) -> tuple[int | None, int] | None:
        """How often the session id (None: too short to look for) and the given tokens
        still occur in the store's files; None where the store cannot be read byte by byte
        (a database server)."""
        ...

    async def last_writes(self) -> dict[str, float]:
        """When each session was last written to (seconds since the epoch)."""
        ...


T = TypeVar("T")


class Capabilities(NamedTuple):
    """Which optional capabilities a session offers, looked up once per session.

    A runtime Protocol check walks every attribute of the session, so the decorator does it
    here, once, and keeps the answers.
    """

    kind: str
    addressing: ItemAddressing | None
    branching: Branching | None
    branch_addressing: BranchAddressing | None
    user_turns: UserTurnSource | None
    heads: HistoryHead | None
    key_store: KeyStore | None

    @classmethod
    def of(cls, session: object) -> Capabilities:
        branching = session if isinstance(session, Branching) else None
        return cls(
            class_label(type(session)),
            session if isinstance(session, ItemAddressing) else None,
            branching,
            session if branching is not None and isinstance(session, BranchAddressing) else None,
            session if isinstance(session, UserTurnSource) else None,
            session if isinstance(session, HistoryHead) else None,
            session if isinstance(session, KeyStore) else None,
        )

    def need(self, capability: T | None, name: str, operation: str) -> T:
        """``capability`` when the session offers it; else UnsupportedOperation naming it."""
        if capability is not None:
            return capability
        if self.kind.startswith("encmem."):
            advice = "use encmem.backends.AdvancedSQLiteSession, which has branches and turns"
        else:
            advice = (
                "use one of encmem's backends (encmem.backends) or implement the capability's "
                "methods on your session"
            )
        raise UnsupportedOperation(
            f"{operation} needs the {name} capability, which {self.kind} does not offer; {advice}",
            capability=name,
        )


def class_label(kind: type) -> str:
    """A class's importable name, so that same-named classes of two libraries differ."""
    module = kind.__module__
    if module.startswith("encmem.") and "._" in module:
        module = module.split("._")[0]  # encmem.backends._sqlite -> encmem.backends
    return f"{module}.{kind.__qualname__}"
