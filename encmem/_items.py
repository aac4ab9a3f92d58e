"""Validation and JSON encoding of session items, shared by the decorator and the backends.

An item is a JSON object: a ``dict`` with string keys whose values are JSON values. Anything
else is refused before a single row is written, with an error naming the item's index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .errors import InvalidItemError, ItemTooLargeError

Item = dict[str, Any]

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
encode_value = _encoder.encode
"""Any JSON value as ``_encoder`` writes it inside an object (a str alone takes the
encoder's short path, without setting it up)."""


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Readers disagree on such an object (Python keeps the last key, SQLite the first).
        raise _DuplicateKey("an object has the same key twice")
    return obj


_decoder = json.JSONDecoder(object_pairs_hook=_unique_keys)
_SCALARS = (str, int, float, bool, type(None))


def _first_bad_key(value: Any) -> str | None:
    """Return a description of the first non-string dict key found, or None."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, child in current.items():
                if not isinstance(key, str):
                    return f"a key of type {type(key).__name__}"
                if not isinstance(child, _SCALARS):
                    stack.append(child)
        elif isinstance(current, (list, tuple)):
            stack.extend(child for child in current if not isinstance(child, _SCALARS))
    return None


# The default ``max_item_bytes`` of every session: a turn's items, not a file store.
DEFAULT_MAX_ITEM_BYTES = 16 * 1024 * 1024


def _kind_of(value: object) -> str:
    """How a value reads to a person writing JSON: ``null``, ``a list``, ``a set``."""
    if value is None:
        return "null"
    article = "an" if type(value).__name__[0] in "aeiou" else "a"
    return f"{article} {type(value).__name__}"


def encode_item(item: object, index: int = 0, max_bytes: int | None = None) -> str:
    """Return the compact JSON text of one item, or raise InvalidItemError naming ``index``.

    ``max_bytes`` bounds the text's UTF-8 size (:class:`ItemTooLargeError` above it).
    """
    if not isinstance(item, dict):
        raise InvalidItemError(
            f"item {index} is {_kind_of(item)}, not a JSON object (dict); "
            "pass each history item as a dict"
        )
    bad_key = _first_bad_key(item)
    if bad_key is not None:
        raise InvalidItemError(f"item {index} has {bad_key}; JSON object keys must be strings")
    try:
        text = _encoder.encode(item)
        size = len(text.encode("utf-8"))  # lone surrogates would fail later, mid-write
    except RecursionError:
        raise InvalidItemError(
            f"item {index} is nested too deeply to store as JSON; flatten it"
        ) from None
    except UnicodeEncodeError:
        raise InvalidItemError(
            f"item {index} contains a lone surrogate character, which is not valid Unicode "
            "text; clean the string before storing it"
        ) from None
    except (TypeError, ValueError) as exc:
        # The exception text names the offending type or value kind, never the content.
        reason = str(exc).split(":")[0] if isinstance(exc, ValueError) else str(exc)
        raise InvalidItemError(
            f"item {index} cannot be stored as JSON ({reason}); convert it to plain JSON "
            "values (str, int, finite float, bool, None, list, dict) first"
        ) from None
    if max_bytes is not None and size > max_bytes:
        raise ItemTooLargeError(index, size, max_bytes)
    return text


def encode_items(items: Sequence[object], max_bytes: int | None = None) -> list[str]:
    """Encode a batch, validating every item before returning any text."""
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
        raise InvalidItemError(f"add_items takes a list of items, not a {type(items).__name__}")
    return [encode_item(item, index, max_bytes) for index, item in enumerate(items)]


class CorruptRow:
    """A stored row that is not one JSON object with unique keys.

    Backends hand it on in place of the item instead of skipping the row, so that a reader
    can refuse it (or, when told to, skip it loudly): dropping it quietly would hide a
    deletion. It carries the reason, never the row's content.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"CorruptRow({self.reason!r})"


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def decode_stored(text: str | bytes) -> Item | CorruptRow:
    """Parse a stored row: the item, or a :class:`CorruptRow` saying why it is not one."""
    try:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
    except UnicodeDecodeError:
        return CorruptRow("it is not UTF-8 text")
    try:
        value = _decoder.decode(decoded)
    except _DuplicateKey:
        return CorruptRow("it has a duplicate key")
    except (ValueError, TypeError, RecursionError):
        return CorruptRow("it is not valid JSON")
    if not isinstance(value, dict):
        return CorruptRow(f"it holds a JSON {_JSON_KINDS.get(type(value), 'value')}, not an object")
    return value


def decode_item(text: str | bytes) -> Item | None:
    """Parse stored JSON text; None when it is not one JSON object with unique keys."""
    value = decode_stored(text)
    return None if isinstance(value, CorruptRow) else value


def check_limit(limit: object) -> int | None:
    """Validate a ``limit`` argument: None or a non-negative int."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be zero or positive, got {limit}; pass None for all items")
    return limit


MAX_SESSION_ID_BYTES = 1024


def is_valid_session_id(value: object) -> bool:
    """Whether :func:`check_session_id` accepts ``value`` (for ids read back from a store)."""
    try:
        check_session_id(value)
    except (TypeError, ValueError):
        return False
    return True


def check_session_id(session_id: object) -> str:
    """Validate a session id: a non-empty str of valid Unicode without NUL, at most 1 KiB.

    Every backend stores and indexes it, and PostgreSQL refuses NUL and over-long index keys
    with errors that do not say what to do; this says it up front, for every backend alike.
    """
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str, not {type(session_id).__name__}")
    if not session_id:
        raise ValueError("session_id is empty; give each conversation a non-empty id")
    if session_id.isspace():
        raise ValueError(
            "session_id is only whitespace; give each conversation an id with visible characters"
        )
    if "\x00" in session_id:
        raise ValueError("session_id contains a NUL character; remove it")
    try:
        size = len(session_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(
            "session_id contains a lone surrogate, which is not valid Unicode text"
        ) from None
    if size > MAX_SESSION_ID_BYTES:
        raise ValueError(
            f"session_id is {size} bytes long in UTF-8, more than {MAX_SESSION_ID_BYTES}; "
            "use a shorter id (a hash of a long one, say)"
        )
    return session_id
