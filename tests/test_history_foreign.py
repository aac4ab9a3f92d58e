"""Chained history on a session that is not encmem's (the Agents SDK's SQLiteSession): what
SECURITY.md's table promises there, detected and not detected, attack by attack."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

agents = pytest.importorskip("agents")

from encmem import EncryptedSession, HistoryTamperedError, generate_key  # noqa: E402

KEY = generate_key()


def rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, message_data FROM agent_messages ORDER BY id").fetchall()


def sql(path: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement, params)


async def written(path: Path, n: int = 4) -> EncryptedSession:
    session = EncryptedSession(
        underlying_session=agents.SQLiteSession("s", str(path)), encryption_key=KEY
    )
    for i in range(n):
        await session.add_items([{"role": "user", "content": f"m{i}"}])
    return session


def reopened(path: Path) -> EncryptedSession:
    return EncryptedSession(
        underlying_session=agents.SQLiteSession("s", str(path)), encryption_key=KEY
    )


def swap(path: Path, a: int, b: int) -> None:
    found = dict(rows(path))
    sql(path, "UPDATE agent_messages SET message_data = ? WHERE id = ?", (found[b], a))
    sql(path, "UPDATE agent_messages SET message_data = ? WHERE id = ?", (found[a], b))


@pytest.mark.parametrize(
    ("attack", "kind"),
    [
        (lambda p: swap(p, 2, 3), "reordered"),
        (
            lambda p: sql(
                p,
                "INSERT INTO agent_messages (session_id, message_data) "
                "SELECT session_id, message_data FROM agent_messages WHERE id = 2",
            ),
            "duplicated",
        ),
        (lambda p: sql(p, "DELETE FROM agent_messages WHERE id = 2"), "missing"),
    ],
    ids=["reorder", "duplicate", "delete-middle"],
)
async def test_rearranging_a_foreign_session_is_detected(
    tmp_path: Path, attack: object, kind: str
) -> None:
    path = tmp_path / "sdk.db"
    (await written(path)).underlying_session.close()  # type: ignore[attr-defined]
    attack(path)  # type: ignore[operator]
    before = rows(path)
    session = reopened(path)
    with pytest.raises(HistoryTamperedError) as caught:
        await session.get_items()
    assert caught.value.kind == kind
    assert rows(path) == before  # nothing deleted


async def test_a_popped_item_put_back_is_detected_once_a_newer_one_follows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sdk.db"
    session = await written(path, 3)
    popped_row = rows(path)[-1][1]
    assert await session.pop_item() == {"role": "user", "content": "m2"}
    await session.add_items([{"role": "user", "content": "m2 again"}])
    sql(
        path,
        "INSERT INTO agent_messages (session_id, message_data) VALUES ('s', ?)",
        (popped_row,),
    )
    with pytest.raises(HistoryTamperedError) as caught:
        await reopened(path).get_items()
    assert caught.value.kind == "resurrected"


async def test_what_a_foreign_session_cannot_detect_without_a_head(tmp_path: Path) -> None:
    """Documented limits: with no head, a cut tail and the newest popped item put back read
    as a shorter or longer, still sound, history."""
    path = tmp_path / "sdk.db"
    session = await written(path, 3)
    popped_row = rows(path)[-1][1]
    await session.pop_item()
    sql(
        path,
        "INSERT INTO agent_messages (session_id, message_data) VALUES ('s', ?)",
        (popped_row,),
    )
    assert [i["content"] for i in await reopened(path).get_items()] == ["m0", "m1", "m2"]
    sql(path, "DELETE FROM agent_messages WHERE id = (SELECT MAX(id) FROM agent_messages)")
    assert [i["content"] for i in await reopened(path).get_items()] == ["m0", "m1"]


async def test_an_anchor_catches_what_the_head_would(tmp_path: Path) -> None:
    path = tmp_path / "sdk.db"
    session = await written(path, 3)
    anchor = await session.history_head()
    assert await session.verify_history(anchor=anchor) == 3
    sql(path, "DELETE FROM agent_messages WHERE id = (SELECT MAX(id) FROM agent_messages)")
    with pytest.raises(HistoryTamperedError) as caught:
        await reopened(path).verify_history(anchor=anchor)
    assert caught.value.kind == "head mismatch"


async def test_a_foreign_session_is_shredded_through_an_explicit_key_store(tmp_path: Path) -> None:
    from encmem.backends import SQLiteKeyStore

    from encmem import SessionErasedError

    path = tmp_path / "sdk.db"
    async with SQLiteKeyStore(tmp_path / "keys.db") as keys:
        session = EncryptedSession(
            underlying_session=agents.SQLiteSession("s", str(path)),
            encryption_key=KEY,
            key_store=keys,
        )
        await session.add_items([{"role": "user", "content": "forget me"}])
        kept = rows(path)
        assert [json.loads(data)["v"] for _, data in kept] == [4]  # under the session's seed
        await session.clear_session()  # the seed goes first
        insert = "INSERT INTO agent_messages (id, session_id, message_data) VALUES (?, 's', ?)"
        for row_id, data in kept:  # a backup's copy comes back
            sql(path, insert, (row_id, data))
        with pytest.raises(SessionErasedError):
            await reopened_with(path, keys).get_items()


def reopened_with(path: Path, keys: object) -> EncryptedSession:
    return EncryptedSession(
        underlying_session=agents.SQLiteSession("s", str(path)),
        encryption_key=KEY,
        key_store=keys,  # type: ignore[arg-type]
    )
