"""The command at its edges, run for real: it never changes what it only reads, works on
read-only stores, blames the right thing, reports key problems as such, and keeps exports
private."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import AdvancedSQLiteSession, SQLiteSession

from encmem import EncryptedSession, Keyring, generate_key

ENCMEM = str(Path(sys.executable).with_name("encmem"))
KEY, OTHER = generate_key(), generate_key()
KEYS = f"k1:{KEY}"
NOBODY = 65534


def run(
    *args: str,
    keys: str | None = KEYS,
    cwd: Path | None = None,
    as_nobody: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}
    if keys is not None:
        environment["ENCMEM_KEYS"] = keys
    environment.update(env or {})
    prefix = _as_nobody() if as_nobody else []
    done = subprocess.run(
        [*prefix, ENCMEM, *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    for key in (KEY, OTHER):
        assert key not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of the folder (the database, its -wal and -shm) by content hash."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


async def _sealed(path: Path, sessions: dict[str, int], key: str = KEY) -> None:
    for session_id, count in sessions.items():
        async with EncryptedSession(
            underlying_session=SQLiteSession(session_id, path),
            encryption_key=Keyring({"k1": key}),
        ) as session:
            await session.add_items(
                [{"role": "user", "content": f"{session_id} {i}"} for i in range(count)]
            )


def sealed_store(path: Path, sessions: dict[str, int] | None = None, key: str = KEY) -> Path:
    asyncio.run(_sealed(path, sessions or {"s0": 4, "s1": 2}, key))
    return path


_CRASHING_WRITER = """
import asyncio, os, sys
from encmem import EncryptedSession, Keyring
from encmem.backends import SQLiteSession

async def write():
    session = EncryptedSession(
        underlying_session=SQLiteSession("in-wal", sys.argv[1]),
        encryption_key=Keyring({"k1": sys.argv[2]}),
    )
    await session.add_items([{"role": "user", "content": "only in the log"}] * 3)
    os._exit(0)  # killed before any checkpoint: the rows live in the -wal alone

asyncio.run(write())
"""


def wal_store(path: Path) -> Path:
    """A WAL store whose newest rows are in an un-checkpointed -wal (the writer died)."""
    sealed_store(path)
    subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(path), KEY], check=True, timeout=120
    )
    assert Path(f"{path}-wal").stat().st_size > 0 and Path(f"{path}-shm").exists()
    return path


def foreign_store(path: Path) -> Path:
    with sqlite3.connect(path) as conn:  # a rollback-journal file of some other program
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('hello')")
    conn.close()
    return path


def header_modes(path: Path) -> bytes:
    return path.read_bytes()[18:20]


# -- 5. read-only commands change no file ------------------------------------------------------

READERS = (["inspect"], ["verify"], ["export", "--session", "s0"])
KINDS = ("good", "foreign", "empty", "wal")


def _make(kind: str, folder: Path) -> Path:
    path = folder / "store.db"
    if kind == "good":
        return sealed_store(path)
    if kind == "foreign":
        return foreign_store(path)
    if kind == "wal":
        return wal_store(path)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_read_only_commands_change_no_file(kind: str, tmp_path: Path) -> None:
    path = _make(kind, tmp_path)
    before = snapshot(tmp_path)
    modes = header_modes(path)
    for command in READERS:
        done = run(command[0], str(path), *command[1:])
        assert snapshot(tmp_path) == before, (command, done.stderr)
        expected = 0 if kind in ("good", "wal") else 4
        assert done.returncode == expected, (command, done.stderr)
        if kind in ("foreign", "empty"):
            assert "not a session store" in done.stderr
    assert header_modes(path) == modes  # a rollback-journal file is not switched to WAL
    if kind == "foreign":
        assert modes == b"\x01\x01"


def test_reads_of_a_wal_store_see_the_rows_only_its_log_holds(tmp_path: Path) -> None:
    path = wal_store(tmp_path / "store.db")
    before = snapshot(tmp_path)
    report = json.loads(run("inspect", str(path), "--json").stdout)
    assert report["totals"]["items"] == 9 and report["totals"]["unreadable"] == 0
    assert "in-wal" in {row["session_id"] for row in report["sessions"]}
    verified = run("verify", str(path), "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["checked"] == 9
    exported = run("export", str(path), "--session", "in-wal")
    assert [json.loads(line)["item"]["content"] for line in exported.stdout.splitlines()] == [
        "only in the log"
    ] * 3
    assert snapshot(tmp_path) == before


_LIVE_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()
print("ready", flush=True)
sys.stdin.readline()  # holds the database open, as a running application does
"""


def test_reading_beside_a_running_writer_changes_no_file(tmp_path: Path) -> None:
    path = wal_store(tmp_path / "store.db")
    writer = subprocess.Popen(
        [sys.executable, "-c", _LIVE_WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        before = snapshot(tmp_path)
        for command in READERS:
            assert run(command[0], str(path), *command[1:]).returncode == 0
        assert snapshot(tmp_path) == before
    finally:
        writer.communicate("\n", timeout=60)


def test_a_missing_file_is_an_error_and_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    for command in ([*c] for c in READERS):
        done = run(command[0], str(missing), *command[1:])
        assert done.returncode == 4 and "there is no file" in done.stderr
    for command in (["purge", "--ttl", "1d"], ["rotate"], ["encrypt"]):
        assert run(command[0], str(missing), *command[1:]).returncode == 4
    assert run("erase", str(missing), "--session", "s0", "--yes").returncode == 4
    assert list(tmp_path.iterdir()) == []


def test_a_log_without_its_shm_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    path = wal_store(tmp_path / "store.db")
    Path(f"{path}-shm").unlink()
    before = snapshot(tmp_path)
    done = run("inspect", str(path))
    assert done.returncode == 4 and "store.db-shm" in done.stderr and "Copy" in done.stderr
    assert snapshot(tmp_path) == before


def test_a_store_of_the_sdk_advanced_session_is_read_without_adding_its_branch_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "advanced.db"

    async def fill() -> None:
        backend = AdvancedSQLiteSession(session_id="adv", db_path=path, create_tables=True)
        ring = Keyring({"k1": KEY})
        async with EncryptedSession(underlying_session=backend, encryption_key=ring) as session:
            await session.add_items([{"role": "user", "content": "turn 1"}])
            await session.add_items([{"role": "assistant", "content": "answer"}])

    asyncio.run(fill())
    with sqlite3.connect(path) as conn:  # the Agents SDK's class has no branch table
        conn.execute("DROP TABLE session_branches")
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    before = snapshot(tmp_path)
    report = json.loads(run("inspect", str(path), "--json").stdout)
    assert report["totals"]["items"] == 2 and report["sessions"][0]["branches"] == 1
    assert run("verify", str(path)).returncode == 0
    assert snapshot(tmp_path) == before


def test_a_sqlite_url_is_read_read_only_too(tmp_path: Path) -> None:
    path = foreign_store(tmp_path / "store.db")
    before = snapshot(tmp_path)
    done = run("inspect", f"sqlite+aiosqlite:///{path}")
    assert done.returncode == 4 and "not a session store" in done.stderr
    assert snapshot(tmp_path) == before and header_modes(path) == b"\x01\x01"


# -- 6. read-only stores can be audited --------------------------------------------------------


_SWITCHES = (
    ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"],
    ["runuser", "-u", "nobody", "--"],
)


@functools.cache
def _switch_to_nobody() -> tuple[list[str] | None, str]:
    """How to run the command as user nobody, or why it cannot be done here."""
    for switch in _SWITCHES:
        if shutil.which(switch[0]) is None:
            continue
        probe = subprocess.run(
            [*switch, ENCMEM, "--help"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return switch, ""
    return None, (
        "running as root, where file modes do not stop writes, and user nobody cannot run "
        f"{ENCMEM} here (no setpriv or runuser, or the interpreter is readable by root only)"
    )


def _as_nobody() -> list[str]:
    switch, reason = _switch_to_nobody()
    assert switch is not None, reason
    return switch


@pytest.fixture
def read_only_folder() -> Iterator[Path]:
    """A folder the command cannot write: files 0444 in a 0555 folder. Root writes through
    any mode, so as root the command runs as user nobody, for whom that is read-only."""
    if os.geteuid() == 0:
        switch, reason = _switch_to_nobody()
        if switch is None:
            pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="encmem-ro-", dir="/tmp"))
    try:
        yield folder
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def _lock_down(folder: Path) -> None:
    for path in folder.iterdir():
        path.chmod(0o444)
    folder.chmod(0o555)


@pytest.mark.slow  # the command runs as another user, in a fresh interpreter each time
@pytest.mark.parametrize("kind", ["good", "wal"])
def test_a_read_only_store_in_a_read_only_folder_is_audited(
    kind: str, read_only_folder: Path
) -> None:
    path = _make(kind, read_only_folder)
    read_only_folder.chmod(0o755)  # mkdtemp's 0700 would keep nobody out altogether
    _lock_down(read_only_folder)
    before = snapshot(read_only_folder)
    as_nobody = os.geteuid() == 0
    items = 9 if kind == "wal" else 6
    inspected = run("inspect", str(path), "--json", as_nobody=as_nobody)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["totals"]["items"] == items
    verified = run("verify", str(path), as_nobody=as_nobody)
    assert verified.returncode == 0 and f"OK ({items} items checked)" in verified.stdout
    exported = run("export", str(path), "--session", "s0", as_nobody=as_nobody)
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 4
    dry = run("purge", str(path), "--ttl", "1d", "--dry-run", as_nobody=as_nobody)
    assert dry.returncode == 0 and "would have deleted 0" in dry.stdout
    for command in (["purge", "--ttl", "1d"], ["rotate"], ["encrypt"], ["erase", "--yes"]):
        extra = ["--session", "s0"] if command[0] == "erase" else []
        done = run(command[0], str(path), *command[1:], *extra, as_nobody=as_nobody)
        assert done.returncode == 4, done.stderr
        assert "is read-only" in done.stderr and "nothing was changed" in done.stderr
        assert "OperationalError" not in done.stderr
    assert snapshot(read_only_folder) == before


# -- 7. errors blame the right thing -----------------------------------------------------------


def test_an_output_path_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db")
    target = "/nonexistent/dir/a.jsonl"
    done = run("export", str(path), "--session", "s0", "--out", target)
    assert done.returncode == 2
    assert f"cannot create the output file '{target}'" in done.stderr
    assert "database" not in done.stderr and "FileNotFoundError" not in done.stderr


def test_a_reader_that_stops_reading_ends_the_export_quietly(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db", {"s0": 3000})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}
    env["ENCMEM_KEYS"] = KEYS
    proc = subprocess.Popen(
        [ENCMEM, "export", str(path), "--session", "s0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # as `| head -1` does: one line, then the pipe closes
    proc.stdout.close()
    code = proc.wait(timeout=120)
    errors = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 0 and errors == "", (code, errors)


@pytest.mark.parametrize("content", [b"\x80\xbe\x01\x02" * 9, b"\x00" * 100, bytes(range(256)) * 4])
def test_a_binary_key_file_is_not_a_text_key(tmp_path: Path, content: bytes) -> None:
    path = sealed_store(tmp_path / "store.db")
    key_file = tmp_path / "binary.key"
    key_file.write_bytes(content)
    done = run("verify", str(path), "--key-file", str(key_file), keys=None)
    assert done.returncode == 3 and "the key file is not a text key" in done.stderr


def test_a_postgresql_url_is_accepted_and_means_asyncpg() -> None:
    for scheme in ("postgresql", "postgres"):
        done = run("inspect", f"{scheme}://nobody@127.0.0.1:9/encmem", keys=None)
        assert done.returncode == 4, done.stderr
        assert "server is running" in done.stderr  # it tried to connect: the driver loaded
        assert "ModuleNotFoundError" not in done.stderr and "unexpected" not in done.stderr


@pytest.mark.pg
def test_a_postgresql_url_works_against_a_server() -> None:
    from encmem.backends import SQLAlchemySession

    from .pg import drop_tables, pg_url, unique_tables

    url = pg_url()  # skips without a server
    plain = "postgresql://" + url.split("://", 1)[1]
    tables = unique_tables()
    flags = ["--sessions-table", tables["sessions_table"]]
    flags += ["--messages-table", tables["messages_table"]]

    async def fill() -> None:
        backend = SQLAlchemySession.from_url("pg", url=url, create_tables=True, **tables)
        async with EncryptedSession(
            underlying_session=backend, encryption_key=Keyring({"k1": KEY})
        ) as session:
            await session.add_items([{"role": "user", "content": f"pg {i}"} for i in range(3)])
        await backend.close()

    asyncio.run(fill())
    try:
        report = json.loads(run("inspect", plain, *flags, "--json").stdout)
        assert report["totals"]["items"] == 3
        assert run("verify", plain, *flags).returncode == 0
        exported = run("export", plain, *flags, "--session", "pg")
        assert len(exported.stdout.splitlines()) == 3, exported.stderr
        dry = run("purge", plain, *flags, "--ttl", "1d", "--dry-run")
        assert dry.returncode == 0 and "would have deleted 0" in dry.stdout
    finally:
        drop_tables(url, [tables["messages_table"], tables["sessions_table"]])


def test_an_unknown_scheme_is_echoed_as_typed_and_passwords_are_not(tmp_path: Path) -> None:
    done = run("inspect", "foo://bar", cwd=tmp_path, keys=None)
    assert done.returncode == 4 and "'foo://bar' is not a file" in done.stderr
    assert "postgresql://" in done.stderr
    secret = run("inspect", "mysql+nodriver://admin:s3cret-pw@db.example/x", keys=None)
    assert secret.returncode == 4 and "s3cret-pw" not in secret.stderr
    assert "admin:***@db.example" in secret.stderr


def test_a_url_whose_driver_is_missing_says_which_module(tmp_path: Path) -> None:
    done = run("inspect", "mysql+aiomysql://u@localhost/x", keys=None)
    assert done.returncode == 4 and "'aiomysql'" in done.stderr, done.stderr
    bare = run("inspect", "mysql://u@localhost/x", keys=None)
    assert bare.returncode == 4 and "mysql+aiomysql://" in bare.stderr, bare.stderr
    path = sealed_store(tmp_path / "store.db")
    sync = run("rotate", f"sqlite+pysqlite:///{path}")
    assert sync.returncode == 4 and "not async" in sync.stderr, sync.stderr


# -- 8. key problems are reported as key problems, and only those ------------------------------


def _add_plaintext(path: Path, session_id: str = "s0") -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)",
            (session_id, json.dumps({"role": "user", "content": "never sealed"})),
        )
    conn.close()


def _rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id, message_data FROM agent_messages ORDER BY id").fetchall()
    conn.close()
    return rows


def test_a_plaintext_item_is_named_as_plaintext_not_as_a_key_problem(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db", {"s0": 6, "s1": 5})
    _add_plaintext(path)
    before = _rows(path)
    for command in (["purge", "--ttl", "1d"], ["purge", "--ttl", "1d", "--dry-run"], ["rotate"]):
        keys = KEYS if command[0] == "purge" else f"k2:{OTHER},{KEYS}"
        done = run(command[0], str(path), *command[1:], keys=keys)
        assert done.returncode == 4, (command, done.stderr)
        assert "1 item is plaintext" in done.stderr and "encmem encrypt" in done.stderr
        assert "of 12 items" in done.stderr and "nothing was changed" in done.stderr
        assert "key" not in done.stderr.replace("--skip-unreadable", "")
    assert _rows(path) == before
    sealed = run("encrypt", str(path))
    assert sealed.returncode == 0 and run("purge", str(path), "--ttl", "1d").returncode == 0


def test_verify_with_the_wrong_key_for_a_key_id_says_so_once(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db", {"s0": 6, "s1": 4})
    done = run("verify", str(path), "--json", keys=f"k1:{OTHER}")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert [p["problem"] for p in report["problems"]] == ["wrong-key"]
    assert report["problems"][0]["kid"] == "k1" and report["problems"][0]["items"] == 10
    assert report["keys_ok"] is False and report["unopened"] == 10
    text = run("verify", str(path), keys=f"k1:{OTHER}")
    assert text.returncode == 3 and "TamperedItemError" not in text.stdout
    assert "key id 'k1': wrong key" in text.stdout and len(text.stdout.splitlines()) == 2


def test_verify_without_the_key_of_a_key_id_is_a_key_problem(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db")
    done = run("verify", str(path), "--json", keys=f"k2:{OTHER}")
    assert done.returncode == 3
    assert [(p["problem"], p["kid"]) for p in json.loads(done.stdout)["problems"]] == [
        ("missing-key", "k1")
    ]
    purge = run("purge", str(path), "--ttl", "1d", keys=f"k2:{OTHER}")
    assert purge.returncode == 3 and "key id 'k1', for which no key was given" in purge.stderr


def test_an_altered_item_under_the_right_key_is_still_a_finding(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db")
    with sqlite3.connect(path) as conn:
        row_id, data = conn.execute("SELECT id, message_data FROM agent_messages").fetchone()
        stored = json.loads(data)
        stored["role"] = "assistant"
        conn.execute(
            "UPDATE agent_messages SET message_data = ? WHERE id = ?", (json.dumps(stored), row_id)
        )
    conn.close()
    done = run("verify", str(path), "--json")
    assert done.returncode == 1
    assert [p["problem"] for p in json.loads(done.stdout)["problems"]] == ["TamperedItemError"]
    rotate = run("rotate", str(path), keys=f"k2:{OTHER},{KEYS}")
    assert rotate.returncode == 3 and "1 item fails authentication" in rotate.stderr


def test_a_stored_key_id_that_is_not_one_is_never_echoed(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db")
    fake = "A" * 43 + "="
    with sqlite3.connect(path) as conn:
        for row_id, data in conn.execute("SELECT id, message_data FROM agent_messages").fetchall():
            conn.execute(
                "UPDATE agent_messages SET message_data = ? WHERE id = ?",
                (json.dumps({**json.loads(data), "kid": fake}), row_id),
            )
    conn.close()
    for command in (["verify"], ["inspect"], ["rotate"]):
        done = run(command[0], str(path))
        assert fake not in done.stdout + done.stderr and fake[:20] not in done.stdout + done.stderr
        assert command == ["inspect"] or done.returncode == 3


# -- 9. decrypted exports are private ----------------------------------------------------------


def test_an_export_file_is_created_private_and_never_overwritten(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db")
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "dsar.jsonl"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch)}
    command = [ENCMEM, "export", str(path), "--session", "s0", "--out", str(out)]
    done = subprocess.run(
        ["sh", "-c", 'umask 000 && exec "$0" "$@"', *command],
        capture_output=True,
        text=True,
        env={**os.environ, "ENCMEM_KEYS": KEYS, **env},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "decrypted" in done.stderr and str(out) in done.stderr
    assert len(out.read_text().splitlines()) == 4
    assert [p.name for p in folder.iterdir()] == ["dsar.jsonl"] and list(scratch.iterdir()) == []
    out.write_text("precious\n")
    refused = run("export", str(path), "--session", "s0", "--out", str(out))
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert out.read_text() == "precious\n"
    out.chmod(0o644)
    forced = run("export", str(path), "--session", "s0", "--out", str(out), "--force")
    assert forced.returncode == 0 and len(out.read_text().splitlines()) == 4
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_an_export_never_writes_through_a_link(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db")
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert run("export", str(path), "--session", "s0", "--out", str(link)).returncode == 2
    forced = run("export", str(path), "--session", "s0", "--out", str(link), "--force")
    assert forced.returncode == 0 and not link.is_symlink()
    assert target.read_text() == "keep me\n" and stat.S_IMODE(link.stat().st_mode) == 0o600


def test_an_export_under_the_wrong_key_leaves_no_file(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db")
    out = tmp_path / "dsar.jsonl"
    done = run("export", str(path), "--session", "s0", "--out", str(out), keys=f"k1:{OTHER}")
    assert done.returncode == 3 and "nothing was exported" in done.stderr
    assert "wrong key" in done.stderr and not out.exists()


def test_an_export_to_stdout_says_it_is_decrypted_and_warns_about_a_shared_file(
    tmp_path: Path,
) -> None:
    path = sealed_store(tmp_path / "store.db")
    shared = tmp_path / "shared.jsonl"
    with shared.open("w") as sink:
        shared.chmod(0o644)
        done = subprocess.run(
            [ENCMEM, "export", str(path), "--session", "s0"],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "ENCMEM_KEYS": KEYS},
            timeout=120,
            check=False,
        )
    assert done.returncode == 0 and "decrypted" in done.stderr
    assert "others can read (mode 0644)" in done.stderr and "--out" in done.stderr


def test_plaintext_items_are_not_exported_as_if_sealed(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db")
    _add_plaintext(path)
    done = run("export", str(path), "--session", "s0")
    assert done.returncode == 4 and "1 item is plaintext" in done.stderr
    assert len(done.stdout.splitlines()) == 4 and "never sealed" not in done.stdout


# -- 10. times are real ------------------------------------------------------------------------


def _utc(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.slow
def test_inspect_after_the_demo_shows_true_seal_times(tmp_path: Path) -> None:
    started = int(time.time())
    demo = run("demo", cwd=tmp_path, env={"ENCMEM_KEY": KEY}, keys=None)
    assert demo.returncode == 0, demo.stderr
    finished = time.time()
    inspected = run(
        "inspect", "encmem-demo.db", "--json", cwd=tmp_path, keys=None, env={"ENCMEM_KEY": KEY}
    )
    report = json.loads(inspected.stdout)
    assert report["times_authenticated"] and report["totals"]["items"] >= 1
    for row in report["sessions"]:
        assert started <= _utc(row["oldest"]) <= _utc(row["newest"]) <= finished, row


# -- the read-only store under the command ------------------------------------------------------


def test_a_read_only_store_and_a_writing_session_of_one_process_keep_apart(
    tmp_path: Path,
) -> None:
    from encmem.backends import open_store

    from encmem import StoreError

    path = sealed_store(tmp_path / "store.db")

    async def both() -> None:
        store = await open_store(path, read_only=True)
        async with EncryptedSession(
            underlying_session=SQLiteSession("s2", path), encryption_key=Keyring({"k1": KEY})
        ) as writer:
            await writer.add_items([{"role": "user", "content": "written meanwhile"}])
        with pytest.raises(StoreError, match="opened read-only"):
            await store.erase_session("s0")
        with pytest.raises(StoreError, match="written to while it was read"):
            await store.aclose()  # the writer's close folded its log into the file

    asyncio.run(both())
    assert len(_rows(path)) == 7


def test_a_file_written_while_it_was_read_without_locks_is_reported(tmp_path: Path) -> None:
    from encmem.backends import open_store

    from encmem import StoreError

    path = sealed_store(tmp_path / "store.db")

    async def read_while_written() -> None:
        store = await open_store(path, read_only=True)
        assert await store.count_items() == 6
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("DELETE FROM agent_messages WHERE session_id = 's1'")
        writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        writer.close()
        with pytest.raises(StoreError, match="written to while it was read"):
            await store.aclose()

    asyncio.run(read_while_written())


def test_a_batch_size_below_one_is_a_usage_error(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "store.db")
    done = run("rotate", str(path), "--batch-size", "0")
    assert done.returncode == 2 and "at least 1" in done.stderr
    assert "unexpected" not in done.stderr
