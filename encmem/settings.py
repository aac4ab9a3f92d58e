"""Session settings, shared with the Agents SDK when it is installed.

The Runner calls ``session.session_settings.resolve(...)``, so when the SDK is present its own
``SessionSettings`` class is used; without it a small compatible dataclass stands in.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .items import check_limit

if TYPE_CHECKING:
    from agents.memory.session_settings import SessionSettings
else:
    try:
        from agents.memory.session_settings import SessionSettings
    except ImportError:  # pragma: no cover - exercised only without the SDK

        @dataclasses.dataclass
        class SessionSettings:
            """Settings for session reads (stand-in for the SDK's class)."""

            limit: int | None = None

            def resolve(self, override: Any) -> SessionSettings:
                if override is None:
                    return self
                limit = override.get("limit") if isinstance(override, dict) else override.limit
                return self if limit is None else dataclasses.replace(self, limit=limit)

            def to_dict(self) -> dict[str, Any]:
                return dataclasses.asdict(self)


__all__ = ["SessionSettings", "make_settings", "resolve_limit"]


def make_settings(value: SessionSettings | dict[str, Any] | None) -> SessionSettings:
    """Coerce a constructor's ``session_settings`` argument the way the SDK does."""
    if value is None:
        return SessionSettings()
    if isinstance(value, dict):
        settings = SessionSettings(**value)
    elif isinstance(value, SessionSettings):
        settings = value
    else:
        raise TypeError(
            "session_settings must be a SessionSettings, a dict or None, "
            f"not {type(value).__name__}"
        )
    check_limit(settings.limit)
    return settings


def resolve_limit(limit: object, settings: Any) -> int | None:
    """The effective read limit: the explicit one, else the settings' one; validated."""
    if limit is None and settings is not None:
        limit = getattr(settings, "limit", None)
    return check_limit(limit)
