"""What the advanced backends have in common whatever they store in: branch id rules and the
content-aware turn queries (answered over the items by :mod:`encmem._turns`)."""

from __future__ import annotations

from typing import Any

from encmem import _turns as turns
from encmem._items import Item
from encmem._protocol import ForkHead, TurnRow
from encmem.errors import BranchError

from ._rows import plain_item


def check_branch_id(branch_id: object, parameter: str = "branch_id") -> str:
    """A branch id: a non-blank string."""
    if not isinstance(branch_id, str):
        raise TypeError(f"{parameter} must be a str, not {type(branch_id).__name__}")
    if not branch_id.strip():
        raise BranchError(f"{parameter} cannot be empty or whitespace; give the branch a name")
    return branch_id


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
