"""Independent review of the tamper-evident history against README.md, SECURITY.md and docs/.

The attacker reads and writes the SQLite file with plain ``sqlite3`` but holds no key. Tests
that were defects when found assert the documented (correct) behaviour;
the others are attacks and legitimate sequences that held, kept as regression guards.
Checked against commit 8d3b505 (the working tree was being changed by others meanwhile).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import AdvancedSQLiteSession, SQLiteSession

from encmem import (
    DecryptionError,
    EncryptedSession,
    HistoryTamperedError,
    Keyring,
    generate_key,
)

KEY = generate_key()


def sql(db: Path, statement: str, *args: Any) -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(statement, args).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def plain(db: Path, sid: str = "s", key: Any = KEY, **kw: Any) -> EncryptedSession:
    return EncryptedSession(
        underlying_session=SQLiteSession(sid, str(db)), encryption_key=key, **kw
    )


def adv(db: Path, sid: str = "s", key: Any = KEY, **kw: Any) -> EncryptedSession:
    underlying = AdvancedSQLiteSession(session_id=sid, db_path=str(db), create_tables=True)
    return EncryptedSession(underlying_session=underlying, encryption_key=key, **kw)


def turns(n: int, prefix: str = "m") -> list[dict[str, Any]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{prefix}{i}"} for i in range(n)
    ]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    key = KEY.decode() if isinstance(KEY, bytes) else KEY
    env = {**os.environ, "ENCMEM_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "encmem.cli", *args], env=env, capture_output=True, text=True
    )


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- findings, fixed


async def test_skip_mode_pop_never_deletes_an_item_the_head_does_not_record(tmp_path: Path) -> None:
    db = tmp_path / "pop.db"
    async with plain(db, ttl=None) as s:
        await s.add_items(turns(3))
    original = sql(db, "SELECT message_data FROM agent_messages WHERE id = 3")[0][0]
    tampered = original.replace('"payload":"gAAAAAB', '"payload":"gAAAAAC', 1)
    assert tampered != original
    sql(db, "UPDATE agent_messages SET message_data = ? WHERE id = 3", tampered)
    async with plain(db, ttl=None, on_invalid="skip") as s:
        with contextlib.suppress(Exception):  # refusing to pop is a correct outcome too
            await s.pop_item()
    assert [r[0] for r in sql(db, "SELECT id FROM agent_messages ORDER BY id")] == [1, 2, 3]
    sql(db, "UPDATE agent_messages SET message_data = ? WHERE id = 3", original)
    async with plain(db, ttl=None) as s:
        assert await s.get_items() == turns(3)


async def test_v1_row_from_a_backup_is_not_accepted_before_a_chained_history(
    tmp_path: Path,
) -> None:
    from agents import SQLiteSession as SDKSQLiteSession
    from agents.extensions.memory import EncryptedSession as SDKEncryptedSession

    db = tmp_path / "migrated.db"
    sdk = SDKEncryptedSession("s", SDKSQLiteSession("s", str(db)), KEY, ttl=6000)
    await sdk.add_items(
        [{"role": "user", "content": "old1"}, {"role": "assistant", "content": "old2"}]
    )
    sdk.underlying_session.close()
    backup = sql(db, "SELECT message_data FROM agent_messages ORDER BY id")
    async with plain(db, ttl=None) as s:
        assert (await s.encrypt_existing())["changed"] == 2
        await s.add_items([{"role": "user", "content": "new"}])
        legit = await s.get_items()
    sql(
        db,
        "INSERT INTO agent_messages (id, session_id, message_data) VALUES (-1, 's', ?)",
        backup[1][0],
    )
    async with plain(db, ttl=None) as s:
        for read in (s.get_items, lambda: s.get_items(limit=10), s.verify_history):
            try:
                result = await read()
            except HistoryTamperedError:
                continue
            assert result in (legit, len(legit)), result


async def test_a_branch_emptied_with_its_head_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "branch.db"
    async with adv(db, ttl=None) as s:
        await s.add_items(turns(6))
        await s.create_branch_from_turn(3, "b")
        await s.add_items(turns(2, "bb"))
    sql(
        db,
        "DELETE FROM agent_messages WHERE id IN (SELECT message_id FROM message_structure "
        "WHERE branch_id = 'b' AND message_id NOT IN "
        "(SELECT message_id FROM message_structure WHERE branch_id = 'main'))",
    )
    sql(db, "DELETE FROM message_structure WHERE branch_id = 'b'")
    sql(db, "DELETE FROM agent_messages_heads WHERE branch_id = 'b'")
    assert cli("verify", str(db)).returncode != 0
    async with adv(db, ttl=None) as s:
        await s.switch_to_branch("b")
        with pytest.raises(HistoryTamperedError):
            await s.get_items()


async def test_anchor_taken_after_a_purge_catches_a_rollback_to_before_it(tmp_path: Path) -> None:
    db, before = tmp_path / "purge.db", tmp_path / "before-purge.db"
    clock = Clock(time.time() - 500)
    async with plain(db, ttl=100, clock=clock) as s:
        await s.add_items(turns(2, "old"))
        clock.t += 90
        await s.add_items(turns(2, "new"))
    clock.t += 20
    shutil.copy(db, before)
    async with plain(db, ttl=100, clock=clock) as s:
        assert await s.purge_expired() == 2
        anchor = await s.history_head()
    shutil.copy(before, db)  # the attacker's rollback: rows and head from before the purge
    assert cli("verify", str(db), "--head", f"s={anchor}").returncode != 0
    async with plain(db, ttl=None) as s:
        with pytest.raises(HistoryTamperedError):
            await s.verify_history(anchor=anchor)


async def test_anchor_does_not_let_anyone_confirm_guessed_content(tmp_path: Path) -> None:
    item = {"role": "user", "content": "yes"}
    async with plain(tmp_path / "a.db", ttl=None) as s:
        await s.add_items([item])
        anchor = await s.history_head()
    sealed = json.dumps({"seq": 1, "prev": "", "item": item}, separators=(",", ":"))
    guess = "1." + hashlib.sha256(sealed.encode()).hexdigest()[:32]
    assert anchor != guess


async def test_popped_item_put_back_with_its_old_head_needs_an_anchor(tmp_path: Path) -> None:
    """A session rolled back as a whole (its rows and its head): SECURITY.md says only an
    anchor kept outside the store catches it."""
    db = tmp_path / "popback.db"
    async with plain(db, ttl=None) as s:
        await s.add_items(turns(3))
    row = sql(db, "SELECT * FROM agent_messages WHERE id = 3")[0]
    head = sql(db, "SELECT * FROM agent_messages_heads")
    async with plain(db, ttl=None) as s:
        assert await s.pop_item() == turns(3)[2]
        anchor = await s.history_head()
    sql(db, "INSERT INTO agent_messages VALUES (?, ?, ?, ?)", *row)
    sql(db, "DELETE FROM agent_messages_heads")
    for h in head:
        sql(db, "INSERT INTO agent_messages_heads VALUES (?, ?, ?)", *h)
    async with plain(db, ttl=None) as s:
        assert await s.get_items() == turns(3)  # undetectable from inside the store
        with pytest.raises(HistoryTamperedError):
            await s.verify_history(anchor=anchor)


# ---------------------------------------------------------------- attacks that held


@pytest.mark.parametrize(
    ("attack", "statement"),
    [
        ("cut front", "DELETE FROM agent_messages WHERE id IN (1, 2)"),
        ("cut tail", "DELETE FROM agent_messages WHERE id = 5"),
        ("drop head", "DELETE FROM agent_messages_heads"),
        ("drop heads table", "DROP TABLE agent_messages_heads"),
        (
            "duplicate newest",
            "INSERT INTO agent_messages (session_id, message_data) "
            "SELECT session_id, message_data FROM agent_messages WHERE id = 5",
        ),
    ],
)
async def test_store_edits_are_caught_by_full_and_wide_window_reads(
    tmp_path: Path, attack: str, statement: str
) -> None:
    db = tmp_path / "s.db"
    async with plain(db, ttl=None) as s:
        await s.add_items(turns(5))
    sql(db, statement)
    async with plain(db, ttl=None) as s:
        for read in (s.get_items, lambda: s.get_items(limit=10), s.verify_history):
            with pytest.raises(HistoryTamperedError):
                await read()
        if attack not in ("cut front", "duplicate newest"):  # else the newest is authentic
            with pytest.raises(HistoryTamperedError):
                await s.get_items(limit=1)
    assert sql(db, "SELECT count(*) FROM agent_messages")[0][0] >= 3  # nothing deleted


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE message_structure SET message_type = 'assistant' WHERE id = 3",
        "UPDATE message_structure SET message_type = 'user' WHERE id = 2",
        "UPDATE message_structure SET branch_turn_number = 5 WHERE id IN (3, 4)",
        "UPDATE message_structure SET branch_turn_number = NULL WHERE id = 3",
        "UPDATE message_structure SET branch_turn_number = 3 - branch_turn_number",
    ],
)
async def test_forged_turn_structure_is_refused_by_every_turn_query(
    tmp_path: Path, statement: str
) -> None:
    db = tmp_path / "t.db"
    async with adv(db, ttl=None) as s:
        await s.add_items(turns(2, "alpha"))
        await s.add_items(turns(2, "beta"))
    sql(db, statement)
    async with adv(db, ttl=None) as s:
        for query in (
            s.get_conversation_turns,
            lambda: s.find_turns_by_content("beta0"),
            s.get_turn_usage,
            s.verify_history,
            lambda: s.create_branch_from_turn(2, "x"),
        ):
            with pytest.raises(HistoryTamperedError):
                await query()


async def test_clear_then_rows_put_back_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    async with adv(db, ttl=None) as s:
        await s.add_items(turns(3))
    rows = sql(db, "SELECT * FROM agent_messages")
    structure = sql(db, "SELECT * FROM message_structure")
    async with adv(db, ttl=None) as s:
        await s.clear_session()
    for r in rows:
        sql(db, "INSERT INTO agent_messages VALUES (?, ?, ?, ?)", *r)
    for r in structure:
        sql(db, "INSERT INTO message_structure VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", *r)
    async with adv(db, ttl=None) as s:  # HistoryTamperedError, or any refusal to read them
        with pytest.raises(DecryptionError):
            await s.get_items()
        with pytest.raises(DecryptionError):
            await s.get_items(limit=1)


async def test_tamper_errors_and_logs_hold_no_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "CANARY-7f3a"
    db = tmp_path / "leak.db"
    async with adv(db, ttl=None) as s:
        await s.add_items(
            [{"role": "user", "content": canary}, {"role": "assistant", "content": canary}]
        )
    row = json.loads(sql(db, "SELECT message_data FROM agent_messages WHERE id = 1")[0][0])
    caplog.set_level("DEBUG")
    messages = []
    for field, value in [("role", "assistant"), ("content", canary), ("role", 1)]:
        sql(
            db,
            "UPDATE agent_messages SET message_data = ? WHERE id = 1",
            json.dumps({**row, field: value}),
        )
        for mode in ("raise", "skip"):
            async with adv(db, ttl=None, on_invalid=mode) as s:
                for call in (
                    s.get_items,
                    s.get_conversation_turns,
                    lambda: s.find_turns_by_content(canary),
                ):
                    try:
                        await call()
                    except Exception as exc:
                        messages.append(f"{exc} {exc!r}")
    assert messages
    assert not [m for m in messages if canary in m]
    assert canary not in caplog.text


# ---------------------------------------------------------------- legitimate sequences


async def test_pop_on_a_fresh_branch_leaves_main_intact(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    async with adv(db, ttl=None) as s:
        await s.add_items(turns(4))
        await s.create_branch_from_turn(2, "x")
        assert await s.pop_item() == turns(4)[1]
        assert await s.get_items() == turns(4)[:1]
        await s.switch_to_branch("main")
        assert await s.get_items() == turns(4)
        assert await s.verify_history() == 4


async def test_purge_with_shared_branch_items_raises_no_false_alarm(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    clock = Clock(time.time() - 1000)
    async with adv(db, ttl=100, clock=clock) as s:
        await s.add_items(turns(4, "old"))
        clock.t += 50
        await s.add_items(turns(2, "mid"))
        await s.create_branch_from_turn(3, "b")
        await s.add_items(turns(2, "bnew"))
        clock.t += 60
        assert await s.purge_expired() > 0
        for branch, expected in [("b", turns(2, "bnew")), ("main", turns(2, "mid"))]:
            await s.switch_to_branch(branch)
            assert await s.get_items() == expected
            assert await s.get_items(limit=9) == expected
            assert await s.verify_history() == 2
            assert len(await s.get_conversation_turns()) == 1


async def test_writers_with_skewed_clocks_raise_no_false_alarm(tmp_path: Path) -> None:
    db = tmp_path / "skew.db"
    now = time.time() - 1000
    fast, slow = Clock(now), Clock(now - 5)
    a, b = plain(db, ttl=10, clock=fast), plain(db, ttl=10, clock=slow)
    await a.add_items([{"role": "user", "content": "a1"}])
    await b.add_items([{"role": "user", "content": "b1"}])
    await a.add_items([{"role": "user", "content": "a2"}])
    fast.t += 7  # b1 (sealed 5 s "earlier") has expired between two live items
    expected = [{"role": "user", "content": "a1"}, {"role": "user", "content": "a2"}]
    assert await a.get_items() == expected
    assert await a.get_items(limit=2) == expected
    await a.purge_expired()
    assert await a.get_items() == expected
    await a.verify_history()
    assert await a.pop_item() == expected[1]
    await a.close()
    await b.close()


async def test_rotation_with_branches_verifies_under_the_new_key_alone(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    new = generate_key()
    async with adv(db, ttl=None) as s:
        await s.add_items(turns(6))
        await s.create_branch_from_turn(2, "b")
        await s.add_items(turns(2, "bb"))
        await s.switch_to_branch("main")
        await s.create_branch_from_turn(3, "c")  # a branch with no item of its own
        await s.switch_to_branch("main")
        await s.pop_item()
    async with adv(db, ttl=None, key=Keyring(KEY).with_primary(new, kid="new")) as s:
        await s.rotate_keys()
    async with adv(db, ttl=None, key=Keyring({"new": new})) as s:
        for branch, count in [("main", 5), ("b", 4), ("c", 4)]:
            await s.switch_to_branch(branch)
            assert await s.verify_history() == count
            assert len(await s.get_items(limit=2)) == 2


@pytest.mark.parametrize("make", [plain, adv])
async def test_two_sessions_interleaved_match_a_model(tmp_path: Path, make: Any) -> None:
    db = tmp_path / "two.db"
    rng = random.Random(7)
    a, b = make(db, ttl=None), make(db, ttl=None)
    model: list[dict[str, Any]] = []
    for step in range(120):
        who = rng.choice([a, b])
        op = rng.choice(
            ["add", "add", "pop", "read", "window"] + (["clear"] if step % 40 == 39 else [])
        )
        if op == "add":
            items = [{"role": "user", "content": f"{step}.{i}"} for i in range(rng.randint(1, 3))]
            await who.add_items(items)
            model.extend(items)
        elif op == "pop":
            assert await who.pop_item() == (model.pop() if model else None)
        elif op == "read":
            assert await who.get_items() == model
        elif op == "window":
            n = rng.randint(1, 5)
            assert await who.get_items(limit=n) == model[-n:]
        else:
            await who.clear_session()
            model.clear()
    assert await a.verify_history() == len(model)
    await a.close()
    await b.close()
