"""encmem: encrypted, expiring conversation memory for AI agents.

``encmem.__all__`` is the public API of the core; the storage backends are in
``encmem.backends``.
"""

from ._items import CorruptRow
from ._keys import Keyring, generate_key
from ._protocol import (
    BranchAddressing,
    Branching,
    HistoryHead,
    ItemAddressing,
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
    StoreError,
    TamperedItemError,
    UnknownKeyIdError,
    UnrestoredItemsError,
    UnsupportedOperation,
)

__version__ = "0.2.0"

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
    "HistoryTamperedError",
    "HistoryHead",
    "InvalidItemError",
    "ItemTooLargeError",
    "InvalidKeyError",
    "ItemAddressing",
    "Keyring",
    "MissingTablesError",
    "NotASessionStoreError",
    "PlaintextItemError",
    "ResiduePendingError",
    "ScanBudgetExceeded",
    "Session",
    "SessionClosedError",
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
    "generate_key",
    "purge_store",
    "rotate_store",
]
