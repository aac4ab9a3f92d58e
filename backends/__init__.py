"""Storage backends for encmem, installed as ``encmem.backends``.

They store JSON objects and know nothing about encryption; wrap any of them in
:class:`encmem.EncryptedSession` to seal what they store.
"""

from .sqlite import SQLiteSession

__all__ = ["SQLiteSession"]
