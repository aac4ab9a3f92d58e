"""Validation of the table names that backends interpolate into SQL, and quoting of the
names read back from a database (which may be anything)."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_table_name(name: object, parameter: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ValueError saying so."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"{parameter} must be a plain identifier (a letter or '_' then up to 62 letters, "
            f"digits or '_'), got {name!r}"
        )
    return name


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier, with its own quotes doubled."""
    return '"' + name.replace('"', '""') + '"'
