"""What the advanced backends have in common whatever they store in: branch id rules and the
content-aware turn queries (answered over the items by :mod:`encmem._turns`)."""

from __future__ import annotations

from typing import Any

from encmem import _turns as turns
from encmem._items import Item
from encmem._protocol import ForkHead, TurnRow
from encmem.errors import BranchError

from ._advanced_items import UsageNumbers, usage_numbers
from ._advanced_queries import MAIN
from ._rows import plain_item


def check_branch_id(branch_id: object, parameter: str = "branch_id") -> str:
    """A branch id: a non-blank string."""
    if not isinstance(branch_id, str):
        raise TypeError(f"{parameter} must be a str, not {type(branch_id).__name__}")
    if not branch_id.strip():
        raise BranchError(f"{parameter} cannot be empty or whitespace; give the branch a name")
    return branch_id


def check_branch_point(turn_number: object, branch_name: object) -> None:
    """The arguments of create_branch_from_turn: an int turn, and a name or None."""
    if isinstance(turn_number, bool) or not isinstance(turn_number, int):
        raise TypeError(f"turn_number must be an int, not {type(turn_number).__name__}")
    if branch_name is not None:
        check_branch_id(branch_name, "branch_name")


def require_live(state: str, branch_id: str) -> None:
    """BranchError unless a branch's state says it exists."""
    if state != "live":
        raise BranchError(
            f"branch {branch_id!r} does not exist; list_branches() shows the branches"
        )


def check_deletable(branch_id: object, current: str, force: bool) -> bool:
    """Whether the branch to delete is the current one, after refusing what may not go."""
    check_branch_id(branch_id)
    if branch_id == MAIN:
        raise BranchError("the 'main' branch cannot be deleted; use clear_session()")
    if branch_id == current and not force:
        raise BranchError(
            f"{branch_id!r} is the current branch; switch_to_branch() to another first, "
            "or pass force=True to delete it and go back to 'main'"
        )
    return branch_id == current


def run_usage(result: Any) -> UsageNumbers | None:
    """The token usage store_run_usage adds, from a Runner.run result (None: it has none)."""
    try:
        usage = result.context_wrapper.usage
    except AttributeError:
        raise TypeError(
            "store_run_usage takes the result of Runner.run (it reads "
            "result.context_wrapper.usage)"
        ) from None
    return None if usage is None else usage_numbers(usage)


class ContentQueries:
    """Turn previews, search and branch-from-content over the session's stored user turns."""

    session_id: str

    async def get_user_turn_items(self, branch_id: str | None = None) -> list[TurnRow]:
        raise NotImplementedError

    async def create_branch_from_turn(
        self, turn_number: int, branch_name: str | None = None, *, fork: ForkHead | None = None
    ) -> str:
        raise NotImplementedError

    def _plain_turns(self, rows: list[TurnRow]) -> list[tuple[TurnRow, Item]]:
        return [(row, plain_item(self.session_id, row.message_id, row.item)) for row in rows]

    async def get_conversation_turns(self, branch_id: str | None = None) -> list[dict[str, Any]]:
        """User turns with a 100-character preview, for choosing where to branch."""
        rows = await self.get_user_turn_items(branch_id)
        return turns.conversation_turns(self._plain_turns(rows))

    async def find_turns_by_content(
        self, search_term: str, branch_id: str | None = None
    ) -> list[dict[str, Any]]:
        """User turns whose text contains ``search_term`` (literal, case-insensitive)."""
        rows = await self.get_user_turn_items(branch_id)
        return turns.find_turns(self._plain_turns(rows), search_term)

    async def create_branch_from_content(
        self, search_term: str, branch_name: str | None = None
    ) -> str:
        """Branch from the first user turn of the current branch containing ``search_term``."""
        found = await self.find_turns_by_content(search_term)
        turn = turns.first_matching_turn(found, search_term)
        return await self.create_branch_from_turn(turn, branch_name)
