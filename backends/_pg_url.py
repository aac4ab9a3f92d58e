"""The parameters of a ``postgresql://`` URL, as asyncpg takes them.

People write libpq's parameters (``?sslmode=require``); SQLAlchemy's asyncpg dialect hands
the query to ``asyncpg.connect()`` as it is, which refuses them. The common ones are
translated; any other is refused before connecting, by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_PASSED_ON = (
    "host",
    "port",
    "user",
    "password",
    "database",
    "ssl",
    "timeout",
    "command_timeout",
    "prepared_statement_cache_size",
    "target_session_attrs",
)
"""Parameters asyncpg (through SQLAlchemy) takes from the URL as they are."""

_ACCEPTED = (
    "sslmode (as ssl), connect_timeout (seconds), application_name, and asyncpg's "
    + ", ".join(_PASSED_ON)
)


def asyncpg_options(query: Mapping[str, str | tuple[str, ...]]) -> tuple[list[str], dict[str, Any]]:
    """The parameters to take out of the URL, and the connect arguments that replace them.

    Raises ValueError naming a parameter that is neither translated nor passed on.
    """
    removed: list[str] = []
    connect: dict[str, Any] = {}
    for name, value in query.items():
        if name in _PASSED_ON:
            continue
        removed.append(name)
        if not isinstance(value, str):
            raise ValueError(f"the URL parameter {name!r} is given more than once; give it once")
        if name == "sslmode":
            connect["ssl"] = value
        elif name == "connect_timeout":
            try:
                connect["timeout"] = float(value)
            except ValueError:
                raise ValueError(
                    f"connect_timeout={value!r} in the URL is not a number of seconds"
                ) from None
        elif name == "application_name":
            connect["server_settings"] = {"application_name": value}
        else:
            raise ValueError(
                f"the URL parameter {name!r} is not one a postgresql:// URL takes here; "
                f"remove it (accepted: {_ACCEPTED})"
            )
    return removed, connect


def url_parameter_problem(target: str) -> str | None:
    """What is wrong with the parameters of a ``postgresql://`` or ``postgres://`` URL."""
    parts = urlsplit(target)
    if parts.scheme.lower().split("+")[0] not in ("postgresql", "postgres"):
        return None
    if "+" in parts.scheme and not parts.scheme.lower().endswith("+asyncpg"):
        return None
    try:
        found: dict[str, str | tuple[str, ...]] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            found[name] = (value,) if name in found else value  # twice: refused by name
        asyncpg_options(found)
    except ValueError as exc:
        return str(exc)
    return None
