"""Content-aware turn queries, written once over decoded items.

A backend calls these with its items as stored; :class:`encmem.EncryptedSession` calls them
with decrypted items. No SQL ``LIKE`` runs over message JSON, so ciphertext, non-ASCII text,
``%`` and ``_`` are all handled alike: search is literal, case-insensitive (Unicode case
folding) and looks at message text only, never at JSON keys.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from typing import Any

from ._items import Item
from ._protocol import TurnRow

PREVIEW_LENGTH = 100


def content_of(item: Item) -> Any:
    """The ``content`` of a message item ("" when it has none)."""
    return item.get("content", "")


def preview(content: Any, max_length: int | None = PREVIEW_LENGTH) -> str:
    """Message content as a string, cut to ``max_length`` characters plus "..." if longer."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if max_length is not None and len(text) > max_length:
        return text[:max_length] + "..."
    return text


def texts_of(content: Any) -> list[str]:
    """The human-readable text of message content: a string, or the text of each part."""
    if isinstance(content, str):
        return [content]
    found: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                for key in ("text", "refusal", "transcript"):
                    value = part.get(key)
                    if isinstance(value, str):
                        found.append(value)
            elif isinstance(part, str):
                found.append(part)
    return found


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def matches(item: Item, term: str) -> bool:
    """Whether the message text of ``item`` contains ``term`` (literal, case-insensitive)."""
    needle = _fold(term)
    return any(needle in _fold(text) for text in texts_of(content_of(item)))


def turn_dict(row: TurnRow, item: Item) -> dict[str, Any]:
    """One entry of ``get_conversation_turns()``, in the Agents SDK's shape."""
    content = content_of(item)
    return {
        "turn": row.turn,
        "content": preview(content),
        "full_content": content,
        "timestamp": row.timestamp,
        "can_branch": True,
    }


def conversation_turns(rows: Iterable[tuple[TurnRow, Item]]) -> list[dict[str, Any]]:
    """Every user turn, in order, from (turn row, decoded user item) pairs."""
    return [turn_dict(row, item) for row, item in rows]


def find_turns(rows: Iterable[tuple[TurnRow, Item]], term: str) -> list[dict[str, Any]]:
    """The user turns whose message text contains ``term``."""
    if not isinstance(term, str) or not term:
        raise ValueError("the search term must be a non-empty string")
    return [turn_dict(row, item) for row, item in rows if matches(item, term)]


def first_matching_turn(found: list[dict[str, Any]], term: str) -> int:
    """The turn to branch from for ``create_branch_from_content``; ValueError if none."""
    if not found:
        raise ValueError(f"no user turn contains the search term ({len(term)} characters)")
    turn: int = found[0]["turn"]
    return turn
