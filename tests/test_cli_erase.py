"""``encmem erase`` and the key store options, run for real: receipts, residue, retention,
a separate key store shredding a backup, and ``rotate --shred-ready``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from encmem.backends import SQLiteKeyStore, SQLiteSession

from encmem import EncryptedSession, Keyring, generate_key

from .test_cli import run

KEY = generate_key()
KEYS = f"k1:{KEY}"
GONE, STAYS = "gone-7f3a9c01", "stays-1b2d4e02"


class SeedlessSQLiteSession(SQLiteSession):
    """encmem's SQLite session without its key store: EncryptedSession then seals items as
    encmem did before seeds (v3, chained, heads kept), as a store written then holds them.
    A protocol method set to None is, for isinstance, a method the class does not have."""

    get_seed = None  # type: ignore[assignment]


async def _fill(path: Path, key_store: Path | None = None, seeded: bool = True) -> list[bytes]:
    """GONE (5 items) and STAYS (2 items); returns what must not survive GONE's erase."""
    ring = Keyring({"k1": KEY})
    kind = SQLiteSession if seeded else SeedlessSQLiteSession
    for session_id, count in ((GONE, 5), (STAYS, 2)):
        seeds = SQLiteKeyStore(key_store) if key_store is not None else None
        async with EncryptedSession(
            underlying_session=kind(session_id, path), encryption_key=ring, key_store=seeds
        ) as session:
            await session.add_items([{"role": "user", "content": f"c{n}"} for n in range(count)])
        if seeds is not None:
            await seeds.aclose()
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT message_data FROM agent_messages WHERE session_id = ?", (GONE,)
        ).fetchall()
    return [GONE.encode(), *(json.loads(row[0])["payload"][:48].encode() for row in rows)]


def _backup(path: Path, to: Path) -> None:
    """A backup as a backup job takes it: SQLite's online backup (the WAL's pages too)."""
    source, target = sqlite3.connect(path), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def _residue(path: Path, needles: list[bytes]) -> int:
    data = b"".join(
        Path(f"{path}{suffix}").read_bytes()
        for suffix in ("", "-wal")
        if Path(f"{path}{suffix}").exists()
    )
    return sum(data.count(needle) for needle in needles)


def test_erase_prints_what_it_did_and_json_is_the_receipt(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    needles = asyncio.run(_fill(path))
    done = run("erase", str(path), "--session", GONE, "--yes")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"erased session {GONE!r}: 8 rows removed (")
    assert "agent_messages 5" in line and "seed 1" in line
    assert "seed destroyed (key store: the session store), WAL emptied" in line
    assert line.endswith("residue scan: 0 copies of the session id, 0 of its ciphertexts")
    assert _residue(path, needles) == 0
    # --json: the library's receipt, as it is
    asyncio.run(_fill(tmp_path / "again.db"))
    done = run("erase", str(tmp_path / "again.db"), "--session", GONE, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    receipt = json.loads(done.stdout)
    assert receipt["session_id"] == GONE and receipt["rows_removed"]["agent_messages"] == 5
    assert receipt["seed_destroyed"] is True and receipt["key_store"] == "the session store"
    assert receipt["residue_pending"] is False and receipt["complete"] is True
    assert (receipt["session_id_hits"], receipt["ciphertext_hits"]) == (0, 0)
    assert receipt["encmem_version"] and receipt["erased_at"].endswith("Z")
    assert "c1" not in done.stdout  # no content, ever
    refused = run("erase", str(path), "--session", STAYS)  # not a terminal, no --yes
    assert refused.returncode == 1 and "nothing was erased" in refused.stderr


_READER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()
print("reading", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@pytest.mark.slow  # the blocked checkpoint waits 2 s for the reader
def test_a_reader_in_another_process_means_exit_6_then_finish(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    needles = asyncio.run(_fill(path))
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        pending = run("erase", str(path), "--session", GONE, "--yes", "--json")
    finally:
        reader.communicate("done\n", timeout=30)
    assert pending.returncode == 6, pending.stderr
    assert "rows removed and seed destroyed; old pages remain in the WAL" in pending.stderr
    assert f"encmem erase DB --session {GONE} --finish" in pending.stderr
    receipt = json.loads(pending.stdout)
    assert receipt["residue_pending"] is True and receipt["complete"] is False
    assert receipt["seed_destroyed"] is True and receipt["rows_removed"]["agent_messages"] == 5
    assert _residue(path, needles) > 0  # what it says is true: copies remain for now
    finished = run("erase", str(path), "--session", GONE, "--finish")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith(f"erase of session {GONE!r} finished: 0 more rows")
    assert "residue scan: 0 copies of the session id" in finished.stdout
    assert _residue(path, needles) == 0
    again = run("erase", str(path), "--session", GONE, "--finish", "--json")
    assert json.loads(again.stdout)["session_id_hits"] == 0 and again.returncode == 0
    no_session = run("erase", str(path), "--finish")
    assert no_session.returncode == 2


def _age(path: Path, session_id: str, days: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE agent_sessions SET updated_at = datetime('now', ?) WHERE session_id = ?",
            (f"-{days} days", session_id),
        )


def test_idle_longer_than_lists_first_then_erases_with_receipts(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    asyncio.run(_fill(path))
    _age(path, GONE, 40)
    before = path.read_bytes()
    listed = run("erase", str(path), "--idle-longer-than", "30d")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        GONE,
        "1 session idle longer than 30d would be erased (dry run: nothing was changed; pass "
        "--yes to erase them)",
    ]
    assert path.read_bytes() == before  # a dry run, on the store opened read-only
    as_json = json.loads(run("erase", str(path), "--idle-longer-than", "30d", "--json").stdout)
    assert as_json == {"dry_run": True, "idle_seconds": 30 * 86400, "sessions": 1,
                       "session_ids": [GONE]}  # fmt: skip
    done = run("erase", str(path), "--idle-longer-than", "30d", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is False and report["sessions"] == 1
    (receipt,) = report["receipts"]
    assert receipt["session_id"] == GONE and receipt["complete"] is True
    ids = {row[0] for row in sqlite3.connect(path).execute("SELECT session_id FROM agent_sessions")}
    assert ids == {STAYS}
    nothing = run("erase", str(path), "--idle-longer-than", "30d", "--yes")
    assert nothing.returncode == 0 and "erased 0 sessions" in nothing.stdout
    both = run("erase", str(path), "--idle-longer-than", "30d", "--session", STAYS)
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_a_separate_key_store_shreds_a_backup_of_the_store(tmp_path: Path) -> None:
    path, keys, backup = tmp_path / "store.db", tmp_path / "keys.db", tmp_path / "backup.db"
    asyncio.run(_fill(path, key_store=keys))
    _backup(path, backup)
    for named in (str(keys), f"sqlite:///{keys}"):  # a path, or a URL of the same file
        ok = run("verify", str(path), "--key-store", named, keys=KEYS)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    elsewhere = run("verify", str(path), keys=KEYS)  # the seeds are not in the store
    assert elsewhere.returncode == 1 and "pass --key-store" in elsewhere.stdout
    done = run("erase", str(path), "--session", GONE, "--yes", "--key-store", str(keys))
    assert done.returncode == 0, done.stderr
    assert f"seed destroyed (key store: SQLiteKeyStore({str(keys)!r}))" in done.stdout
    audit = run("verify", str(backup), "--key-store", str(keys), "--json", keys=KEYS)
    assert audit.returncode == 1, audit.stderr
    problems = json.loads(audit.stdout)["problems"]
    assert problems == [{"session_id": GONE, "branch_id": None, "storage_id": None,
                         "problem": "erased (SessionErasedError)", "items": 5}]  # fmt: skip
    kept = run("export", str(backup), "--session", STAYS, "--key-store", str(keys), keys=KEYS)
    assert kept.returncode == 0 and len(kept.stdout.splitlines()) == 2
    gone = run("export", str(backup), "--session", GONE, "--key-store", str(keys), keys=KEYS)
    assert gone.returncode == 4 and "no longer holds" in gone.stderr
    missing = run("verify", str(path), "--key-store", str(tmp_path / "nope.db"), keys=KEYS)
    assert missing.returncode == 4 and "does not exist" in missing.stderr
    assert not (tmp_path / "nope.db").exists()


def test_rotate_shred_ready_makes_a_store_sealed_before_seeds_shreddable(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    asyncio.run(_fill(path, seeded=False))
    inspected = json.loads(run("inspect", str(path), "--json").stdout)
    assert inspected["unshreddable"] == 7
    assert [s["unshreddable"] for s in inspected["sessions"]] == [5, 2]
    audit = run("verify", str(path), "--json", keys=KEYS)
    assert audit.returncode == 1
    assert {(p["session_id"], p["problem"], p["items"]) for p in json.loads(audit.stdout)[
        "problems"]} == {(GONE, "not-shreddable (run encmem rotate)", 5),
                         (STAYS, "not-shreddable (run encmem rotate)", 2)}  # fmt: skip
    rotated = run("rotate", str(path), "--shred-ready", keys=KEYS)
    assert rotated.returncode == 0, rotated.stderr
    assert "made 2 sessions shreddable (7 items sealed without a seed before)" in rotated.stdout
    assert json.loads(run("inspect", str(path), "--json").stdout)["unshreddable"] == 0
    clean = run("verify", str(path), keys=KEYS)
    assert clean.returncode == 0 and clean.stdout.startswith("OK"), clean.stdout
    backup = tmp_path / "backup.db"
    _backup(path, backup)
    assert run("erase", str(path), "--session", GONE, "--yes").returncode == 0
    # The backup keeps its own seed table: restoring the key store with it restores the
    # session (same-store seeds shred the live file's residue, not backups).
    assert run("verify", str(backup), keys=KEYS).returncode == 0
    # A session store is not a key store of its own (its seeds table is named after its
    # messages table): pointing --key-store at it is refused, nothing is read.
    refused = run("verify", str(backup), "--key-store", str(path), "--json", keys=KEYS)
    assert refused.returncode == 4 and refused.stdout == ""
