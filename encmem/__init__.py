"""encmem: encrypted, expiring conversation memory for AI agents."""

from .errors import (
    DecryptionError,
    EncmemError,
    InvalidItemError,
    InvalidKeyError,
    MissingTablesError,
    PlaintextItemError,
    SessionClosedError,
    TamperedItemError,
    UnknownKeyIdError,
    UnsupportedOperation,
)
from .keys import Keyring, generate_key
from .session import EncryptedSession, ScanBudgetExceeded

__version__ = "0.1.0"

__all__ = [
    "DecryptionError",
    "EncmemError",
    "EncryptedSession",
    "InvalidItemError",
    "InvalidKeyError",
    "Keyring",
    "MissingTablesError",
    "PlaintextItemError",
    "ScanBudgetExceeded",
    "SessionClosedError",
    "TamperedItemError",
    "UnknownKeyIdError",
    "UnsupportedOperation",
    "generate_key",
    "__version__",
]
