"""encmem: encrypted, expiring conversation memory for AI agents.

``encmem.__all__`` is the public API of the core; the storage backends are in
``encmem.backends``.
"""

from ._stores import encrypt_store, purge_store, rotate_store
from .errors import (
    BranchError,
    CommandError,
    CorruptRowError,
    DecryptionError,
    EncmemError,
    InvalidItemError,
    InvalidKeyError,
    MissingTablesError,
    NotASessionStoreError,
    PlaintextItemError,
    ScanBudgetExceeded,
    SessionClosedError,
    StoreError,
    TamperedItemError,
    UnknownKeyIdError,
    UnrestoredItemsError,
    UnsupportedOperation,
)
from .keys import Keyring, generate_key
from .session import EncryptedSession

__version__ = "0.1.0"

__all__ = [
    "BranchError",
    "CommandError",
    "CorruptRowError",
    "DecryptionError",
    "EncmemError",
    "EncryptedSession",
    "InvalidItemError",
    "InvalidKeyError",
    "Keyring",
    "MissingTablesError",
    "NotASessionStoreError",
    "PlaintextItemError",
    "ScanBudgetExceeded",
    "SessionClosedError",
    "StoreError",
    "TamperedItemError",
    "UnknownKeyIdError",
    "UnrestoredItemsError",
    "UnsupportedOperation",
    "__version__",
    "encrypt_store",
    "generate_key",
    "purge_store",
    "rotate_store",
]
