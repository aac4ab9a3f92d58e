"""Session settings, shared with the Agents SDK.

The Runner calls ``session.session_settings.resolve(...)``. When the SDK is loaded its own
``SessionSettings`` class is used; otherwise a small compatible class stands in, so that
encmem (and its command) do not pay the SDK's multi-second import.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from typing import TYPE_CHECKING, Any

from ._items import check_limit

if TYPE_CHECKING:
    from agents.memory.session_settings import SessionSettings
else:

    @dataclasses.dataclass
    class SessionSettings:
        """Settings for session reads: the default ``limit`` (stand-in for the SDK's class)."""

        limit: int | None = None

        def resolve(self, override: Any) -> Any:
            """These settings with the non-None values of ``override`` laid over them."""
            if override is None:
                return self
            limit = override.get("limit") if isinstance(override, dict) else override.limit
            return self if limit is None else dataclasses.replace(self, limit=limit)

        def to_dict(self) -> dict[str, Any]:
            return dataclasses.asdict(self)


__all__ = ["SessionSettings", "make_settings", "resolve_limit"]


def _settings_class() -> Any:
    """The SDK's SessionSettings if the SDK is loaded, else the stand-in."""
    if "agents" in sys.modules:
        return importlib.import_module("agents.memory.session_settings").SessionSettings
    return SessionSettings


def make_settings(value: Any) -> SessionSettings:
    """Coerce a constructor's ``session_settings`` argument the way the SDK does."""
    cls = _settings_class()
    if value is None:
        settings = cls()
    elif isinstance(value, dict):
        settings = cls(**value)
    elif hasattr(value, "limit") and hasattr(value, "resolve"):
        settings = value
    else:
        raise TypeError(
            "session_settings must be a SessionSettings, a dict or None, "
            f"not {type(value).__name__}"
        )
    check_limit(settings.limit)
    return settings  # type: ignore[no-any-return]


def resolve_limit(limit: object, settings: Any) -> int | None:
    """The effective read limit: the explicit one, else the settings' one; validated."""
    if limit is None and settings is not None:
        limit = getattr(settings, "limit", None)
    return check_limit(limit)
