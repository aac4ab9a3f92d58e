"""The encmem command, run for real in a subprocess against real databases."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import SQLiteSession

from encmem import EncryptedSession, Keyring, generate_key

ENCMEM = str(Path(sys.executable).with_name("encmem"))
OLD, NEW = generate_key(), generate_key()
ALL_KEYS = (OLD, NEW)


def run(
    *args: str, keys: str | None = None, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}
    if keys is not None:
        env["ENCMEM_KEYS"] = keys
    done = subprocess.run(
        [ENCMEM, *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=timeout,
        check=False,
    )
    for key in ALL_KEYS:
        assert key not in done.stdout and key not in done.stderr
        assert key[:16] not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr or "--debug" in args
    return done


def dump(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT id, session_id, message_data FROM agent_messages ORDER BY id"
        ).fetchall()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _fill(path: Path) -> None:
    ring = Keyring({"old": OLD})
    clock = Clock(time.time() - 40 * 86400)  # 40 days ago
    for n in range(3):
        session = EncryptedSession(
            underlying_session=SQLiteSession(f"user-{n}", path), encryption_key=ring, clock=clock
        )
        await session.add_items([{"role": "user", "content": f"old {n}-{i}"} for i in range(4)])
        clock.now = time.time()
        await session.add_items(
            [{"role": "assistant", "content": f"new {n}-{i}"} for i in range(2)]
        )
        clock.now = time.time() - 40 * 86400
        await session.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "store.db"
    asyncio.run(_fill(path))
    yield path


def test_inspect_table_and_json(db: Path) -> None:
    done = run("inspect", str(db))
    assert done.returncode == 0, done.stderr
    assert (
        "user-0" in done.stdout and "old:6" in done.stdout and "3 sessions, 18 items" in done.stdout
    )
    as_json = json.loads(
        run("inspect", str(db), "--json", "--ttl", "30d", keys=f"old:{OLD}").stdout
    )
    assert as_json["totals"] == {
        "sessions": 3,
        "items": 18,
        "plaintext": 0,
        "sdk_v1": 0,
        "expired": 12,
        "unreadable": 0,
    }
    first = as_json["sessions"][0]
    assert first["session_id"] == "user-0" and first["key_ids"] == {"old": 6}
    assert first["oldest"] < first["newest"]


def test_verify_passes_a_clean_store_and_lists_offenders(db: Path) -> None:
    ok = run("verify", str(db), keys=f"old:{OLD}")
    assert ok.returncode == 0 and ok.stdout.startswith("OK (18 items checked)")
    retention = run("verify", str(db), "--ttl", "30d", "--json", keys=f"old:{OLD}")
    assert retention.returncode == 1
    assert len(json.loads(retention.stdout)["problems"]) == 12
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)",
            ("user-1", json.dumps({"role": "user"})),
        )
        row_id, data = conn.execute(
            "SELECT id, message_data FROM agent_messages WHERE id = 2"
        ).fetchone()
        stored = json.loads(data)
        stored["role"] = "assistant"
        conn.execute(
            "UPDATE agent_messages SET message_data = ? WHERE id = ?", (json.dumps(stored), row_id)
        )
    bad = run("verify", str(db), "--json", keys=f"old:{OLD}")
    assert bad.returncode == 1
    problems = json.loads(bad.stdout)["problems"]
    assert {(p["session_id"], p["problem"]) for p in problems} == {
        ("user-0", "TamperedItemError"),
        ("user-1", "plaintext"),
    }
    assert run("verify", str(db), keys=f"other:{NEW}").returncode == 3  # no key for "old"


def test_purge_dry_run_changes_nothing_then_purges_exactly(db: Path) -> None:
    before = dump(db)
    dry = run("purge", str(db), "--ttl", "30d", "--dry-run", "--json", keys=f"old:{OLD}")
    assert dry.returncode == 0 and json.loads(dry.stdout)["changed"] == 12
    assert dump(db) == before
    real = run("purge", str(db), "--ttl", "30d", keys=f"old:{OLD}")
    assert real.returncode == 0 and "deleted 12" in real.stdout
    after = dump(db)
    assert len(after) == 6 and all(row in before for row in after)


def test_rotate_dry_run_then_rotate_then_idempotent(db: Path) -> None:
    before = dump(db)
    keys = f"new:{NEW},old:{OLD}"
    dry = run("rotate", str(db), "--dry-run", "--json", keys=keys)
    assert json.loads(dry.stdout)["changed"] == 18 and dump(db) == before
    done = run("rotate", str(db), "--json", keys=keys)
    assert done.returncode == 0 and json.loads(done.stdout)["changed"] == 18
    assert {json.loads(row[2])["kid"] for row in dump(db)} == {"new"}
    assert json.loads(run("rotate", str(db), "--json", keys=keys).stdout)["changed"] == 0
    verify = run("verify", str(db), keys=f"new:{NEW}")
    assert verify.returncode == 0


def test_wrong_key_changes_nothing(db: Path) -> None:
    before = dump(db)
    for command in (["rotate"], ["purge", "--ttl", "1d"]):
        done = run(*command, str(db), keys=f"new:{NEW}")
        assert done.returncode == 3, done.stderr
        assert "nothing was changed" in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert dump(db) == before
    # encrypt leaves items already in encmem's format alone, whatever the key
    done = run("encrypt", str(db), "--json", keys=f"new:{NEW}")
    assert done.returncode == 0 and json.loads(done.stdout)["changed"] == 0
    assert dump(db) == before


def test_encrypt_migrates_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"

    async def fill() -> None:
        plain = SQLiteSession("legacy", path)
        await plain.add_items([{"role": "user", "content": "was plaintext"}])
        await plain.close()

    asyncio.run(fill())
    done = run("encrypt", str(path), "--json", keys=f"k:{NEW}")
    assert done.returncode == 0 and json.loads(done.stdout)["changed"] == 1
    assert b"was plaintext" not in path.read_bytes()
    exported = run("export", str(path), "--session", "legacy", keys=f"k:{NEW}")
    assert json.loads(exported.stdout)["item"] == {"role": "user", "content": "was plaintext"}


def test_export_writes_decrypted_json_lines(db: Path, tmp_path: Path) -> None:
    done = run("export", str(db), "--session", "user-2", keys=f"old:{OLD}")
    assert done.returncode == 0
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["item"]["content"] for line in lines] == [f"old 2-{i}" for i in range(4)] + [
        f"new 2-{i}" for i in range(2)
    ]
    assert all(line["session_id"] == "user-2" and line["sealed_at"].endswith("Z") for line in lines)
    out = tmp_path / "dsar.jsonl"
    assert (
        run(
            "export", str(db), "--session", "user-2", "--out", str(out), keys=f"old:{OLD}"
        ).returncode
        == 0
    )
    assert out.read_text().splitlines() == done.stdout.splitlines()
    missing = run("export", str(db), "--session", "nobody", keys=f"old:{OLD}")
    assert missing.returncode == 4 and "no session 'nobody'" in missing.stderr


def test_erase_asks_unless_yes(db: Path) -> None:
    before = dump(db)
    refused = run("erase", str(db), "--session", "user-1")
    assert refused.returncode == 1 and "nothing was erased" in refused.stderr
    assert dump(db) == before
    done = run("erase", str(db), "--session", "user-1", "--yes")
    assert done.returncode == 0 and "9 rows" in done.stdout  # 6 items, session, head, seed
    assert {row[1] for row in dump(db)} == {"user-0", "user-2"}
    with sqlite3.connect(db) as conn:
        assert conn.execute(
            "SELECT COUNT(*) FROM agent_sessions WHERE session_id = 'user-1'"
        ).fetchone() == (0,)


def test_actionable_errors_are_one_line(db: Path, tmp_path: Path) -> None:
    no_key = run("verify", str(db))
    assert no_key.returncode == 3 and "ENCMEM_KEYS" in no_key.stderr
    assert len(no_key.stderr.strip().splitlines()) == 1
    weak = run("verify", str(db), keys="k:hunter2")
    assert weak.returncode == 3 and "from_passphrase" in weak.stderr
    for target in (tmp_path / "missing.db", tmp_path / "notes.txt"):
        if target.suffix == ".txt":
            target.write_text("not a database at all, just some text " * 20)
        done = run("inspect", str(target))
        assert done.returncode == 4 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE other (x)").connection.commit()
    done = run("inspect", str(empty))
    assert done.returncode == 4 and "not a session store" in done.stderr
    assert not (tmp_path / "missing.db").exists()


def test_a_locked_database_is_reported_not_waited_on_forever(db: Path) -> None:
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        done = run("rotate", str(db), "--busy-timeout", "0.5", keys=f"new:{NEW},old:{OLD}")
        assert done.returncode == 4 and "locked" in done.stderr, done.stderr
        assert time.monotonic() - started < 60
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_usage_errors_exit_2() -> None:
    assert run("purge").returncode == 2
    assert run("purge", "x.db", "--ttl", "soon").returncode == 2
    assert "exit codes" in run("--help").stdout


# -- progress on a terminal, silence in a pipe, on 100k items ----------------------------------


async def _fill_large(path: Path, count: int) -> None:
    session = EncryptedSession(
        underlying_session=SQLiteSession("big", path), encryption_key=Keyring({"old": OLD})
    )
    batch = [{"role": "user", "content": f"item {i} " + "x" * 200} for i in range(1000)]
    for _ in range(count // 1000):
        await session.add_items(batch)
    await session.close()


def _run_on_pty(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen([ENCMEM, *args], stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=30)
    os.close(leader)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_rotate_100k_items_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    asyncio.run(_fill_large(path, 100_000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}
    env["ENCMEM_KEYS"] = f"new:{NEW},old:{OLD}"
    code, screen = _run_on_pty(["rotate", str(path), "--batch-size", "2000"], env, timeout=600)
    assert code == 0, screen
    assert "\rrotate: [" in screen and "100000/100000 items" in screen
    assert "re-sealed 100000" in screen
    assert OLD not in screen and NEW not in screen
    piped = run("rotate", str(path), "--batch-size", "2000", keys=f"new:{NEW},old:{OLD}")
    assert piped.returncode == 0 and "\r" not in piped.stderr + piped.stdout
    assert piped.stderr == "" and "re-sealed 0" in piped.stdout
    print("FIGURE cli-rotate: 100000 items rotated with progress on a pty; piped run silent")


# -- the same command on PostgreSQL ------------------------------------------------------------


@pytest.mark.pg
def test_commands_work_on_a_postgresql_url() -> None:
    from encmem.backends import SQLAlchemySession

    from .pg import drop_tables, pg_url, run_sync, unique_tables

    url = pg_url()
    tables = unique_tables()
    flags = [
        "--sessions-table",
        tables["sessions_table"],
        "--messages-table",
        tables["messages_table"],
    ]

    async def fill() -> None:
        for n in range(2):
            underlying = SQLAlchemySession.from_url(
                f"pg-{n}", url=url, create_tables=True, **tables
            )
            session = EncryptedSession(
                underlying_session=underlying, encryption_key=Keyring({"old": OLD})
            )
            await session.add_items([{"role": "user", "content": f"pg {n}-{i}"} for i in range(3)])
            await underlying.close()

    asyncio.run(fill())
    try:
        listed = json.loads(run("inspect", url, *flags, "--json").stdout)
        assert listed["totals"]["items"] == 6 and listed["totals"]["sessions"] == 2
        assert run("verify", url, *flags, keys=f"old:{OLD}").returncode == 0
        rotated = run("rotate", url, *flags, "--json", keys=f"new:{NEW},old:{OLD}")
        assert rotated.returncode == 0 and json.loads(rotated.stdout)["changed"] == 6
        kids = run_sync(url, f"SELECT message_data FROM {tables['messages_table']}")
        assert {json.loads(row[0])["kid"] for row in kids} == {"new"}
        exported = run("export", url, *flags, "--session", "pg-1", keys=f"new:{NEW}")
        assert [json.loads(line)["item"]["content"] for line in exported.stdout.splitlines()] == [
            f"pg 1-{i}" for i in range(3)
        ]
        erased = run("erase", url, *flags, "--session", "pg-0", "--yes")
        # 3 items, the session row, its history head and its seed
        assert erased.returncode == 0 and "6 rows" in erased.stdout
        wrong = run("purge", url, *flags, "--ttl", "1s", keys=f"other:{generate_key()}")
        assert wrong.returncode == 3
        assert len(run_sync(url, f"SELECT id FROM {tables['messages_table']}")) == 3
    finally:
        drop_tables(url, [tables["messages_table"], tables["sessions_table"]])
    unreachable = run("inspect", "postgresql+asyncpg://nobody@/nothing?host=/nonexistent")
    assert unreachable.returncode == 4 and len(unreachable.stderr.strip().splitlines()) == 1
