"""The ``encmem`` command: look at, audit and maintain encrypted session stores.

It sits above both the core (``encmem``) and the storage backends (``encmem.backends``),
which know nothing of it.
"""

from ._main import main

__all__ = ["main"]
