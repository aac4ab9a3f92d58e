"""Regression tests for what an attacker with write access to the store (and no key) tried.

Each test names the attack: damaged envelopes laundered by ``encrypt``, rows that are not
UTF-8, structure rows that promote an assistant item to a user turn, respelled tokens,
clear fields of another JSON type, binary key files, absurd seal times, plaintext that
cannot be sealed, attacker-chosen key ids, and terminal control characters in reports.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import AdvancedSQLiteSession, SQLiteSession

from encmem import (
    CorruptRowError,
    EncryptedSession,
    HistoryTamperedError,
    TamperedItemError,
    UnknownKeyIdError,
)

from .conftest import TEST_KEY

ENCMEM = Path(sys.executable).with_name("encmem")


def _sql(path: Path, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with sqlite3.connect(path) as conn:
        return conn.execute(statement, params).fetchall()


def _cli(*args: str, key: str = TEST_KEY, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}
    environment.update({"ENCMEM_KEY": key, **env} if key else env)
    return subprocess.run(
        [str(ENCMEM), *args], capture_output=True, text=True, env=environment, timeout=120
    )


def _sealed_store(path: Path, items: list[dict[str, Any]], advanced: bool = False) -> None:
    async def fill() -> None:
        backend: Any = (
            AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True)
            if advanced
            else SQLiteSession("s", path)
        )
        async with EncryptedSession(underlying_session=backend, encryption_key=TEST_KEY) as s:
            await s.add_items(items)

    asyncio.run(fill())


def _read(path: Path, **options: Any) -> list[Any]:
    async def read() -> list[Any]:
        backend = SQLiteSession("s", path)
        async with EncryptedSession(
            underlying_session=backend, encryption_key=TEST_KEY, **options
        ) as s:
            return await s.get_items()

    return asyncio.run(read())


@pytest.mark.parametrize(
    "damage",
    [('"__enc__":1', '"__enc__":true'), ('"__enc__":1', '"__enc__":1.0'), ('"v":4,', "")],
)
def test_encrypt_never_seals_a_damaged_envelope_as_plaintext(
    tmp_path: Path, damage: tuple[str, str]
) -> None:
    path = tmp_path / "launder.db"
    _sealed_store(path, [{"role": "user", "content": "real"}])
    _sql(path, "UPDATE agent_messages SET message_data = replace(message_data, ?, ?)", damage)
    before = _sql(path, "SELECT message_data FROM agent_messages")
    with pytest.raises(TamperedItemError, match="markers were damaged"):
        _read(path)
    done = _cli("encrypt", str(path), "--json")
    assert done.returncode == 3, done.stdout + done.stderr  # refused: a key/tamper problem
    assert _sql(path, "SELECT message_data FROM agent_messages") == before
    forced = _cli("encrypt", str(path), "--json", "--skip-unreadable")
    assert json.loads(forced.stdout)["unreadable"] == 1
    assert _sql(path, "SELECT message_data FROM agent_messages") == before


def test_a_row_that_is_not_utf8_is_a_corrupt_row(tmp_path: Path) -> None:
    for advanced in (False, True):
        path = tmp_path / f"utf8-{advanced}.db"
        _sealed_store(path, [{"role": "user", "content": f"turn {n}"} for n in range(3)], advanced)
        _sql(path, "UPDATE agent_messages SET message_data = CAST(x'7bff7d' AS TEXT) WHERE id = 2")

        async def reads(path: Path = path, advanced: bool = advanced) -> list[Any]:
            backend: Any = (
                AdvancedSQLiteSession(session_id="s", db_path=path)
                if advanced
                else SQLiteSession("s", path)
            )
            raising = EncryptedSession(underlying_session=backend, encryption_key=TEST_KEY)
            with pytest.raises(CorruptRowError, match="not UTF-8") as caught:
                await raising.get_items()
            assert "\ufffd" not in str(caught.value) and caught.value.item_id == 2
            skipping = EncryptedSession(
                underlying_session=backend, encryption_key=TEST_KEY, on_invalid="skip"
            )
            items = await skipping.get_items()
            await backend.close()
            return items

        # Skip mode keeps what links back unbroken from the head: past the row it cannot
        # read, nothing older can be proven to be this history's.
        assert [i["content"] for i in asyncio.run(reads())] == ["turn 2"]


async def test_a_structure_row_cannot_promote_an_assistant_item_to_a_user_turn(
    tmp_path: Path,
) -> None:
    path = tmp_path / "turns.db"
    backend = AdvancedSQLiteSession(session_id="s", db_path=path, create_tables=True)
    session = EncryptedSession(underlying_session=backend, encryption_key=TEST_KEY)
    await session.add_items(
        [{"role": "user", "content": "question"}, {"role": "assistant", "content": "answer"}]
    )
    _sql(
        path,
        "UPDATE message_structure SET message_type = 'user', branch_turn_number = 2 "
        "WHERE message_id = 2",
    )
    with pytest.raises(TamperedItemError, match="not a user message") as caught:
        await session.get_conversation_turns()
    assert isinstance(caught.value, HistoryTamperedError)
    assert caught.value.kind == "forged structure"
    with pytest.raises(TamperedItemError):
        await session.find_turns_by_content("answer")
    skipping = EncryptedSession(
        underlying_session=backend, encryption_key=TEST_KEY, on_invalid="skip"
    )
    assert [t["content"] for t in await skipping.get_conversation_turns()] == ["question"]
    assert await skipping.find_turns_by_content("answer") == []
    await backend.close()


def _edit_payload(path: Path, edit: Any) -> None:
    (text,) = _sql(path, "SELECT message_data FROM agent_messages")[0]
    envelope = json.loads(text)
    edit(envelope)
    _sql(path, "UPDATE agent_messages SET message_data = ?", (json.dumps(envelope),))


def test_a_respelled_token_is_refused(tmp_path: Path) -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    path = tmp_path / "respell.db"
    _sealed_store(path, [{"role": "user", "content": "x"}])

    def respell(envelope: dict[str, Any]) -> None:
        token = envelope["payload"]
        last = len(token.rstrip("=")) - 1
        assert token.endswith("=")
        flipped = alphabet[alphabet.index(token[last]) ^ 1]  # an unused low bit
        envelope["payload"] = token[:last] + flipped + token[last + 1 :]
        assert base64.urlsafe_b64decode(envelope["payload"]) == base64.urlsafe_b64decode(token)

    _edit_payload(path, respell)
    with pytest.raises(TamperedItemError):
        _read(path)


@pytest.mark.parametrize("cache", [0, 1024])
@pytest.mark.parametrize("swap", [(1, True), (1, 1.0), (0, False), ("1", 1)])
def test_a_clear_field_of_another_json_type_is_refused(
    tmp_path: Path, cache: int, swap: tuple[Any, Any]
) -> None:
    original, replacement = swap
    path = tmp_path / "types.db"

    async def run() -> None:
        backend = SQLiteSession("s", path)
        session = EncryptedSession(
            underlying_session=backend, encryption_key=TEST_KEY, plaintext_cache=cache
        )
        await session.add_items([{"type": "function_call", "name": original}])
        assert len(await session.get_items()) == 1  # fills the cache when it is on
        _edit_payload(path, lambda e: e.update(name=replacement))
        with pytest.raises(TamperedItemError):
            await session.get_items()
        await backend.close()

    asyncio.run(run())


def test_binary_key_files(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _sealed_store(path, [{"role": "user", "content": "x"}])
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"\x80\xbe\x01\x02" * 5)
    for extra in ([], ["--debug"]):
        done = _cli(*extra, "verify", str(path), "--key-file", str(junk), key="")
        assert done.returncode == (3 if not extra else 1), done.stderr  # --debug: a traceback
        assert "not a text key" in done.stderr and "0xbe" not in done.stderr + done.stdout
    raw = tmp_path / "raw.key"
    raw.write_bytes(os.urandom(31) + b"\xff")  # 32 raw bytes that are not UTF-8
    other_key = _cli("verify", str(path), "--key-file", str(raw), key="")
    assert "UnknownKeyIdError" in other_key.stdout  # read as a (different) key


def test_inspect_survives_an_absurd_seal_time(tmp_path: Path) -> None:
    path = tmp_path / "time.db"
    _sealed_store(path, [{"role": "user", "content": "x"}])

    def far_future(envelope: dict[str, Any]) -> None:
        raw = bytearray(base64.urlsafe_b64decode(envelope["payload"]))
        raw[1:9] = (2**63).to_bytes(8, "big")
        envelope["payload"] = base64.urlsafe_b64encode(bytes(raw)).decode()

    _edit_payload(path, far_future)
    done = _cli("inspect", str(path), "--json", key="")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sessions"][0]["items"] == 1


def test_plaintext_that_cannot_be_sealed_does_not_block_encrypt(tmp_path: Path) -> None:
    path = tmp_path / "nan.db"

    async def fill() -> None:
        async with SQLiteSession("s", path) as plain:
            await plain.add_items([{"role": "user", "content": "fine"}])

    asyncio.run(fill())
    _sql(
        path, """INSERT INTO agent_messages (session_id, message_data) VALUES ('s', '{"x": NaN}')"""
    )
    refused = _cli("encrypt", str(path), "--json")
    assert refused.returncode == 4 and "nothing was changed" in refused.stderr
    done = _cli("encrypt", str(path), "--json", "--skip-unreadable")
    assert done.returncode == 0, done.stderr
    assert {k: json.loads(done.stdout)[k] for k in ("changed", "unreadable")} == {
        "changed": 1,
        "unreadable": 1,
    }


@pytest.mark.parametrize("kid", ["x" * 5000, "line\nbreak", "<script>", "k" * 65])
def test_a_stored_key_id_that_is_not_one_is_never_echoed(tmp_path: Path, kid: str) -> None:
    path = tmp_path / "kid.db"
    _sealed_store(path, [{"role": "user", "content": "x"}])
    _edit_payload(path, lambda e: e.update(kid=kid))
    with pytest.raises(UnknownKeyIdError) as caught:
        _read(path)
    assert kid not in str(caught.value) and caught.value.kid is None
    _edit_payload(path, lambda e: e.update(kid="2026-11", v=10**500 if len(kid) > 100 else 5))
    with pytest.raises(TamperedItemError) as version_error:
        _read(path)
    assert len(str(version_error.value)) < 600


def test_reports_escape_control_characters_from_the_store(tmp_path: Path) -> None:
    path = tmp_path / "spoof.db"
    spoof = "\rOK (2 items checked)\n\x1b[8m"

    async def fill() -> None:
        backend = SQLiteSession(spoof, path)
        async with EncryptedSession(underlying_session=backend, encryption_key=TEST_KEY) as s:
            await s.add_items([{"role": "user", "content": "x"}])

    asyncio.run(fill())
    _edit_payload(path, lambda e: e.update(payload=e["payload"][:-8] + "AAAAAAA="))
    for command in ("verify", "inspect"):
        done = _cli(command, str(path))
        assert "\x1b" not in done.stdout and "\r" not in done.stdout
        assert "\\x1b" in done.stdout or command == "inspect"


def test_a_float_format_version_is_not_current_for_rotation(tmp_path: Path) -> None:
    path = tmp_path / "vfloat.db"
    _sealed_store(path, [{"role": "user", "content": "x"}])
    _edit_payload(path, lambda e: e.update(v=2.0))
    done = _cli("rotate", str(path), "--json", "--skip-unreadable")
    assert json.loads(done.stdout)["unreadable"] == 1


def test_store_maintenance_never_passes_over_rows_it_cannot_reach(tmp_path: Path) -> None:
    """Plain-session rows in a store that has branch tables are invisible to the branch
    reader: rotate, purge and verify must say so instead of reporting success."""
    from encmem import Keyring, generate_key

    path = tmp_path / "mixed.db"
    old, new = generate_key(), generate_key()

    async def fill() -> None:
        backend = SQLiteSession("plain", path)
        async with EncryptedSession(
            underlying_session=backend, encryption_key=Keyring({"old": old})
        ) as s:
            await s.add_items([{"role": "user", "content": f"m{i}"} for i in range(3)])
        async with AdvancedSQLiteSession(session_id="zz", db_path=path, create_tables=True) as a:
            await a.get_items()

    asyncio.run(fill())
    before = _sql(path, "SELECT message_data FROM agent_messages")
    keys = f"new:{new},old:{old}"
    for command in (["rotate"], ["purge", "--ttl", "1"]):
        done = _cli(*command, str(path), key="", ENCMEM_KEYS=keys)
        assert done.returncode == 4, done.stdout + done.stderr
        assert "3 of the store's 3 rows" in done.stderr
    assert _sql(path, "SELECT message_data FROM agent_messages") == before
    verify = _cli("verify", str(path), "--json", key="", ENCMEM_KEYS=f"new:{new}")
    assert verify.returncode == 1
    assert any(
        p["problem"].startswith("unreached: 3") for p in json.loads(verify.stdout)["problems"]
    )
