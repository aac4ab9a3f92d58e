"""JSON exactly as sealed and as stored: the one object inside a token, nothing around it,
and equality that tells ``1``, ``1.0`` and ``true`` apart (as SQL readers of the rows do)."""

from __future__ import annotations

import json
from typing import Any

from ._items import Item
from .errors import TamperedItemError

scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def sealed_text(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise TamperedItemError("the sealed content is not UTF-8 text") from None


def decode_sealed(text: str) -> Item:
    """The item inside an authenticated token: exactly one JSON object, nothing around it."""
    try:
        value, end = scan_json(text, 0)
    except (StopIteration, ValueError, RecursionError):
        value, end = None, -1
    if not isinstance(value, dict) or end != len(text):
        raise TamperedItemError("the sealed content is not a JSON object")
    return value


def same_json(a: object, b: object) -> bool:
    """Equal as JSON values: ``1``, ``1.0`` and ``true`` differ, as they do to SQL readers."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


_ATOMS = frozenset({str, int, float, bool, type(None)})
_SHALLOW = 48
"""Nesting copied by recursion (fast); deeper parts are copied with a stack of their own."""


def copy_json(value: Any, depth: int = 0) -> Any:
    """A deep copy of a decoded JSON value (dicts, lists and immutable atoms only), several
    times faster than parsing its text again or ``copy.deepcopy``, at any depth."""
    if depth > _SHALLOW:
        return _copy_deep(value)
    if type(value) is dict:
        copied = value.copy()
        for key, member in copied.items():
            if type(member) not in _ATOMS:
                copied[key] = copy_json(member, depth + 1)
        return copied
    if type(value) is list:
        return [m if type(m) in _ATOMS else copy_json(m, depth + 1) for m in value]
    return value


def _copy_deep(value: Any) -> Any:
    kind = type(value)
    if kind is not dict and kind is not list:
        return value
    top = value.copy()
    pending = [top]
    while pending:
        node = pending.pop()
        members = node.items() if type(node) is dict else enumerate(node)
        for key, member in members:
            kind = type(member)
            if kind is dict or kind is list:
                # Replacing the value of a key or index already there never resizes ``node``.
                member = node[key] = member.copy()
                pending.append(member)
    return top


_PLAIN_TYPES = frozenset({str, int})


def same_envelope(seen: dict[str, Any], obj: dict[str, Any]) -> bool:
    """:func:`same_json` of two envelopes, without its walk where every value is a string or
    an integer (as in nearly every envelope): of those, ``==`` never takes one for the other."""
    if seen != obj:
        return False
    if _PLAIN_TYPES.issuperset(map(type, obj.values())) and _PLAIN_TYPES.issuperset(
        map(type, seen.values())
    ):
        return True
    return same_json(seen, obj)
