"""The attack matrix of tamper-evident history: every attack x every encmem backend with heads
x raise / skip mode x full read / ``get_items(limit=2)`` / ``verify_history()`` / turn query.

Attacks are done with plain ``sqlite3`` on the file, as someone without the key would (see
tests/history_attacks.py). Every one must be detected with the right error and a plausible
``kind``, delete nothing, and return nothing wrong: skip mode returns only true items, as a
prefix of the history (the items before the break) or a suffix (the items that link back
unbroken to the head) on a full read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from encmem import EncryptedSession, HistoryTamperedError, Keyring, TamperedItemError

from .conftest import TEST_KEY
from .history_attacks import (
    ATTACKS,
    BACKENDS,
    HEADED,
    SID,
    TRUE_MAIN,
    TRUE_TURNS,
    Attack,
    Template,
    attack,
    attacks_for,
    build,
    copy,
    snapshot,
)

KEYRING = Keyring({"test-1": TEST_KEY})
WINDOW = 2
READS = ("full", "window", "verify", "turns")


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    folder = tmp_path_factory.mktemp("history-templates")
    return {name: build(BACKENDS[name], folder / f"{name}.db", KEYRING) for name in HEADED}


def _cases() -> list[Any]:
    return [
        pytest.param(name, chosen, read, id=f"{name}-{chosen.name.replace(' ', '_')}-{read}")
        for name in HEADED
        for chosen in attacks_for(BACKENDS[name])
        for read in READS
        if read != "turns" or BACKENDS[name].advanced
    ]


def _run(items: list[Any], truth: list[Any]) -> bool:
    """Whether ``items`` is a contiguous run of ``truth``."""
    return any(truth[i : i + len(items)] == items for i in range(len(truth) - len(items) + 1))


def _subsequence(items: list[Any], truth: list[Any]) -> bool:
    rest = iter(truth)
    return all(any(item == t for t in rest) for item in items)


def _check_error(error: Exception, chosen: Attack, stored: dict[str, list[Any]]) -> None:
    assert isinstance(error, chosen.error), repr(error)
    assert error.session_id == SID
    assert error.item_id is None or error.item_id in {row[0] for row in stored["agent_messages"]}
    if isinstance(error, HistoryTamperedError):
        assert error.kind in HistoryTamperedError.KINDS
        assert error.kind in chosen.kinds, f"{chosen.name}: kind {error.kind!r}"
        assert error.branch_id in (None, "main")
        assert error.kind in str(error) or error.reason in str(error)


def _session(template: Template, mode: str) -> tuple[Any, EncryptedSession]:
    underlying = template.backend.open(template.path, SID)
    session = EncryptedSession(
        underlying_session=underlying, encryption_key=KEYRING, ttl=None, on_invalid=mode
    )
    return underlying, session


async def _read(session: EncryptedSession, read: str) -> list[Any]:
    if read == "full":
        return await session.get_items()
    if read == "window":
        return await session.get_items(limit=WINDOW)
    if read == "verify":
        return [await session.verify_history()]
    return await session.get_conversation_turns()


def _undetectable(chosen: Attack, read: str) -> bool:
    """Reads that rightly cannot see an attack: item reads never look at the clear structure
    rows, and a window checks only its own rows' links and the head (O(limit), by design)."""
    if chosen.structure_only:
        return read in ("full", "window")
    return read == "window" and chosen.depth > WINDOW


def _truth(read: str) -> list[Any]:
    return TRUE_MAIN[-WINDOW:] if read == "window" else TRUE_MAIN


@pytest.mark.parametrize(("backend", "chosen", "read"), _cases())
@pytest.mark.parametrize("mode", ["raise", "skip"])
async def test_attack_is_detected(
    request: pytest.FixtureRequest,
    templates: dict[str, Template],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    backend: str,
    chosen: Attack,
    read: str,
    mode: str,
) -> None:
    template = copy(templates[backend], tmp_path / "attacked.db")
    attack(template, chosen)
    before = snapshot(template.path)
    underlying, session = _session(template, mode)
    try:
        if _undetectable(chosen, read):
            assert await _read(session, read) == _truth(read)
        elif mode == "raise" or read == "verify":  # verify_history() never skips
            with pytest.raises(TamperedItemError) as caught:
                await _read(session, read)
            _check_error(caught.value, chosen, before)
        else:
            with caplog.at_level(logging.WARNING, logger="encmem"):
                found = await _read(session, read)
            _check_skipped(found, chosen, read, caplog)
    finally:
        await underlying.close()
    assert snapshot(template.path) == before, "a read changed the store"


def _check_skipped(
    found: list[Any], chosen: Attack, read: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Skip mode: a warning, and only true items in their true order, contiguous."""
    warnings = [r for r in caplog.records if r.name == "encmem" and r.levelno == logging.WARNING]
    assert warnings, "skip mode stepped over an attack without a warning"
    if read == "turns":
        contents = [turn["full_content"] for turn in found]
        if chosen.structure_only:  # numbered from the authenticated items instead
            assert [(t["turn"], t["full_content"]) for t in found] == [
                (n, c) for n, c in enumerate(TRUE_TURNS, 1)
            ]
        assert _subsequence(contents, TRUE_TURNS), contents
        return
    if chosen.error is not HistoryTamperedError:
        # An item that does not open is stepped over, like any unreadable item: what is
        # returned is still true items in their true order.
        assert _subsequence(found, _truth(read)), found
        return
    assert _run(found, TRUE_MAIN), found
    if read == "full":  # the items before the break, or those that link back to the head
        assert found in (TRUE_MAIN[: len(found)], TRUE_MAIN[len(TRUE_MAIN) - len(found) :]), found
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_every_attack_has_a_case() -> None:
    names = {chosen.name for chosen in ATTACKS}
    assert len(names) == len(ATTACKS)
    for name in HEADED:
        assert attacks_for(BACKENDS[name])


def _pop_cases() -> list[Any]:
    return [
        pytest.param(name, chosen, id=f"{name}-{chosen.name.replace(' ', '_')}")
        for name in HEADED
        for chosen in attacks_for(BACKENDS[name])
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "chosen"), _pop_cases())
@pytest.mark.parametrize("mode", ["raise", "skip"])
async def test_pop_never_takes_an_item_the_head_does_not_name(
    templates: dict[str, Template], tmp_path: Path, backend: str, chosen: Attack, mode: str
) -> None:
    """pop_item() is a tail operation: it checks the newest item against the head (O(1)).
    When the attack touched the newest row or the head, it refuses and deletes nothing, in
    either mode; when the attack lies deeper, it pops the true newest item."""
    template = copy(templates[backend], tmp_path / "attacked.db")
    attack(template, chosen)
    before = snapshot(template.path)
    underlying, session = _session(template, mode)
    try:
        if chosen.depth == 1 and not chosen.structure_only:
            with pytest.raises(HistoryTamperedError) as caught:
                await session.pop_item()
            assert caught.value.kind in chosen.kinds | {"head mismatch"}
            assert snapshot(template.path) == before
        else:
            assert await session.pop_item() == TRUE_MAIN[-1]
            assert (
                len(snapshot(template.path)["agent_messages"]) == len(before["agent_messages"]) - 1
            )
    finally:
        await underlying.close()


@pytest.mark.parametrize("backend", HEADED)
async def test_a_rolled_back_database_is_caught_by_an_anchor_only(
    templates: dict[str, Template], tmp_path: Path, backend: str
) -> None:
    """Rows and head rolled back together are a consistent older history: nothing inside the
    database can tell (documented); an anchor kept elsewhere can."""
    older = copy(templates[backend], tmp_path / "older.db")
    live = copy(templates[backend], tmp_path / "live.db")
    underlying, session = _session(live, "raise")
    try:
        old_anchor = await session.history_head()
        await session.add_items([{"role": "user", "content": "m7"}])
        anchor = await session.history_head()
        assert anchor != old_anchor
        assert await session.verify_history(anchor) == len(TRUE_MAIN) + 1
    finally:
        await underlying.close()
    copy(older, live.path)  # the attacker restores the older copy over the live file
    underlying, session = _session(live, "skip")
    try:
        assert await session.verify_history() == len(TRUE_MAIN)
        assert await session.verify_history(old_anchor) == len(TRUE_MAIN)
        assert await session.get_items() == TRUE_MAIN
        with pytest.raises(HistoryTamperedError) as caught:
            await session.verify_history(anchor)
        assert caught.value.kind == "head mismatch" and caught.value.session_id == SID
    finally:
        await underlying.close()


async def test_swapped_branch_heads_break_both_branches(
    templates: dict[str, Template], tmp_path: Path
) -> None:
    chosen = next(a for a in ATTACKS if a.name == "swap heads between branches")
    template = copy(templates["advanced-sqlite"], tmp_path / "attacked.db")
    attack(template, chosen)
    underlying, session = _session(template, "raise")
    try:
        for branch in ("main", "x"):
            with pytest.raises(HistoryTamperedError) as caught:
                await session.verify_history(branch_id=branch)
            assert (caught.value.kind, caught.value.branch_id) == ("head mismatch", branch)
    finally:
        await underlying.close()
