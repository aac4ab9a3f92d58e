"""The structure and usage reports of AdvancedSQLAlchemySession, as a mixin.

Kept apart from the session class so that each module does one job: these methods only
choose the branch and run one of :mod:`._advanced_sqlalchemy_analytics` in a transaction of
the session's (a read, or for ``store_run_usage`` a write under the session's writer lock).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from . import _advanced_sqlalchemy_analytics as analytics
from ._advanced_content import check_branch_id, run_usage
from ._advanced_sqlalchemy_queries import AdvancedQueries

T = TypeVar("T")


class UsageReports:
    """Turn structure, tool usage and token usage; needs the session's queries and
    transactions (provided by AdvancedSQLAlchemySession)."""

    _q: AdvancedQueries
    _branch: str
    _logger: logging.Logger

    def _target(self, branch_id: str | None) -> str:
        raise NotImplementedError

    async def _read(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _write(
        self, operation: Callable[[AsyncConnection], Awaitable[T]], *, upsert: bool = False
    ) -> T:
        raise NotImplementedError

    # -- structure and usage --------------------------------------------------------------

    async def get_conversation_by_turns(
        self, branch_id: str | None = None
    ) -> dict[int, list[dict[str, str | None]]]:
        """``{turn: [{"type", "tool_name"}, ...]}`` for the branch, in order."""
        branch, q = self._target(branch_id), self._q
        return await self._read(lambda conn: analytics.conversation_by_turns(conn, q, branch))

    async def get_tool_usage(self, branch_id: str | None = None) -> list[tuple[str, int, int]]:
        """``[(tool_name, count, turn), ...]`` for the branch, by turn."""
        branch, q = self._target(branch_id), self._q
        return await self._read(lambda conn: analytics.tool_usage(conn, q, branch))

    async def store_run_usage(self, result: Any) -> None:
        """Add a run's token usage to the current turn of the current branch.

        Reads ``result.context_wrapper.usage``. Calling it twice for one turn adds up; on an
        empty branch nothing is recorded. Failures raise (nothing is swallowed).
        """
        numbers = run_usage(result)
        if numbers is None:
            return
        branch, q = self._branch, self._q
        turn = await self._write(lambda conn: analytics.store_usage(conn, q, branch, numbers))
        if turn is None:
            self._logger.debug("no usage stored: branch %r has no items yet", branch)

    async def get_session_usage(self, branch_id: str | None = None) -> dict[str, int] | None:
        """Usage summed over every branch (or ``branch_id``); None when nothing was stored."""
        branch = None if branch_id is None else check_branch_id(branch_id)
        q = self._q
        return await self._read(lambda conn: analytics.session_usage(conn, q, branch))

    async def get_turn_usage(
        self, user_turn_number: int | None = None, branch_id: str | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """One turn's usage as a dict ({} if none), or every turn's as a list."""
        branch, q = self._target(branch_id), self._q
        return await self._read(
            lambda conn: analytics.turn_usage(conn, q, branch, user_turn_number)
        )
