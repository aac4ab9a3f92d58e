"""Turn structure checked against the authenticated items it describes.

A backend's turn numbers and message types are clear text, kept for speed; anyone who can
write to the store can edit them. Every content-aware answer is therefore computed from the
branch's items, opened and checked as a chain, and the structure rows are only compared
with them: a user turn that the rows hide, invent or renumber is reported as
``forged structure``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from ._envelope import Opened
from ._history import Entry
from ._items import Item
from ._protocol import TurnRow
from ._reading import Branch, Reader, is_expired
from .errors import HistoryTamperedError

ReadRows = Callable[[], Awaitable[Sequence[TurnRow]]]


def _forged(reason: str, branch: str | None, item_id: int | None) -> HistoryTamperedError:
    return HistoryTamperedError(
        f"the turn structure was edited: {reason}",
        kind="forged structure",
        branch_id=branch,
        item_id=item_id,
    )


def _first_turn(checked: Sequence[tuple[Entry, Opened | None]]) -> int | None:
    """The number the branch's first user turn must have (None when items were purged)."""
    if not checked:
        return 1
    link = checked[0][0].link
    return 1 if link is None or link.seq == 1 else None


def _compare(
    rows: Sequence[TurnRow], users: Sequence[tuple[int | None, Opened]], first: int | None
) -> tuple[str, int | None] | None:
    """Where the listed user turns disagree with the authenticated user items, if anywhere."""
    for index, (row, (item_id, _)) in enumerate(zip(rows, users, strict=False)):
        if row.message_id != item_id:
            return f"turn {row.turn} does not list the branch's user message {index + 1}", item_id
        expected = (rows[0].turn if first is None else first) + index
        if row.turn != expected:
            return f"user message {index + 1} is listed as turn {row.turn}", item_id
    if len(rows) > len(users):
        extra = rows[len(users)]
        return f"turn {extra.turn} is listed, but its sealed item is not a user message", None
    if len(rows) < len(users):
        return f"user message {len(rows) + 1} is not listed as a turn", users[len(rows)][0]
    return None


async def _read(
    reader: Reader, branch: Branch, read_rows: ReadRows
) -> tuple[Sequence[TurnRow], list[tuple[int | None, Opened]], int | None, str | None]:
    rows = await read_rows()
    opened_rows, head, name = await reader.open_branch(branch)
    checked = reader.check(opened_rows, head, name, complete=True, headed=branch.headed)
    users = [
        (entry.item_id, opened)
        for entry, opened in checked
        if opened is not None and opened.item.get("role") == "user"
    ]
    return rows, users, _first_turn(checked), name


async def verified_turns(
    reader: Reader, branch: Branch, read_rows: ReadRows
) -> list[tuple[TurnRow, Item]]:
    """The branch's unexpired user turns, from its authenticated items, numbered as the
    structure rows number them when those agree (raise mode raises when they do not).

    Rows and items are two reads; a writer in between can make them differ, so a mismatch
    is believed only when a second pair of reads shows it again.
    """
    rows, users, first, name = await _read(reader, branch, read_rows)
    mismatch = _compare(rows, users, first)
    if mismatch is not None:
        rows, users, first, name = await _read(reader, branch, read_rows)
        mismatch = _compare(rows, users, first)
    numbered = [
        (rows[i] if i < len(rows) else TurnRow(i + 1, None, opened.item, item_id or -1), opened)
        for i, (item_id, opened) in enumerate(users)
    ]
    if mismatch is not None:
        error = _forged(mismatch[0], name, mismatch[1])
        reader.refuse(error, None, error.item_id, "numbered turns from the items past")
        numbered = [
            (TurnRow(i + 1, None, opened.item, item_id or -1), opened)
            for i, (item_id, opened) in enumerate(users)
        ]
    now, ttl = reader.rules.clock(), reader.rules.ttl
    return [
        (row, opened.item) for row, opened in numbered if not is_expired(opened.sealed_at, ttl, now)
    ]
