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
from ._exact_json import copy_json
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


Users = list[tuple[int | None, Opened]]


def _compare(
    before: Sequence[TurnRow], users: Users, after: Sequence[TurnRow], first: int | None
) -> tuple[str, int | None] | None:
    """Where the listed user turns disagree with the authenticated user items, if anywhere.

    ``before`` and ``after`` are the turn rows read before and after the items. Writers only
    append (a message with its structure rows, in one transaction), so for a sound store the
    rows read before are a prefix of the user items, and those are a prefix of the rows read
    after; a row that names another item, or a user item no row lists, was edited.
    """
    for index, row in enumerate(before):
        if index >= len(users):
            return f"turn {row.turn} is listed, but its sealed item is not a user message", None
        if row.message_id != users[index][0]:
            item_id = users[index][0]
            return f"turn {row.turn} does not list the branch's user message {index + 1}", item_id
    for index, (item_id, _) in enumerate(users):
        if index >= len(after) or after[index].message_id != item_id:
            return f"user message {index + 1} is not listed as a turn", item_id
        expected = (after[0].turn if first is None else first) + index
        if after[index].turn != expected:
            return f"user message {index + 1} is listed as turn {after[index].turn}", item_id
    return None


async def _read(
    reader: Reader, branch: Branch, read_rows: ReadRows
) -> tuple[Sequence[TurnRow], Users, Sequence[TurnRow], int | None, str | None]:
    before = await read_rows()
    opened_rows, head, name = await reader.open_branch(branch)
    checked = reader.check(opened_rows, head, name, complete=True, headed=branch.headed)
    users = [
        (entry.item_id, opened)
        for entry, opened in checked
        if opened is not None and opened.item.get("role") == "user"
    ]
    after = await read_rows()
    return before, users, after, _first_turn(checked), name


async def verified_turns(
    reader: Reader, branch: Branch, read_rows: ReadRows
) -> list[tuple[TurnRow, Item]]:
    """The branch's unexpired user turns, from its authenticated items, numbered as the
    structure rows number them when those agree (raise mode raises when they do not).

    A pop between the reads can make them differ, so a mismatch is believed only when a
    second round of reads shows it again.
    """
    before, users, rows, first, name = await _read(reader, branch, read_rows)
    mismatch = _compare(before, users, rows, first)
    if mismatch is not None:
        before, users, rows, first, name = await _read(reader, branch, read_rows)
        mismatch = _compare(before, users, rows, first)
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
        (row, copy_json(opened.item))  # the reader's items may be its own kept objects
        for row, opened in numbered
        if not is_expired(opened.sealed_at, ttl, now)
    ]
