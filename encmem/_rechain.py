"""Bringing a whole session into one chain: items sealed before chains (encmem 0.2's v2, the
Agents SDK's v1) or stored as plaintext are sealed again as v3 links, keeping every seal
time, and each branch gets its head, all in one transaction.

A session is re-chained as a whole because a chain cannot start in the middle: a branch
that holds an unchained item after chained ones reads as tampered. Items shared by several
branches (the prefix a branch was made from) stand at the same place in each, so each is
sealed once and fits every branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ._chain import GENESIS, Head
from ._envelope import CHAINED_VERSIONS, Opener, is_envelope, looks_sealed, seal_link
from ._items import CorruptRow, Item, encode_item
from ._protocol import Capabilities, HeadUpdate, StoredItem
from ._withdrawal import Conflict
from ._writing import Chainer, Seed
from .errors import DecryptionError, InvalidItemError, PlaintextItemError


class Sealable(NamedTuple):
    """An item ready to be sealed again, with the seal time it keeps."""

    item: Item
    sealed_at: int


class BranchRows(NamedTuple):
    name: str
    head: str | None
    rows: list[StoredItem]


def is_chained(obj: Item | CorruptRow) -> bool:
    """Whether a stored object claims to be a v3 link (its token proves it when opened)."""
    version = obj.get("v") if isinstance(obj, dict) else None
    return is_envelope(obj) and type(version) is int and version in CHAINED_VERSIONS


def needs_chain(branches: list[BranchRows]) -> bool:
    return any(not is_chained(stored.item) for branch in branches for stored in branch.rows)


def open_for_chain(
    opener: Opener, obj: Item | CorruptRow, now: int, seal_plaintext: bool
) -> Sealable:
    """The item inside a stored object and its seal time (plaintext: sealed ``now``)."""
    if isinstance(obj, dict) and not is_envelope(obj) and not looks_sealed(obj):
        if not seal_plaintext:
            raise PlaintextItemError("a plaintext item was found where an encrypted one belongs")
        try:
            encode_item(obj)
        except InvalidItemError as exc:  # NaN, lone surrogates: nothing can seal it
            raise PlaintextItemError(f"a plaintext item cannot be sealed: {exc}") from None
        return Sealable(obj, now)
    opened = opener.open(obj, remember=False)
    return Sealable(opened.item, opened.sealed_at)


class Plan(NamedTuple):
    replacements: dict[int, Item]
    heads: dict[str, Head]


def plan_chain(
    chainer: Chainer, branches: list[BranchRows], items: dict[int, Sealable], seed: Seed = None
) -> Plan:
    """New v3 envelopes for every row and the head of every branch.

    Rows missing from ``items`` (unreadable, in skip mode) keep their place unchanged and
    get no number: readers check no link across an item they cannot open.
    """
    links: dict[int, tuple[int, str, str]] = {}  # id -> (seq, prev, digest)
    replacements: dict[int, Item] = {}
    heads: dict[str, Head] = {}
    for branch in branches:
        seq, prev = 0, GENESIS
        for stored in branch.rows:
            if stored.id not in items:
                continue
            seq += 1
            known = links.get(stored.id)
            if known is None:
                source = items[stored.id]
                envelope, digest = _seal_one(chainer, source, seq, prev, seed)
                replacements[stored.id] = envelope
                known = links[stored.id] = (seq, prev, digest)
            elif known[:2] != (seq, prev):
                raise ValueError(
                    f"branch {branch.name!r} shares a message with another branch at another "
                    "place, so the session cannot be chained; export it and import it again"
                )
            prev = known[2]
        heads[branch.name] = Head(branch.name, seq, prev, 1)
    return Plan(replacements, heads)


def _seal_one(
    chainer: Chainer, source: Sealable, seq: int, prev: str, seed: Seed
) -> tuple[Item, str]:
    keyring = chainer.rules.keyring
    kid = keyring.primary_kid
    seed_id, raw = seed if seed is not None else (None, None)
    key = keyring.session_key(kid, chainer.rules.session_id, raw)
    assert key is not None
    text = encode_item(source.item)
    return seal_link(key, kid, source.item, text, source.sealed_at, seq, prev, seed_id)


def head_swap(chainer: Chainer, seen: str | None, head: Head) -> HeadUpdate:
    """Store ``head`` if the branch's head is still ``seen`` (else another writer came)."""

    def update(stored: str | None) -> str | None:
        if stored != seen:
            raise Conflict
        return chainer.seal_head(head)

    return update


async def read_branches(caps: Capabilities, names: list[str | None]) -> list[BranchRows]:
    """Every row of every branch, with the branch's head where the store keeps heads."""
    found: list[BranchRows] = []
    for name in names:
        if caps.heads is not None:
            headed = await caps.heads.get_head_and_items(None, branch_id=name)
            found.append(BranchRows(headed.branch, headed.head, headed.items))
        elif name is not None and caps.branch_addressing is not None:
            rows = await caps.branch_addressing.get_stored_items(None, branch_id=name)
            found.append(BranchRows(name, None, rows))
        else:
            addressing = caps.need(caps.addressing, "ItemAddressing", "chaining a session")
            found.append(BranchRows(name or "main", None, await addressing.get_stored_items()))
    return found


async def write_plan(
    caps: Capabilities, chainer: Chainer, plan: Plan, seen: dict[str, str | None]
) -> int:
    """Replace the items and heads in one transaction (items only, without heads)."""
    if caps.heads is not None:
        updates = {name: head_swap(chainer, seen[name], head) for name, head in plan.heads.items()}
        await caps.heads.update_heads(updates, plan.replacements)
        return len(plan.replacements)
    addressing = caps.need(caps.addressing, "ItemAddressing", "chaining a session")
    return await addressing.replace_stored_items(plan.replacements)


Refuse = Callable[[DecryptionError, StoredItem], None]
