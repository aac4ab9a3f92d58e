"""The command on stores as users find them, run for real: files that are no session store,
rollback-journal stores, locked and half-written ones, stores in use, and database URLs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli_edges import KEY, run, sealed_store

COMPANIONS = ("", "-wal", "-shm", "-journal")


def fingerprint(path: Path) -> dict[str, str | None]:
    """The database and every file SQLite keeps beside it, by content hash (None: absent)."""
    found: dict[str, str | None] = {}
    for suffix in COMPANIONS:
        file = Path(f"{path}{suffix}")
        found[suffix or "db"] = (
            hashlib.sha256(file.read_bytes()).hexdigest() if file.exists() else None
        )
    return found


def rollback_store(path: Path, sessions: dict[str, int] | None = None) -> Path:
    """A session store in rollback-journal mode, as the Agents SDK's SQLiteSession can leave one."""
    sealed_store(path, sessions)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode=delete").fetchone()[0] == "delete"
    conn.close()
    assert path.read_bytes()[18:20] == b"\x01\x01"
    return path


def _add_plaintext(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) VALUES ('s0', ?)",
            (json.dumps({"role": "user", "content": "never sealed"}),),
        )
    conn.close()


# -- 1. a refused write changes no byte -------------------------------------------------------


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()


def _text(path: Path) -> None:
    path.write_text("not a database at all\n" * 40)


WRITES = (["erase", "--session", "x", "--yes"], ["purge", "--ttl", "1s"], ["rotate"], ["encrypt"])


@pytest.mark.slow
@pytest.mark.parametrize("make", [_empty, _foreign, _text], ids=["empty", "foreign", "text"])
def test_a_write_command_refusing_a_file_that_is_no_store_changes_no_byte(
    make: object, tmp_path: Path
) -> None:
    path = tmp_path / "f.db"
    assert callable(make)
    make(path)
    before = fingerprint(path)
    for target in (str(path), f"sqlite:///{path}"):
        for command in WRITES:
            done = run(command[0], target, *command[1:])
            assert done.returncode == 4, (command, done.stderr)
            assert "session store" in done.stderr or "not a SQLite database" in done.stderr
            assert fingerprint(path) == before, (target, command)


def test_a_refused_write_leaves_a_rollback_journal_store_as_it_was(tmp_path: Path) -> None:
    path = rollback_store(tmp_path / "rb.db")
    _add_plaintext(path)
    before = fingerprint(path)
    missing = run("erase", str(path), "--session", "nosuch", "--yes")
    assert missing.returncode == 4 and "no session 'nosuch'" in missing.stderr
    assert fingerprint(path) == before
    plaintext = run("purge", str(path), "--ttl", "1d")
    assert plaintext.returncode == 4 and "nothing was changed" in plaintext.stderr
    assert fingerprint(path) == before
    assert path.read_bytes()[18:20] == b"\x01\x01"  # still a rollback journal
    erased = run("erase", str(path), "--session", "s1", "--yes")  # a write that goes ahead
    assert erased.returncode == 0, erased.stderr


# -- 2. verify beside a writer ----------------------------------------------------------------

_WRITER = """
import asyncio, sys
from encmem import EncryptedSession, Keyring
from encmem.backends import SQLiteSession

async def write(path, key, churn):
    keyring = Keyring({"k1": key})
    turn = 0
    while True:
        session = EncryptedSession(
            underlying_session=SQLiteSession(f"w{turn % 5}", path), encryption_key=keyring
        )
        for _ in range(1 if churn else 10**9):
            await session.add_items([{"role": "user", "content": f"turn {turn}"}] * 3)
            turn += 1
            print(turn, flush=True)
        await session.close()

asyncio.run(write(sys.argv[1], sys.argv[2], sys.argv[3] == "churn"))
"""


@contextlib.contextmanager
def writing(path: Path, churn: bool = False) -> Iterator[None]:
    """A process adding sealed items to the store in a loop (opening and closing a session
    for every write with ``churn``) until the block ends; it has written when this yields."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), KEY, "churn" if churn else "steady"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "1"
        yield
        assert writer.poll() is None, "the writer stopped on its own"
    finally:
        writer.kill()
        writer.wait(timeout=30)


def _add_orphan(path: Path) -> None:
    """A row under a blank session id: no session can be opened to reach it."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) VALUES ('', '{}')"
        )
    conn.close()


_ONE_UNREACHED = "unreached: 1 stored row belongs to no session or branch the store can read"


@pytest.mark.slow
def test_verify_beside_a_writer_reports_no_rows_as_unreached(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "big.db", {f"s{i}": 30 for i in range(6)})
    orphaned = sealed_store(tmp_path / "orphan.db", {f"s{i}": 30 for i in range(6)})
    _add_orphan(orphaned)
    with writing(path), writing(orphaned):
        for _ in range(2):
            done = run("verify", str(path))
            assert done.returncode == 0, done.stdout + done.stderr
            # Rows the writer adds may make up for the one never reached, never add to it.
            done = run("verify", str(orphaned), "--json")
            assert done.returncode in (0, 1), done.stderr
            problems = [p["problem"] for p in json.loads(done.stdout)["problems"]]
            assert problems in ([], [_ONE_UNREACHED]), problems
    done = run("verify", str(orphaned), "--json")
    assert done.returncode == 1, done.stderr
    assert [p["problem"] for p in json.loads(done.stdout)["problems"]] == [_ONE_UNREACHED]


# -- 3. read errors name what is wrong --------------------------------------------------------

_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(60)
"""


def test_a_locked_rollback_journal_store_is_said_to_be_locked(tmp_path: Path) -> None:
    path = rollback_store(tmp_path / "rb.db")
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        for command in (
            ["inspect", str(path), "--busy-timeout", "0.2"],
            ["erase", str(path), "--session", "s0", "--yes", "--busy-timeout", "0.2"],
        ):
            done = run(*command)
            assert done.returncode == 4, done.stderr
            assert "is locked by another process" in done.stderr, done.stderr
            assert "not a SQLite database" not in done.stderr
    finally:
        locker.kill()
        locker.wait(timeout=30)


_KILLED_MID_WRITE = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")  # pages spill to the file before the commit
conn.execute("BEGIN")
conn.execute("INSERT INTO agent_sessions (session_id) VALUES ('half-written')")
conn.execute("CREATE TABLE scratch AS WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL "
             "SELECT i + 1 FROM r WHERE i < 300) SELECT randomblob(1000) AS b FROM r")
os._exit(0)
"""


def test_a_hot_journal_is_named_and_read_only_commands_leave_it(tmp_path: Path) -> None:
    path = rollback_store(tmp_path / "hot.db", {f"s{i}": 30 for i in range(4)})
    subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(path)], check=True, timeout=60)
    assert Path(f"{path}-journal").stat().st_size > 0
    before = fingerprint(path)
    reads = (["inspect"], ["verify"], ["export", "--session", "s0"], ["rotate", "--dry-run"])
    for command in reads:
        done = run(command[0], str(path), *command[1:])
        assert done.returncode == 4, done.stderr
        assert "unfinished transaction" in done.stderr and "hot.db-journal" in done.stderr
        assert "not a SQLite database" not in done.stderr
        assert fingerprint(path) == before
    rotated = run("rotate", str(path))  # a command that writes rolls the journal back
    assert rotated.returncode == 0, rotated.stderr
    assert run("verify", str(path)).returncode == 0
    assert "half-written" not in run("inspect", str(path)).stdout


@pytest.mark.slow
def test_reads_of_a_store_in_use_always_open(tmp_path: Path) -> None:
    path = sealed_store(tmp_path / "big.db", {f"s{i}": 10 for i in range(4)})
    with writing(path, churn=True):
        for attempt in range(16):
            for command in ("inspect", "verify"):
                done = run(command, str(path), "--json")
                assert done.returncode == 0, (attempt, command, done.stderr)
                report = json.loads(done.stdout)
                if command == "inspect":
                    assert report["totals"]["items"] >= 40
                else:
                    assert report["ok"] and report["checked"] >= 40


# -- 4. libpq parameters in a postgresql:// URL ------------------------------------------------

NO_SERVER = "postgresql://u:s3cret-pw@127.0.0.1:1/db"


@pytest.mark.parametrize(
    "query",
    [
        "sslmode=require",
        "connect_timeout=3",
        "application_name=x",
        "sslmode=disable",
        "host=127.0.0.1&port=1",  # asyncpg's own, e.g. a unix socket directory as host
        "command_timeout=5",
    ],
)
def test_libpq_parameters_of_a_postgresql_url_reach_the_connection(query: str) -> None:
    done = run("verify", f"{NO_SERVER}?{query}")
    assert done.returncode == 4, done.stderr
    assert "TypeError" not in done.stderr and "unexpected" not in done.stderr
    assert "server" in done.stderr and "s3cret-pw" not in done.stderr


def test_an_unknown_parameter_of_a_postgresql_url_is_a_usage_error() -> None:
    done = run("inspect", f"{NO_SERVER}?sslrootcert=ca.pem", keys=None)
    assert done.returncode == 2, done.stderr
    assert "'sslrootcert'" in done.stderr and "sslmode" in done.stderr
    assert "s3cret-pw" not in done.stderr


# -- 5. an unreachable server is named as such -------------------------------------------------


@pytest.mark.parametrize(
    ("host", "why"),
    [("127.0.0.1:1", "connection refused"), ("no-such-host.invalid", "host not found")],
)
def test_an_unreachable_server_is_named_with_the_reason(host: str, why: str) -> None:
    done = run("inspect", f"postgresql://u:s3cret-pw@{host}/db", keys=None)
    assert done.returncode == 4, done.stderr
    assert f"cannot connect to 'postgresql://u:***@{host}/db' ({why})" in done.stderr
    assert "s3cret-pw" not in done.stderr


def test_open_store_says_a_server_cannot_be_reached_not_that_it_holds_no_store() -> None:
    import asyncio

    from encmem.backends import open_store

    from encmem.errors import NotASessionStoreError, StoreError

    with pytest.raises(StoreError, match="cannot connect") as raised:
        asyncio.run(open_store(NO_SERVER, read_only=True))
    assert not isinstance(raised.value, NotASessionStoreError)


# -- 6. erase counts every row it removes ------------------------------------------------------


def _advanced_store(path: Path) -> Path:
    import asyncio

    from encmem.backends import AdvancedSQLiteSession

    async def fill() -> None:
        for session_id in ("a", "b"):
            session = AdvancedSQLiteSession(
                session_id=session_id, db_path=path, create_tables=True
            )
            await session.add_items(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
            )
            await session.close()

    asyncio.run(fill())
    return path


def _rows_of(path: Path, session_id: str) -> dict[str, int]:
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    found = {
        table: conn.execute(
            f'SELECT COUNT(*) FROM "{table}" WHERE session_id = ?', (session_id,)
        ).fetchone()[0]
        for table in tables
        if conn.execute(
            "SELECT 1 FROM pragma_table_info(?) WHERE name = 'session_id'", (table,)
        ).fetchone()
    }
    conn.close()
    return found


@pytest.mark.parametrize("as_url", [False, True], ids=["file", "sqlalchemy-url"])
def test_erase_reports_every_row_it_removed_cascaded_ones_too(
    tmp_path: Path, as_url: bool
) -> None:
    path = _advanced_store(tmp_path / "adv.db")
    rows = _rows_of(path, "a")
    assert rows["message_structure"] == 2 and sum(rows.values()) == 6, rows
    target = f"sqlite+aiosqlite:///{path}" if as_url else str(path)
    done = run("erase", target, "--session", "a", "--yes", "--json", keys=None)
    assert done.returncode == 0, done.stderr
    assert sum(json.loads(done.stdout)["rows_removed"].values()) == 6  # the receipt: per table
    assert sum(_rows_of(path, "a").values()) == 0
    assert sum(_rows_of(path, "b").values()) == 6
