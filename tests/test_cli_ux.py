"""The command as a new user meets it: one line per error with the right exit code, no
traceback, options refused when they cannot mean anything, reports that say what was checked."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import SQLiteSession

from encmem import EncryptedSession, Keyring, generate_key

ENCMEM = str(Path(sys.executable).with_name("encmem"))
KEY, OTHER = generate_key(), generate_key()
KEYS = f"k1:{KEY}"
HAS_DEV_FULL = os.path.exists("/dev/full")


def _environment(keys: str | None, env: dict[str, str] | None) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}
    if keys is not None:
        environment["ENCMEM_KEYS"] = keys
    environment.update(env or {})
    return environment


def _clean(done: subprocess.CompletedProcess[Any]) -> None:
    text = str(done.stdout) + str(done.stderr)
    for key in (KEY, OTHER):
        assert key not in text
    assert "Traceback" not in text, done.stderr
    assert "Exception ignored" not in str(done.stderr), done.stderr


def run(
    *args: str,
    keys: str | None = KEYS,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdout: Any = subprocess.PIPE,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [ENCMEM, *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(keys, env),
        cwd=cwd,
        timeout=120,
        check=False,
    )
    _clean(done)
    return done


async def _sealed(path: Path, sessions: dict[str, int], keyring: Keyring) -> None:
    for session_id, count in sessions.items():
        async with EncryptedSession(
            underlying_session=SQLiteSession(session_id, path), encryption_key=keyring
        ) as session:
            await session.add_items(
                [{"role": "user", "content": f"{session_id} {i}"} for i in range(count)]
            )


def sealed_store(
    path: Path, sessions: dict[str, int] | None = None, keyring: Keyring | None = None
) -> Path:
    asyncio.run(_sealed(path, sessions or {"s0": 4}, keyring or Keyring({"k1": KEY})))
    return path


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        found = conn.execute(
            "SELECT id, session_id, message_data FROM agent_messages ORDER BY id"
        ).fetchall()
    conn.close()
    return found


def set_row(
    path: Path, row_id: int, *, data: str | None = None, session: str | None = None
) -> None:
    with sqlite3.connect(path) as conn:
        if data is not None:
            conn.execute("UPDATE agent_messages SET message_data = ? WHERE id = ?", (data, row_id))
        if session is not None:
            conn.execute("UPDATE agent_messages SET session_id = ? WHERE id = ?", (session, row_id))
    conn.close()


# -- 1. the demo goes through the same error handling as every command ----------------------


@pytest.mark.slow
def test_demo_into_a_reader_that_stops_ends_quietly_with_exit_0(tmp_path: Path) -> None:
    with subprocess.Popen(
        [ENCMEM, "demo"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(None, None),
    ) as demo:
        assert demo.stdout is not None and demo.stderr is not None
        assert demo.stdout.readline().startswith("encmem demo")
        demo.stdout.close()  # as `| head -1` does
        errors = demo.stderr.read()
        code = demo.wait(timeout=120)
    assert code == 0 and errors == "", errors


def test_demo_refuses_a_path_it_cannot_create_in_one_line(tmp_path: Path) -> None:
    missing = run("demo", "--db", str(tmp_path / "nodir" / "x.db"), keys=None, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.startswith("encmem demo: ") and missing.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr
    (tmp_path / "somedir").mkdir()
    folder = run("demo", "--db", "somedir", keys=None, cwd=tmp_path)
    assert folder.returncode == 2 and "is a directory" in folder.stderr
    assert (tmp_path / "somedir").is_dir()


def test_demo_with_a_malformed_key_exits_3_and_keeps_the_old_file(tmp_path: Path) -> None:
    old = tmp_path / "encmem-demo.db"
    old.write_bytes(b"an earlier run")
    done = run("demo", keys=None, cwd=tmp_path, env={"ENCMEM_KEY": "garbage"})
    assert done.returncode == 3 and done.stderr.startswith("encmem demo: bad key")
    assert "garbage" not in done.stderr
    assert old.read_bytes() == b"an earlier run"


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_demo_on_a_full_stdout_says_so(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        done = run("demo", keys=None, cwd=tmp_path, stdout=full)
    assert done.returncode == 2
    assert done.stderr == "encmem demo: cannot write to standard output: No space left on device\n"


# -- 5. and 6. export --force replaces only files; an empty --out is refused ----------------


def test_export_force_leaves_a_fifo_alone(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = run("export", str(store), "--session", "s0", "--out", str(fifo), "--force")
    assert done.returncode == 2 and "FIFO" in done.stderr and "left as it is" in done.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mknod needs root")
def test_export_force_leaves_a_device_node_alone(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db")
    device = tmp_path / "fulldev"
    os.mknod(device, stat.S_IFCHR | 0o644, os.makedev(1, 7))
    done = run("export", str(store), "--session", "s0", "--out", str(device), "--force")
    assert done.returncode == 2 and "a device" in done.stderr
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_export_force_replaces_a_symlink_without_following_it(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db")
    (tmp_path / "folder").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "folder")
    done = run("export", str(store), "--session", "s0", "--out", str(link), "--force")
    assert done.returncode == 0, done.stderr
    assert not link.is_symlink() and len(link.read_text().splitlines()) == 4
    assert list((tmp_path / "folder").iterdir()) == []


def test_export_to_an_empty_out_is_a_usage_error(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db")
    done = run("export", str(store), "--session", "s0", "--out", "")
    assert done.returncode == 2 and done.stdout == ""
    assert "--out" in done.stderr and "exported" not in done.stderr


# -- 2., 3. and 12. options that cannot mean anything are usage errors ----------------------


@pytest.mark.parametrize("command", ["inspect", "verify", "purge"])
def test_a_ttl_under_one_second_is_a_usage_error(tmp_path: Path, command: str) -> None:
    store = sealed_store(tmp_path / "good.db")
    before = rows(store)
    done = run(command, str(store), "--ttl", "0.5")
    assert done.returncode == 2 and "whole seconds" in done.stderr
    assert rows(store) == before


@pytest.mark.parametrize("option", ["--messages-table", "--sessions-table"])
@pytest.mark.parametrize("name", ["x;y", "", 'a"b'])
def test_a_table_name_that_is_not_an_identifier_is_a_usage_error(
    tmp_path: Path, option: str, name: str
) -> None:
    store = sealed_store(tmp_path / "good.db")
    done = run("inspect", str(store), option, name)
    assert done.returncode == 2 and "must be a plain identifier" in done.stderr


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_busy_timeout_must_be_a_finite_number_of_seconds(tmp_path: Path, value: str) -> None:
    store = sealed_store(tmp_path / "good.db")
    done = run("inspect", str(store), "--busy-timeout", value)
    assert done.returncode == 2 and "--busy-timeout" in done.stderr


def test_keygen_refuses_an_empty_key_id(tmp_path: Path) -> None:
    done = run("keygen", "--kid", "")
    assert done.returncode == 2 and done.stdout == "" and "key id" in done.stderr


# -- 4. a stdout that cannot be written to ---------------------------------------------------


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
@pytest.mark.parametrize("command", ["keygen", "inspect"])
def test_a_full_stdout_is_one_line_naming_standard_output(tmp_path: Path, command: str) -> None:
    args = ["keygen"] if command == "keygen" else ["inspect", str(sealed_store(tmp_path / "g.db"))]
    with open("/dev/full", "w") as full:
        done = run(*args, stdout=full)
    assert done.returncode == 2
    assert done.stderr == (
        f"encmem {command}: cannot write to standard output: No space left on device\n"
    )


# -- 13. a wrong key for the primary id changes nothing ---------------------------------------


@pytest.mark.parametrize("command", ["rotate", "encrypt"])
def test_a_wrong_primary_key_is_refused_before_anything_changes(
    tmp_path: Path, command: str
) -> None:
    store = sealed_store(tmp_path / "good.db")
    before = rows(store)
    done = run(command, str(store), keys=f"k1:{OTHER}")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "nothing was changed" in done.stderr and "wrong key for that id" in done.stderr
    assert "primary key id 'k1'" in done.stderr
    assert rows(store) == before


# -- 9. an item moved into another session fails authentication; the key is right -----------


def test_export_calls_a_moved_item_a_failed_authentication(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db", {"a": 2, "b": 1})
    (moved, _, _), *_ = rows(store)
    with sqlite3.connect(store) as conn:
        conn.execute("DELETE FROM agent_messages WHERE session_id = 'b'")
        conn.execute("UPDATE agent_messages SET session_id = 'b' WHERE id = ?", (moved,))
    conn.close()
    done = run("export", str(store), "--session", "b")
    assert done.returncode == 3 and done.stdout == ""
    assert "fails authentication" in done.stderr and "wrong key" not in done.stderr
    audit = run("verify", str(store))
    assert "TamperedItemError" in audit.stdout and "wrong-key" not in audit.stdout


# -- 7. and 8. inspect says what it could not check, and never calls an envelope plaintext ---


def test_inspect_without_a_key_does_not_claim_nothing_expired(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db")
    done = run("inspect", str(store), "--ttl", "1s", "--json", keys=None)
    report = json.loads(done.stdout)
    assert [row["expired"] for row in report["sessions"]] == [None]
    assert report["totals"]["expired"] is None
    text = run("inspect", str(store), "--ttl", "1s", keys=None).stdout
    assert "not checked" in text.splitlines()[1]
    keyed = json.loads(run("inspect", str(store), "--ttl", "1d", "--json").stdout)
    assert keyed["totals"]["expired"] == 0


@pytest.mark.parametrize("keys", [None, KEYS], ids=["no-key", "key"])
def test_inspect_counts_a_damaged_envelope_as_unreadable(tmp_path: Path, keys: str | None) -> None:
    store = sealed_store(tmp_path / "good.db")
    (row_id, _, data), *_ = rows(store)
    damaged = json.loads(data)
    del damaged["__enc__"]
    set_row(store, row_id, data=json.dumps(damaged))
    totals = json.loads(run("inspect", str(store), "--json", keys=keys).stdout)["totals"]
    assert totals["plaintext"] == 0 and totals["unreadable"] == 1
    assert "TamperedItemError" in run("verify", str(store)).stdout


# -- 14. plaintext that cannot be sealed is not sent to `encmem encrypt` ----------------------

_LONE_SURROGATE = '{"role": "user", "content": "\\ud800"}'


def test_unsealable_plaintext_is_described_as_what_it_is(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db", {"p": 1})
    (row_id, _, _), *_ = rows(store)
    set_row(store, row_id, data=_LONE_SURROGATE)
    exported = run("export", str(store), "--session", "p")
    assert exported.returncode == 4 and "cannot be stored as JSON text" in exported.stderr
    assert "seals plaintext items" not in exported.stderr
    sealed = run("encrypt", str(store))
    assert sealed.returncode == 4 and "cannot be stored as JSON text" in sealed.stderr
    assert "NaN" not in sealed.stderr and "ud800" not in sealed.stderr


# -- 16. counts in words that agree with them; JSON that says "none" with null ---------------


def test_reports_use_singular_nouns_for_one(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db", {"s0": 1})
    assert "\n1 session, 1 item " in run("inspect", str(store), keys=None).stdout
    (row_id, _, data), *_ = rows(store)
    set_row(store, row_id, data=data.replace('"role":"user"', '"role":"assistant"'))
    verified = run("verify", str(store))
    assert verified.returncode == 1
    assert verified.stdout.splitlines()[-1] == "FAILED: 1 problem (1 item checked, 0 opened)"


def test_verify_with_a_wrong_key_says_how_many_were_opened(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db", {"s0": 1})
    done = run("verify", str(store), keys=f"k1:{OTHER}")
    assert done.returncode == 3
    assert done.stdout.splitlines()[-1] == (
        "FAILED: wrong or missing keys, 1 item not opened; 1 problem (1 item checked, 0 opened)"
    )
    problem = json.loads(run("verify", str(store), "--json", keys=f"k1:{OTHER}").stdout)
    (wrong,) = problem["problems"]
    assert wrong["problem"] == "wrong-key"
    assert wrong["session_id"] is None and wrong["storage_id"] is None


# -- 10. a key file that cannot be read is named -----------------------------------------------


def test_a_missing_key_file_is_named_with_control_characters_escaped(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db")
    done = run("verify", str(store), "--key-file", str(tmp_path / "no\x1bsuch"), keys=None)
    assert done.returncode == 3
    assert "cannot read the key file '" in done.stderr and "no\\x1bsuch'" in done.stderr
    assert "\x1b" not in done.stderr and "No such file or directory" in done.stderr


# -- 11. Ctrl-C at the erase prompt: nothing was erased, and it says so ----------------------


def _interrupt_at_prompt(args: list[str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [ENCMEM, *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=_environment(None, None),
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"to confirm: " not in seen and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 65536)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        while select.select([leader], [], [], 0.2)[0]:
            seen += os.read(leader, 65536)
    except OSError:  # the terminal closed with the process
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return code, seen.decode(errors="replace")


def test_ctrl_c_at_the_erase_prompt_says_nothing_was_erased(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "good.db")
    before = rows(store)
    code, shown = _interrupt_at_prompt(["erase", str(store), "--session", "s0"])
    assert code == 130, shown
    assert "(4 items)" in shown and "interrupted; nothing was erased" in shown
    assert "batch" not in shown and "Traceback" not in shown
    assert rows(store) == before


# -- 17. the key derivation is what formats.md says, byte for byte ---------------------------


def test_the_documented_key_derivation_opens_a_stored_item(tmp_path: Path) -> None:
    import base64

    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    page = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()
    assert "`len(kid)` as 2 bytes, big-endian" in page
    assert "encmem.shreddable-session-key.v1" in page and "encmem.seed-key.v1" in page
    store = sealed_store(tmp_path / "good.db", {"s0": 1})
    (_, session_id, data), *_ = rows(store)
    kid, master = b"k1", base64.urlsafe_b64decode(KEY)
    bound = len(kid).to_bytes(2, "big") + kid + session_id.encode()

    def hkdf(salt: bytes | None, info: bytes) -> Fernet:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(master)
        return Fernet(base64.urlsafe_b64encode(derived))

    with sqlite3.connect(store) as conn:
        found = conn.execute("SELECT seed_id, sealed FROM agent_messages_seeds").fetchone()
    seed_id, sealed = found
    opened = hkdf(None, b"encmem.seed-key.v1" + bound).decrypt(sealed)
    assert opened[:16] == seed_id.encode() and json.loads(data)["seed"] == seed_id
    session_key = hkdf(opened[16:], b"encmem.shreddable-session-key.v1" + bound)
    plaintext = session_key.decrypt(json.loads(data)["payload"])
    assert b"s0 0" in plaintext
