"""How AdvancedSQLiteSession reads items and usage: classification, tool names, token counts.

Only the ``role``, ``type``, ``name``, ``namespace`` and ``server_label`` fields are read, the
ones an encrypted envelope carries in the clear, so a sealed item is classified exactly as its
plaintext. The rules follow the Agents SDK's ``AdvancedSQLiteSession``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from encmem._items import Item

#: message types counted by ``get_tool_usage`` (``tool_search_output`` is handled apart)
TOOL_CALL_TYPES = (
    "tool_call",
    "function_call",
    "computer_call",
    "file_search_call",
    "web_search_call",
    "code_interpreter_call",
    "tool_search_call",
    "custom_tool_call",
    "mcp_call",
    "mcp_approval_request",
    "shell_call",
    "apply_patch_call",
)
_NAMED_BY_TYPE = (
    "computer_call",
    "file_search_call",
    "web_search_call",
    "code_interpreter_call",
    "shell_call",
    "apply_patch_call",
)
_TOOL_SEARCH = ("tool_search_call", "tool_search_output")
_MCP = ("mcp_call", "mcp_approval_request")


class Classified(NamedTuple):
    """What a structure row records about one item."""

    message_type: str
    tool_name: str | None
    is_user: bool


def message_type(item: Item) -> str:
    """``user`` / ``assistant`` by role, else the item's ``type``, else ``other``."""
    role = item.get("role")
    if role == "user":
        return "user"
    if role == "assistant":
        return "assistant"
    kind = item.get("type")
    return str(kind) if kind else "other"


def tool_name(item: Item) -> str | None:
    """The tool an item calls or answers, qualified the way the SDK qualifies it."""
    kind = item.get("type")
    if kind in _MCP and "server_label" in item:
        label, name = item.get("server_label"), item.get("name")
        if name and label:
            return f"{label}.{name}"
        if label:
            return str(label)
        return str(name) if name else None
    if kind in _TOOL_SEARCH:
        return "tool_search"
    if kind in _NAMED_BY_TYPE:
        return str(kind)
    if "name" not in item or item.get("name") is None:
        return None
    name = str(item["name"])
    namespace = item.get("namespace")
    space = str(namespace) if namespace is not None else ""
    # A namespace equal to the name is the SDK's synthetic wrapper for a top-level tool.
    if name and space and space != name:
        return f"{space}.{name}"
    return name


def classify(item: Item) -> Classified:
    """Type, tool name and user-ness of one item."""
    return Classified(message_type(item), tool_name(item), item.get("role") == "user")


# -- usage ------------------------------------------------------------------------------------


class UsageNumbers(NamedTuple):
    """The token counts of one run, with the details as plain JSON objects."""

    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_details: dict[str, Any] | None
    output_details: dict[str, Any] | None


def _field(source: Any, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _count(source: Any, name: str) -> int:
    value = _field(source, name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"usage.{name} must be an int, not {type(value).__name__}")
    return value


def _details(source: Any, name: str) -> dict[str, Any] | None:
    value = _field(source, name)
    if value is None:
        return None
    if isinstance(value, Mapping):
        found = dict(value)
    elif callable(getattr(value, "model_dump", None)):
        found = value.model_dump()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        found = dataclasses.asdict(value)
    elif hasattr(value, "__dict__"):
        found = dict(vars(value))
    else:
        raise TypeError(f"usage.{name} must be a mapping or a model, not {type(value).__name__}")
    try:
        json.dumps(found, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"usage.{name} cannot be stored as JSON: {exc}") from None
    return found


def usage_numbers(usage: Any) -> UsageNumbers:
    """Read a ``Usage`` (the SDK's dataclass, any object with its fields, or a dict)."""
    return UsageNumbers(
        _count(usage, "requests"),
        _count(usage, "input_tokens"),
        _count(usage, "output_tokens"),
        _count(usage, "total_tokens"),
        _details(usage, "input_tokens_details"),
        _details(usage, "output_tokens_details"),
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge_details(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any] | None:
    """Add two token-detail objects key by key (numbers add up; anything else: newest wins)."""
    if old is None or new is None:
        return new if old is None else old
    merged = dict(old)
    for key, value in new.items():
        previous = merged.get(key)
        if _is_number(previous) and _is_number(value):
            merged[key] = previous + value
        elif value is not None or key not in merged:
            merged[key] = value
    return merged


def dump_details(details: dict[str, Any] | None) -> str | None:
    return None if details is None else json.dumps(details, ensure_ascii=False)


def load_details(text: object) -> dict[str, Any] | None:
    """Parse a stored details column; None when empty or not a JSON object."""
    if not isinstance(text, (str, bytes)) or not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
