"""Regression tests for the findings of the security review of the envelope and the stores.

Each test names the finding it pins: strict SDK v1 envelopes, duplicate JSON keys, rows that
are not JSON objects, seal times in the future, popped plaintext left in memory, table names
that need quoting, and tokens made by ``cryptography``'s Fernet alone.
"""

from __future__ import annotations

import ast
import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import AdvancedSQLiteSession, SQLAlchemySession, SQLiteSession

from encmem import (
    DecryptionError,
    EncryptedSession,
    Keyring,
    TamperedItemError,
    generate_key,
)
from encmem._envelope import open_envelope
from encmem.errors import CorruptRowError

from .conftest import TEST_KEY
from .memory import objects_holding

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_790_000_000.0
CORRUPT_ROWS = ["[" * 200_000, "9" * 100_000, "[1, 2]", '"text"', "not json", "{}{}"]


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _open_backend(kind: str, path: Path, session_id: str) -> Any:
    if kind == "sqlite":
        return SQLiteSession(session_id, path)
    if kind == "advanced":
        return AdvancedSQLiteSession(session_id=session_id, db_path=path, create_tables=True)
    return SQLAlchemySession.from_url(
        session_id, url=f"sqlite+aiosqlite:///{path}", create_tables=True
    )


BACKENDS = ["sqlite", "advanced", "sqlalchemy-sqlite"]


def _set_row(path: Path, position: int, text: str, session_id: str = "s") -> int:
    """Overwrite the ``position``-th stored row (0 = oldest) of a session; return its id."""
    with sqlite3.connect(path) as conn:
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM agent_messages WHERE session_id = ? ORDER BY id", (session_id,)
            )
        ]
        conn.execute(
            "UPDATE agent_messages SET message_data = ? WHERE id = ?", (text, ids[position])
        )
    return int(ids[position])


def _row_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone()[0])


def _items(n: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"turn {i}"} for i in range(n)]


# -- SDK v1 envelopes carry exactly the SDK's fields ------------------------------------------


def _sdk_envelope(keyring_key: str, session_id: str, item: dict[str, Any]) -> dict[str, Any]:
    """An envelope as the Agents SDK's EncryptedSession writes it (made by the SDK itself)."""
    import asyncio

    from agents.extensions.memory.encrypt_session import EncryptedSession as SDKEncrypted
    from agents.memory import SQLiteSession as SDKSQLite

    async def write() -> dict[str, Any]:
        inner = SDKSQLite(session_id)
        sdk = SDKEncrypted(
            session_id=session_id, underlying_session=inner, encryption_key=keyring_key
        )
        await sdk.add_items([item])  # type: ignore[list-item]
        stored: dict[str, Any] = (await inner.get_items())[0]  # type: ignore[assignment]
        inner.close()
        return stored

    return asyncio.run(write())


@pytest.mark.parametrize(
    "extra",
    [{"injected": "x"}, {"role": "user"}, {"role": "user", "type": "function_call"}, {"name": "t"}],
)
def test_sdk_v1_envelope_with_any_extra_field_is_tampered(extra: dict[str, Any]) -> None:
    key = generate_key()
    item = {"role": "assistant", "content": "from the SDK"}
    envelope = _sdk_envelope(key, "s", item)
    ring = Keyring(key)
    assert open_envelope(envelope, ring, "s").item == item  # as the SDK wrote it: opens
    with pytest.raises(TamperedItemError, match="fields the SDK never writes"):
        open_envelope({**envelope, **extra}, ring, "s")


# -- duplicate JSON keys ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
async def test_stored_envelope_with_a_duplicate_key_is_refused(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "dup.db"
    session = EncryptedSession(
        underlying_session=_open_backend(kind, path, "s"), encryption_key=TEST_KEY, clock=Clock()
    )
    await session.add_items([{"role": "system", "content": "be careful"}])
    with sqlite3.connect(path) as conn:
        (text,) = conn.execute("SELECT message_data FROM agent_messages").fetchone()
    assert text.startswith("{") and '"role":"system"' in text
    # Python's json keeps the last "role", SQLite's json_extract the first: readers disagree.
    _set_row(path, 0, text[:-1] + ',"role":"user"}')
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT json_extract(message_data, '$.role') FROM agent_messages"
        ).fetchone() == ("system",)
    with pytest.raises(CorruptRowError, match="duplicate key") as caught:
        await session.get_items()
    assert isinstance(caught.value, DecryptionError) and caught.value.session_id == "s"
    with pytest.raises(CorruptRowError):
        await session.get_items(limit=1)
    assert _row_count(path) == 1
    await session.close()


# -- rows that are not JSON objects -----------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_a_row_that_is_not_a_json_object_is_never_hidden(
    kind: str, encrypted: bool, tmp_path: Path
) -> None:
    for index, junk in enumerate(CORRUPT_ROWS):
        path = tmp_path / f"junk{index}.db"
        backend = _open_backend(kind, path, "s")
        session: Any = (
            EncryptedSession(underlying_session=backend, encryption_key=TEST_KEY, clock=Clock())
            if encrypted
            else backend
        )
        await session.add_items(_items(3))
        row_id = _set_row(path, 1, junk)
        with pytest.raises(CorruptRowError) as caught:
            await session.get_items()
        assert caught.value.item_id == row_id and caught.value.session_id == "s"
        assert junk[:50] not in str(caught.value)  # the row is named, its content is not
        assert _row_count(path) == 3
        # The newest item still pops; the bad row stays where it is.
        assert (await session.pop_item()) == {"role": "user", "content": "turn 2"}
        with pytest.raises(CorruptRowError):
            await session.pop_item()  # the bad row is now the newest: refused, not deleted
        assert _row_count(path) == 2
        await session.close()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_skip_mode_skips_a_corrupt_row_with_a_warning(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "skip.db"
    session = EncryptedSession(
        underlying_session=_open_backend(kind, path, "s"),
        encryption_key=TEST_KEY,
        clock=Clock(),
        on_invalid="skip",
    )
    await session.add_items(_items(3))
    _set_row(path, 1, "[" * 1000)
    with caplog.at_level(logging.WARNING, logger="encmem"):
        items = await session.get_items()
    # What links back unbroken from the head: nothing older than the unreadable row.
    assert [item["content"] for item in items] == ["turn 2"]
    assert any("cannot be read" in record.getMessage() for record in caplog.records)
    assert _row_count(path) == 3
    await session.close()


def test_verify_reports_a_corrupt_row(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "verify.db"

    async def fill() -> None:
        session = EncryptedSession(
            underlying_session=SQLiteSession("s", path), encryption_key=TEST_KEY
        )
        await session.add_items(_items(2))
        await session.close()

    asyncio.run(fill())
    _set_row(path, 0, "9" * 50)
    done = subprocess.run(
        [sys.executable, "-m", "encmem.cli", "verify", str(path), "--json"],
        capture_output=True,
        text=True,
        env={"ENCMEM_KEYS": TEST_KEY, "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    problems = json.loads(done.stdout)["problems"]
    expected = "corrupt-row (it holds a JSON number, not an object)"
    assert [p["problem"] for p in problems] == [expected]


# -- seal times in the future -----------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_seal_time_far_ahead_of_the_clock_is_invalid(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    writer_clock = Clock(NOW + 3600)  # a writer an hour ahead
    writer = EncryptedSession(
        underlying_session=_open_backend(kind, path, "s"),
        encryption_key=TEST_KEY,
        clock=writer_clock,
    )
    await writer.add_items(_items(1))
    await writer.close()
    reader_clock = Clock(NOW)
    for mode in ("raise", "skip"):
        reader = EncryptedSession(
            underlying_session=_open_backend(kind, path, "s"),
            encryption_key=TEST_KEY,
            clock=reader_clock,
            on_invalid=mode,  # type: ignore[arg-type]
        )
        if mode == "raise":
            with pytest.raises(TamperedItemError, match="ahead of this reader's clock"):
                await reader.get_items()
        else:
            assert await reader.get_items() == []
        await reader.close()
    assert _row_count(path) == 1
    # Within Fernet's 60 s allowance the item reads.
    reader_clock.now = NOW + 3600 - 59
    reader = EncryptedSession(
        underlying_session=_open_backend(kind, path, "s"),
        encryption_key=TEST_KEY,
        clock=reader_clock,
    )
    assert await reader.get_items() == _items(1)
    await reader.close()


# -- popped plaintext does not stay in the cache ----------------------------------------------


@pytest.mark.slow  # walks every live object of the interpreter
@pytest.mark.parametrize("kind", BACKENDS)
async def test_popped_plaintext_leaves_the_cache(kind: str, tmp_path: Path) -> None:
    session = EncryptedSession(
        underlying_session=_open_backend(kind, tmp_path / "pop.db", "s"),
        encryption_key=TEST_KEY,
        clock=Clock(),
    )
    marker = "PLAINTEXT" + "-marker-" + kind
    await session.add_items([{"role": "user", "content": "kept"}])
    # In a list: the collector always tracks lists, so the scan sees every copy of it.
    await session.add_items([{"role": "user", "content": [marker + " secret"]}])
    await session.get_items()  # fills the plaintext cache with both items
    assert objects_holding(marker) > 0
    popped = await session.pop_item()
    assert popped is not None and popped["content"][0].startswith(marker)
    del popped
    assert objects_holding(marker) == 0
    assert await session.get_items() == [{"role": "user", "content": "kept"}]
    await session.close()


# -- table names read from the database are quoted --------------------------------------------


async def test_erase_leaves_other_tables_alone_whatever_their_names(tmp_path: Path) -> None:
    from encmem.backends import open_store

    path = tmp_path / "quoted.db"
    session = SQLiteSession("s", path)
    await session.add_items(_items(2))
    await session.close()
    odd = ['audit"x', "a b", "sel'ect", 'x"; DROP TABLE agent_messages; --']
    with sqlite3.connect(path) as conn:
        for name in odd:
            quoted = '"' + name.replace('"', '""') + '"'
            conn.execute(f"CREATE TABLE {quoted} (session_id TEXT, note TEXT)")
            conn.execute(f"INSERT INTO {quoted} VALUES ('s', 'n'), ('other', 'n')")
    store = await open_store(path)
    try:
        removed = await store.erase_session("s")
    finally:
        await store.aclose()
    assert removed == 2 + 1  # two messages and the session row: the store's own tables only
    with sqlite3.connect(path) as conn:
        for name in odd:  # an application's tables, however named, are not the store's
            quoted = '"' + name.replace('"', '""') + '"'
            assert sorted(conn.execute(f"SELECT session_id FROM {quoted}").fetchall()) == [
                ("other",),
                ("s",),
            ]
        assert conn.execute("SELECT COUNT(*) FROM agent_messages").fetchone() == (0,)


# -- tokens come from cryptography.fernet alone -----------------------------------------------


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_of_the_project_uses_cipher_primitives() -> None:
    forbidden = (
        "cryptography.hazmat.primitives.ciphers",
        "cryptography.hazmat.primitives.padding",
        "cryptography.hazmat.primitives.hmac",
        "cryptography.hazmat.primitives.ciphers.modes",
    )
    sources = [
        path
        for folder in ("encmem", "backends", "benchmarks", "scripts", "tests")
        for path in (ROOT / folder).rglob("*.py")
    ]
    assert len(sources) > 20
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if n.startswith(forbidden))
        for path in sources
    }
    assert {path: names for path, names in offenders.items() if names} == {}
    # Tokens are signed by Fernet: the token and envelope modules compute no MAC themselves.
    for name in ("_token.py", "_envelope.py"):
        assert not {n for n in _imports(ROOT / "encmem" / name) if n.split(".")[0] == "hmac"}


def test_tokens_are_made_by_fernet_and_open_with_stock_fernet() -> None:
    from cryptography.fernet import Fernet

    ring = Keyring({"k": TEST_KEY})
    key = ring.session_key("k", "s")
    assert key is not None and isinstance(key.fernet, Fernet)
    token = key.seal(b'{"role":"user"}', int(NOW))
    assert key.fernet.decrypt(token) == b'{"role":"user"}'
    assert key.fernet.extract_timestamp(token) == int(NOW)
    assert "hidden" in repr(key) and TEST_KEY not in repr(key)
