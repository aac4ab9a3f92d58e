"""Checks of what ``EncryptedSession(...)`` is given, each failing with what to do instead."""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any, cast

from ._items import check_session_id
from ._protocol import KeyStore, Session
from ._reading import OnInvalid
from .errors import UnsupportedOperation

# Seal times are whole seconds (Fernet's timestamp); a shorter ttl would be a coin toss.
MIN_TTL_SECONDS = 1
HISTORY_METHODS = ("get_items", "add_items", "pop_item", "clear_session")
_SERVER_SIDE_SESSIONS = frozenset({"OpenAIConversationsSession"})


def check_underlying(underlying: object) -> Session:
    """The session to wrap: a local store offering the Session protocol's four methods."""
    if underlying is None:
        raise TypeError("EncryptedSession needs underlying_session=<the session to wrap>")
    kind = type(underlying).__name__
    if any(cls.__name__ in _SERVER_SIDE_SESSIONS for cls in type(underlying).__mro__):
        raise UnsupportedOperation(
            f"{kind} keeps items on the model provider's servers, where the model must read "
            "them in the clear; it cannot be wrapped in EncryptedSession. Use a local store "
            "(encmem.backends.SQLiteSession, SQLAlchemySession) to encrypt history"
        )
    for name in HISTORY_METHODS:
        if not callable(getattr(underlying, name, None)):
            raise TypeError(f"underlying_session has no {name}() method; it is not a Session")
    return cast(Session, underlying)  # its four methods were checked above


def resolve_session_id(session_id: str | None, underlying: object) -> str:
    """The session id: the one given, else the wrapped session's; they must agree."""
    underlying_id = getattr(underlying, "session_id", None)
    if session_id is None:
        session_id = underlying_id
    if session_id is None:
        raise ValueError("session_id is missing: pass it, or wrap a session that has one")
    check_session_id(session_id)
    if underlying_id is not None and underlying_id != session_id:
        raise ValueError(
            f"session_id {session_id!r} differs from the underlying session's "
            f"{underlying_id!r}; the keys would not match the stored items. Pass the same id "
            "to both, or leave session_id out"
        )
    return session_id


def ttl_seconds(ttl: int | float | timedelta | None) -> float | None:
    """``ttl`` in seconds: a positive number, a timedelta, or None for no expiry."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"ttl must be seconds, a timedelta or None, not {type(ttl).__name__}")
    if not seconds >= MIN_TTL_SECONDS:
        raise ValueError(
            f"ttl must be at least {MIN_TTL_SECONDS} second (got {seconds} s): seal times are "
            "whole seconds, so a shorter ttl cannot be kept. Pass None for no expiry"
        )
    return seconds


def check_on_invalid(value: object) -> OnInvalid:
    if value == "raise":
        return "raise"
    if value == "skip":
        return "skip"
    raise ValueError(f"on_invalid must be 'raise' or 'skip', not {value!r}")


def check_max_scan_items(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("max_scan_items must be a positive int or None")
    return value


def check_cache_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("plaintext_cache must be a non-negative int (0 disables it)")
    return value


def check_max_item_bytes(value: object) -> int | None:
    """Validate ``max_item_bytes``: a positive int, or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"max_item_bytes must be a positive int or None for no limit, not {value!r}"
        )
    return value


def check_key_store(key_store: object) -> KeyStore | None:
    """A key store for the session's seed (None: the wrapped session's own, if it has one)."""
    if key_store is None or isinstance(key_store, KeyStore):
        return key_store
    raise TypeError(
        f"key_store must be a key store (encmem.backends.SQLiteKeyStore or "
        f"SQLAlchemyKeyStore), not {type(key_store).__name__}"
    )


def accepts_keyword(method: Any, name: str) -> bool:
    """Whether ``method`` takes a keyword argument called ``name``."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == name
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        for p in parameters
    )
