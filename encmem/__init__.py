"""encmem: encrypted, expiring conversation memory for AI agents.

``encmem.__all__`` is the public API of the core; the storage backends are in
``encmem.backends``.
"""

from ._erasure import ErasureReceipt, erase_idle_sessions, erase_session
from ._items import CorruptRow
from ._keys import Keyring, generate_key
from ._protocol import (
    BranchAddressing,
    Branching,
    HistoryHead,
    ItemAddressing,
    KeyStore,
    Session,
    SessionStore,
    StoredItem,
    TurnRow,
    UserTurnSource,
)
from ._session import EncryptedSession
from ._stores import encrypt_store, purge_store, rotate_store
from .errors import (
    BranchError,
    CommandError,
    CorruptRowError,
    DecryptionError,
    EncmemError,
    HistoryTamperedError,
    InvalidItemError,
    InvalidKeyError,
    ItemTooLargeError,
    MissingTablesError,
    NotASessionStoreError,
    PlaintextItemError,
    ResiduePendingError,
    ScanBudgetExceeded,
    SessionClosedError,
    SessionErasedError,
    StoreError,
    TamperedItemError,
    UnknownKeyIdError,
    UnrestoredItemsError,
    UnsupportedOperation,
)

__version__ = "0.3.0"

__all__ = [
    "BranchAddressing",
    "BranchError",
    "Branching",
    "CommandError",
    "CorruptRow",
    "CorruptRowError",
    "DecryptionError",
    "EncmemError",
    "EncryptedSession",
    "ErasureReceipt",
    "HistoryTamperedError",
    "HistoryHead",
    "InvalidItemError",
    "ItemTooLargeError",
    "InvalidKeyError",
    "ItemAddressing",
    "KeyStore",
    "Keyring",
    "MissingTablesError",
    "NotASessionStoreError",
    "PlaintextItemError",
    "ResiduePendingError",
    "ScanBudgetExceeded",
    "Session",
    "SessionClosedError",
    "SessionErasedError",
    "SessionStore",
    "StoreError",
    "StoredItem",
    "TamperedItemError",
    "TurnRow",
    "UnknownKeyIdError",
    "UnrestoredItemsError",
    "UnsupportedOperation",
    "UserTurnSource",
    "__version__",
    "encrypt_store",
    "erase_idle_sessions",
    "erase_session",
    "generate_key",
    "purge_store",
    "rotate_store",
]
