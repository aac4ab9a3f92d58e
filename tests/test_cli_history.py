"""`encmem verify` audits each session's history as a chain, `--head` checks it against an
anchor kept elsewhere, and `encmem head` prints those anchors: run for real on SQLite stores
built by the library and tampered with by plain SQL, as an attacker without keys would."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import AdvancedSQLiteSession, SQLiteSession

from encmem import EncryptedSession, Keyring, generate_key

ENCMEM = str(Path(sys.executable).with_name("encmem"))
KEY, NEW = generate_key(), generate_key()
KEYS = f"k1:{KEY}"


def run(*args: str, keys: str | None = KEYS) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}
    if keys is not None:
        env["ENCMEM_KEYS"] = keys
    done = subprocess.run(
        [ENCMEM, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    for key in (KEY, NEW):
        assert key not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "content " not in done.stdout + done.stderr  # no message content, ever
    return done


def verify(path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """(exit code, the --json report, the readable report)."""
    as_json = run("verify", str(path), "--json", *args)
    readable = run("verify", str(path), *args)
    assert as_json.returncode == readable.returncode, readable.stderr
    return as_json.returncode, json.loads(as_json.stdout), readable.stdout


def kinds(report: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(p["session_id"], p["branch_id"], p["kind"]) for p in report["problems"] if "kind" in p]


# -- stores --------------------------------------------------------------------------------


def sealed(session_id: str, path: Path) -> EncryptedSession:
    return EncryptedSession(
        underlying_session=SQLiteSession(session_id, path),
        encryption_key=Keyring({"k1": KEY}),
        ttl=None,
    )


def build(path: Path, sessions: dict[str, int] | None = None) -> Path:
    async def fill() -> None:
        for session_id, count in (sessions or {"s0": 5, "s1": 3}).items():
            session = sealed(session_id, path)
            for n in range(count):  # one write each: each item its own transaction
                await session.add_items([{"role": "user", "content": f"content {n}"}])
            await session.close()

    asyncio.run(fill())
    return path


def rows(path: Path, session_id: str = "s0") -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT id, message_data FROM agent_messages WHERE session_id = ? ORDER BY id",
            (session_id,),
        ).fetchall()


def sql(path: Path, statement: str, *params: Any) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement, params)


def insert(path: Path, session_id: str, data: str) -> None:
    sql(
        path,
        "INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)",
        session_id,
        data,
    )


def anchor_of(path: Path, session: str = "s0", branch: str | None = None) -> str:
    """What `encmem head` prints for one session (or branch): SESSION[@BRANCH]=ANCHOR."""
    args = ["--branch", branch] if branch else []
    done = run("head", str(path), "--session", session, *args)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    target = f"{session}@{branch}" if branch else session
    assert line.startswith(f"{target}=") and "\n" not in line
    return line


# -- a clean store -------------------------------------------------------------------------


def test_a_clean_store_verifies_with_every_history_checked(tmp_path: Path) -> None:
    code, report, text = verify(build(tmp_path / "clean.db"))
    assert code == 0 and report["ok"] and report["problems"] == []
    assert report["checked"] == 8 and report["histories"] == 2 and report["anchors"] == 0
    assert text == "OK (8 items checked)\n"


# -- the attacks, each named by its kind ---------------------------------------------------


def _reorder(path: Path) -> None:
    found = rows(path)
    for (row_id, _), (_, data) in zip(found, reversed(found), strict=True):
        sql(path, "UPDATE agent_messages SET message_data = ? WHERE id = ?", data, row_id)


def _duplicate(path: Path) -> None:
    insert(path, "s0", rows(path)[2][1])


def _delete_middle(path: Path) -> None:
    sql(path, "DELETE FROM agent_messages WHERE id = ?", rows(path)[2][0])


def _resurrect(path: Path) -> None:
    popped = rows(path)[-1][1]

    async def pop() -> None:
        session = sealed("s0", path)
        assert await session.pop_item() == {"role": "user", "content": "content 4"}
        await session.close()

    asyncio.run(pop())
    insert(path, "s0", popped)


def _drop_head(path: Path) -> None:
    sql(path, "DELETE FROM agent_messages_heads WHERE session_id = 's0'")


def _forge_head(path: Path) -> None:
    sql(path, "UPDATE agent_messages_heads SET head = 'zz notatoken' WHERE session_id = 's0'")


ATTACKS = {
    "reorder rows": (_reorder, "reordered"),
    "duplicate a row": (_duplicate, "duplicated"),
    "delete a middle row": (_delete_middle, "missing"),
    "re-insert a popped row": (_resurrect, "resurrected"),
    "delete the head row": (_drop_head, "head mismatch"),
    "replace the head": (_forge_head, "head mismatch"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_each_attack_is_a_finding_of_its_kind(attack: str, tmp_path: Path) -> None:
    path = build(tmp_path / "store.db")
    tamper, kind = ATTACKS[attack]
    tamper(path)
    before = rows(path)
    code, report, text = verify(path)
    assert code == 1 and not report["ok"] and report["keys_ok"]
    assert kinds(report) == [("s0", None, kind)]  # s1 is intact
    (finding,) = report["problems"]
    assert finding["problem"] == f"history: {kind}" and finding["reason"]
    assert set(finding) >= {"session_id", "branch_id", "storage_id", "position", "reason"}
    if kind != "head mismatch" or attack == "delete the head row":
        assert finding["storage_id"] in {row_id for row_id, _ in before}
        assert finding["position"] >= 1
    (line, verdict) = text.splitlines()
    assert line.startswith(("s0 ", "s0: ")) and f": history: {kind}: " in line
    if finding["position"] is not None:
        assert f"position {finding['position']} storage id {finding['storage_id']}" in line
    assert verdict == f"FAILED: 1 problem ({len(before + rows(path, 's1'))} items checked)"
    assert rows(path) == before  # verify reads, never repairs


def test_where_a_break_is_named(tmp_path: Path) -> None:
    path = build(tmp_path / "store.db")
    third = rows(path)[2][0]
    _delete_middle(path)
    _, report, text = verify(path)
    (finding,) = report["problems"]
    # items 1, 2, 4, 5 remain: item 4 (storage id 4), second from the newest, breaks the chain
    assert (finding["storage_id"], finding["position"]) == (third + 1, 2)
    assert f"s0 position 2 storage id {third + 1}: history: missing: " in text


def test_an_item_that_fails_on_its_own_is_reported_once(tmp_path: Path) -> None:
    path = build(tmp_path / "store.db")
    row_id, data = rows(path)[1]
    envelope = json.loads(data)
    token = envelope["payload"]
    envelope["payload"] = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    sql(
        path,
        "UPDATE agent_messages SET message_data = ? WHERE id = ?",
        json.dumps(envelope),
        row_id,
    )
    code, report, _ = verify(path)
    assert code == 1
    assert [(p["storage_id"], p["problem"]) for p in report["problems"]] == [
        (row_id, "TamperedItemError")
    ]


def test_control_characters_of_a_tampered_session_are_escaped(tmp_path: Path) -> None:
    evil = "evil\x1b[2J\rOK"
    path = build(tmp_path / "store.db", {evil: 3})
    sql(path, "DELETE FROM agent_messages_heads")
    code, report, text = verify(path)
    assert code == 1 and kinds(report) == [(evil, None, "head mismatch")]
    assert "\x1b" not in text and "\r" not in text and "evil\\x1b[2J\\x0dOK" in text


# -- branches ------------------------------------------------------------------------------


def build_branched(path: Path) -> Path:
    async def fill() -> None:
        underlying = AdvancedSQLiteSession(session_id="b0", db_path=path, create_tables=True)
        session = EncryptedSession(
            underlying_session=underlying, encryption_key=Keyring({"k1": KEY}), ttl=None
        )
        for n in range(3):
            await session.add_items([{"role": "user", "content": f"content {n}"}])
            if n == 2:
                await session.add_items([{"role": "assistant", "content": "content answer"}])
        await session.create_branch_from_turn(2, "feat")
        await session.add_items([{"role": "user", "content": "content on feat"}])
        await session.close()

    asyncio.run(fill())
    return path


def test_every_branch_is_a_history_of_its_own(tmp_path: Path) -> None:
    path = build_branched(tmp_path / "branched.db")
    code, report, _ = verify(path)
    assert code == 0 and report["histories"] == 2
    heads = run("head", str(path))
    assert heads.returncode == 0
    assert [line.split("=")[0] for line in heads.stdout.splitlines()] == ["b0@main", "b0@feat"]
    feat = anchor_of(path, "b0", "feat")
    assert feat in heads.stdout and feat.startswith("b0@feat=k1:1-2.")
    assert verify(path, "--head", feat)[0] == 0
    sql(path, "DELETE FROM agent_messages_heads WHERE branch_id = 'feat'")
    code, report, text = verify(path, "--head", feat)
    assert code == 1 and kinds(report) == [("b0", "feat", "head mismatch")]
    assert report["problems"][0]["anchor"] == feat.split("=")[1]
    assert text.startswith("b0 branch feat position 1 storage id ")


def test_edited_turn_structure_is_forged_structure(tmp_path: Path) -> None:
    path = build_branched(tmp_path / "branched.db")
    with sqlite3.connect(path) as conn:
        (answer,) = conn.execute(
            "SELECT message_id FROM message_structure WHERE message_type = 'assistant'"
        ).fetchone()
        conn.execute(
            "UPDATE message_structure SET message_type = 'user' WHERE message_id = ?", (answer,)
        )
    code, report, text = verify(path)
    assert code == 1 and kinds(report) == [("b0", "main", "forged structure")]
    assert "b0 branch main" in text and ": history: forged structure: " in text


# -- anchors -------------------------------------------------------------------------------


def test_head_prints_anchors_that_verify_takes(tmp_path: Path) -> None:
    path = build(tmp_path / "store.db")
    every = run("head", str(path))
    assert every.returncode == 0
    lines = every.stdout.splitlines()
    assert [line.split("=")[0] for line in lines] == ["s0", "s1"]
    assert lines[0] == anchor_of(path) and lines[0].startswith("s0=k1:1-5.")
    assert lines[1].startswith("s1=k1:1-3.")
    as_json = json.loads(run("head", str(path), "--session", "s1", "--json").stdout)
    assert as_json == {"heads": [{"session_id": "s1", "branch_id": None, "anchor": lines[1][3:]}]}
    code, report, text = verify(path, "--head", lines[0], "--head", lines[1])
    assert code == 0 and report["anchors"] == 2 and text.startswith("OK (8 items checked)")


def test_a_rolled_back_store_is_caught_only_by_its_anchor(tmp_path: Path) -> None:
    path = build(tmp_path / "store.db")
    backup = path.read_bytes()

    async def more() -> None:
        session = sealed("s0", path)
        await session.add_items([{"role": "user", "content": "content later"}])
        await session.close()

    asyncio.run(more())
    anchor = anchor_of(path)
    assert anchor.startswith("s0=k1:1-6.")
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(backup)  # rows and heads together: consistent, and older
    assert verify(path)[0] == 0
    code, report, text = verify(path, "--head", anchor)
    assert code == 1
    (finding,) = report["problems"]
    assert finding["problem"] == "history: head mismatch (does not end at the anchor)"
    assert finding["kind"] == "head mismatch" and finding["session_id"] == "s0"
    assert finding["anchor"] == anchor[3:] and finding["found"].startswith("k1:1-5.")
    assert text.startswith("s0: history: head mismatch (does not end at the anchor): ")
    assert finding["found"] in text and anchor[3:] in text


def test_an_anchor_of_a_session_the_store_lacks_is_a_finding(tmp_path: Path) -> None:
    path = build(tmp_path / "store.db")
    code, report, _ = verify(path, "--head", "gone=k1:1-4." + "0" * 32)
    assert code == 1 and kinds(report) == [("gone", None, "head mismatch")]
    assert "no such session" in report["problems"][0]["reason"]


@pytest.mark.parametrize(
    "bad",
    [
        "s0",
        "s0=",
        "=k1:1-5." + "0" * 32,
        "s0=k1:1-5",
        "s0=k1:1-5.abc",
        "s0=k1:x-5." + "0" * 32,
        "s0=k1:1-5." + "0" * 33,
        "s0=5." + "0" * 32,
    ],
)
def test_a_malformed_head_is_a_usage_error(bad: str, tmp_path: Path) -> None:
    path = build(tmp_path / "store.db")
    done = run("verify", str(path), "--head", bad)
    assert done.returncode == 2 and "SESSION=ANCHOR" in done.stderr and done.stdout == ""


def test_head_usage_and_missing_sessions(tmp_path: Path) -> None:
    path = build(tmp_path / "store.db")
    good = anchor_of(path)
    twice = run("verify", str(path), "--head", good, "--head", "s0=k1:1-0." + "0" * 32)
    assert twice.returncode == 2 and "twice" in twice.stderr
    no_branches = run("verify", str(path), "--head", "s0@feat=k1:1-0." + "0" * 32)
    assert no_branches.returncode == 2 and "no branches" in no_branches.stderr
    assert run("head", str(path), "--branch", "main").returncode == 2
    assert run("head", str(path), "--session", "s0", "--branch", "main").returncode == 2
    missing = run("head", str(path), "--session", "nobody")
    assert missing.returncode == 4 and "no session 'nobody'" in missing.stderr


def test_head_prints_no_anchor_for_a_broken_history(tmp_path: Path) -> None:
    path = build(tmp_path / "store.db")
    _delete_middle(path)
    done = run("head", str(path), "--session", "s0")
    assert done.returncode == 1 and done.stdout == ""
    assert "history: missing" in done.stderr and "encmem verify" in done.stderr


def test_a_session_id_with_an_at_sign_is_taken_whole(tmp_path: Path) -> None:
    path = build(tmp_path / "store.db", {"ann@example.com": 2})
    anchor = anchor_of(path, "ann@example.com")
    code, report, _ = verify(path, "--head", anchor)
    assert code == 0 and report["anchors"] == 1


# -- sessions sealed before chains ---------------------------------------------------------


def build_unchained(path: Path) -> Path:
    """Sessions as encmem 0.2 (v2 envelopes) and the Agents SDK (v1) wrote them."""
    ring = Keyring({"k1": KEY})
    sealed_at = int(time.time()) - 60

    def envelope(version: int, session_id: str, n: int) -> dict[str, Any]:
        item = {"role": "user", "content": f"content {n}"}
        data = json.dumps(item).encode()
        if version == 1:
            token = ring.sdk_keys(session_id)[0].seal(data, sealed_at)
            return {"__enc__": 1, "v": 1, "kid": "hkdf-v1", "payload": token}
        key = ring.session_key("k1", session_id)
        assert key is not None
        return {
            "__enc__": 1,
            "v": 2,
            "kid": "k1",
            "payload": key.seal(data, sealed_at),
            "role": "user",
        }

    async def fill() -> None:
        for session_id, version, count in (("old0", 2, 3), ("old1", 2, 2), ("sdk", 1, 2)):
            plain = SQLiteSession(session_id, path)
            await plain.add_items([envelope(version, session_id, n) for n in range(count)])
            await plain.close()

    asyncio.run(fill())
    return path


def test_sessions_sealed_before_chains_are_reported_then_chained_by_rotate(
    tmp_path: Path,
) -> None:
    path = build_unchained(tmp_path / "old.db")
    code, report, text = verify(path)
    assert code == 1
    not_chained = {
        p["session_id"]: p["items"]
        for p in report["problems"]
        if p["problem"] == "not-chained (run encmem rotate)"
    }
    assert not_chained == {"old0": 3, "old1": 2, "sdk": 2}
    sdk = [p for p in report["problems"] if p["problem"].startswith("sdk-v1-format")]
    assert [p["session_id"] for p in sdk] == ["sdk", "sdk"]  # the v2 items are not called v1
    assert kinds(report) == []
    assert "old0: not-chained (run encmem rotate): 3 items sealed before chains" in text

    inspected = json.loads(run("inspect", str(path), "--json").stdout)
    per_session = {s["session_id"]: (s["unchained"], s["sdk_v1"]) for s in inspected["sessions"]}
    assert per_session == {"old0": (3, 0), "old1": (2, 0), "sdk": (2, 2)}
    assert inspected["unchained"] == 7 and inspected["totals"]["sdk_v1"] == 2
    assert "7 not chained (run encmem rotate)" in run("inspect", str(path)).stdout

    before = rows(path, "old0")
    dry = run("rotate", str(path), "--dry-run", "--json")
    counts = json.loads(dry.stdout)
    assert counts["unchained_sessions"] == 3 and counts["unchained"] == 7
    assert counts["changed"] == 7 and rows(path, "old0") == before
    said = run("rotate", str(path), "--dry-run").stdout
    assert "would have chained 3 sessions (7 items not in a chain before)" in said

    done = run("rotate", str(path))
    assert done.returncode == 0 and "chained 3 sessions" in done.stdout
    # chained, under the seeded key
    assert {json.loads(data)["v"] for _, data in rows(path, "old0")} == {4}
    code, report, text = verify(path)
    assert code == 0 and report["histories"] == 3, report
    assert text == "OK (7 items checked)\n"
    again = json.loads(run("rotate", str(path), "--json").stdout)
    assert again["changed"] == 0 and again["unchained_sessions"] == 0
    assert run("inspect", str(path), "--json").stdout.count('"unchained": 0') == 4
