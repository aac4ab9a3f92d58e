"""What a test can see of process memory without reaching into any object's internals."""

from __future__ import annotations

import gc
from typing import Any


def objects_holding(marker: str) -> int:
    """How many live containers (dicts, tuples, lists) hold a string containing ``marker``."""
    gc.collect()
    found = 0
    for obj in gc.get_objects():
        values: Any
        if isinstance(obj, dict):
            values = obj.values()
        elif isinstance(obj, (tuple, list)):
            values = obj
        else:
            continue
        try:
            found += any(isinstance(v, str) and marker in v for v in values)
        except RuntimeError:  # a dict changed size while scanned
            continue
    return found
