"""Attacks on a session's stored history, done with plain ``sqlite3`` by someone without the key.

A store holds session ``s``: six messages on ``main`` (``m1``..``m6``, user and assistant in
turn), plus what its past left behind for an attacker to reuse: the raw row of an item that
``pop_item`` removed (``m7``), older copies of the fifth and sixth places (``m5-old`` and
``m6-old``, each popped before ``m5`` / ``m6`` was written), another session ``other`` in
the same file and, on the advanced backend, a branch ``x`` made from turn 2 (``m1``,
``m2``, then ``x3``, ``x4``).

Each :class:`Attack` rewrites that file as an attacker could and says how it must show:
which error, which ``kind`` of :class:`encmem.HistoryTamperedError`, and how deep in the
history it sits (a ``get_items(limit=n)`` window checks only its own rows and the head).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encmem.backends import (
    AdvancedSQLAlchemySession,
    AdvancedSQLiteSession,
    SQLAlchemySession,
    SQLiteSession,
)

from encmem import EncryptedSession, HistoryTamperedError, Keyring, TamperedItemError

SID = "s"
MESSAGES = "agent_messages"
STRUCTURE = "message_structure"
HEADS = "agent_messages_heads"


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection: one transaction, committed on success, then closed
    (without waiting for the disk: these files are thrown away after the test)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA synchronous = OFF")
        with conn:
            yield conn


@dataclass(frozen=True)
class Backend:
    """An encmem backend that keeps history heads, opened on a SQLite file."""

    name: str
    advanced: bool
    open: Callable[[Path, str], Any]


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("sqlite", False, lambda path, sid: SQLiteSession(sid, path)),
    "advanced-sqlite": Backend(
        "advanced-sqlite",
        True,
        lambda path, sid: AdvancedSQLiteSession(session_id=sid, db_path=path, create_tables=True),
    ),
    "sqlalchemy-sqlite": Backend(
        "sqlalchemy-sqlite",
        False,
        lambda path, sid: SQLAlchemySession.from_url(
            sid, url=f"sqlite+aiosqlite:///{path}", create_tables=True
        ),
    ),
    "advanced-sqlalchemy-sqlite": Backend(
        "advanced-sqlalchemy-sqlite",
        True,
        lambda path, sid: AdvancedSQLAlchemySession.from_url(
            sid, url=f"sqlite+aiosqlite:///{path}", create_tables=True
        ),
    ),
}
"""Every encmem backend with history heads, each on a SQLite file with the same table names
(the SQLAlchemy ones through aiosqlite; on PostgreSQL see tests/test_history_pg.py)."""

HEADED = list(BACKENDS)


def message(content: str, role: str) -> dict[str, Any]:
    return {"role": role, "content": content}


TRUE_MAIN = [message(f"m{n}", "user" if n % 2 else "assistant") for n in range(1, 7)]
"""What ``main`` holds, oldest first."""
TRUE_TURNS = ["m1", "m3", "m5"]
"""The contents of main's user turns."""
BRANCH_X = [TRUE_MAIN[0], TRUE_MAIN[1], message("x3", "user"), message("x4", "assistant")]
OTHER = [message("o1", "user"), message("o2", "assistant"), message("o3", "user")]


@dataclass
class Template:
    """A built store and what an attacker can find in it."""

    backend: Backend
    path: Path
    ids: dict[str, int] = field(default_factory=dict)
    """Storage id of each message by content (``m1``, ``x3``, ``o2``...)."""
    leftovers: dict[str, str] = field(default_factory=dict)
    """Raw rows that once were stored: ``m7`` (popped), ``m5-old`` / ``m6-old`` (popped,
    then their place written again)."""


def _last_row(path: Path) -> tuple[int, str]:
    with connect(path) as conn:
        row = conn.execute(f"SELECT id, message_data FROM {MESSAGES} ORDER BY id DESC").fetchone()
    return int(row[0]), str(row[1])


async def _ids(underlying: Any, session: EncryptedSession, branch: str | None) -> dict[str, int]:
    """Storage id of each item of a branch, by content (rows and items in the same order)."""
    kwargs = {} if branch is None else {"branch_id": branch}
    rows = await underlying.get_stored_items(None, **kwargs)
    items = await session.get_items(None, **kwargs)
    return {item["content"]: row.id for row, item in zip(rows, items, strict=True)}


async def _fill(backend: Backend, path: Path, keyring: Keyring) -> Template:
    template = Template(backend, path)
    underlying = backend.open(path, SID)
    other = backend.open(path, "other")
    try:
        s = EncryptedSession(underlying_session=underlying, encryption_key=keyring, ttl=None)
        o = EncryptedSession(underlying_session=other, encryption_key=keyring, ttl=None)
        await s.add_items(TRUE_MAIN[:2])
        await s.add_items(TRUE_MAIN[2:4])
        for then in (TRUE_MAIN[4], TRUE_MAIN[5], None):  # a popped item before each of these
            popped = f"{then['content']}-old" if then else "m7"
            await s.add_items([message(popped, then["role"] if then else "user")])
            template.leftovers[popped] = _last_row(path)[1]
            assert (await s.pop_item())["content"] == popped
            if then is not None:
                await s.add_items([then])
        await o.add_items(OTHER)
        template.ids.update(await _ids(other, o, None))
        if backend.advanced:
            assert await s.create_branch_from_turn(2, "x") == "x"
            await s.add_items(BRANCH_X[2:])
            template.ids.update(await _ids(underlying, s, "x"))
            await underlying.switch_to_branch("main")
        template.ids.update(await _ids(underlying, s, None))
        assert await s.get_items() == TRUE_MAIN
        assert await s.verify_history() == len(TRUE_MAIN)
    finally:
        await underlying.close()
        await other.close()
    return template


def build(backend: Backend, path: Path, keyring: Keyring) -> Template:
    """Build the store described in the module docstring at ``path``."""
    return asyncio.run(_fill(backend, path, keyring))


def copy(template: Template, path: Path) -> Template:
    """A fresh copy of a built store, for one test to attack."""
    with connect(template.path) as source, connect(path) as target:
        source.backup(target)
    return Template(template.backend, path, dict(template.ids), dict(template.leftovers))


# -- raw access, as an attacker has it ---------------------------------------------------------


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (to show that a read deleted or changed nothing)."""
    with connect(path) as conn:
        tables = [
            str(r[0])
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(r[0]).startswith("sqlite_")
        ]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def data(conn: sqlite3.Connection, item_id: int) -> str:
    return str(
        conn.execute(f"SELECT message_data FROM {MESSAGES} WHERE id = ?", (item_id,)).fetchone()[0]
    )


def set_data(conn: sqlite3.Connection, item_id: int, text: str) -> None:
    conn.execute(f"UPDATE {MESSAGES} SET message_data = ? WHERE id = ?", (text, item_id))


def append_row(conn: sqlite3.Connection, t: Template, text: str, branch: str = "main") -> int:
    """A new message row at the end of ``branch``, with the structure row the backend would
    write for it (its type read from the envelope's clear ``role``)."""
    cursor = conn.execute(
        f"INSERT INTO {MESSAGES} (session_id, message_data) VALUES (?, ?)", (SID, text)
    )
    item_id = int(cursor.lastrowid or 0)
    if t.backend.advanced:
        append_structure(conn, item_id, json.loads(text).get("role", "message"), branch)
    return item_id


def append_structure(conn: sqlite3.Connection, item_id: int, kind: str, branch: str) -> None:
    seq, turn, branch_turn = conn.execute(
        f"SELECT max(sequence_number), max(user_turn_number), max(branch_turn_number) "
        f"FROM {STRUCTURE} WHERE session_id = ? AND branch_id = ?",
        (SID, branch),
    ).fetchone()
    step = 1 if kind == "user" else 0
    conn.execute(
        f"INSERT INTO {STRUCTURE} (session_id, message_id, branch_id, message_type, "
        "sequence_number, user_turn_number, branch_turn_number) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (SID, item_id, branch, kind, (seq or 0) + 1, (turn or 0) + step, (branch_turn or 0) + step),
    )


def delete_row(conn: sqlite3.Connection, t: Template, item_id: int) -> None:
    if t.backend.advanced:
        conn.execute(f"DELETE FROM {STRUCTURE} WHERE message_id = ?", (item_id,))
    conn.execute(f"DELETE FROM {MESSAGES} WHERE id = ?", (item_id,))


def head(conn: sqlite3.Connection, sid: str, branch: str = "main") -> str:
    return str(
        conn.execute(
            f"SELECT head FROM {HEADS} WHERE session_id = ? AND branch_id = ?", (sid, branch)
        ).fetchone()[0]
    )


def set_head(conn: sqlite3.Connection, sid: str, branch: str, text: str) -> None:
    conn.execute(
        f"UPDATE {HEADS} SET head = ? WHERE session_id = ? AND branch_id = ?", (text, sid, branch)
    )


# -- the attacks -------------------------------------------------------------------------------

Apply = Callable[[sqlite3.Connection, Template], None]


@dataclass(frozen=True)
class Attack:
    """One rewrite of the store and how it must be reported."""

    name: str
    apply: Apply
    kinds: frozenset[str]
    """The plausible ``kind`` values of the HistoryTamperedError it raises."""
    depth: int
    """How many of the newest rows a ``get_items(limit=n)`` window needs to see it: 1 when
    the newest row or the head is changed; a window of fewer rows returns the true tail."""
    advanced_only: bool = False
    error: type[TamperedItemError] = HistoryTamperedError
    structure_only: bool = False
    """Only the clear structure rows change: item reads stay true; turn queries detect it."""
    sibling: bool = False
    """The attacker's item is an authentic sibling of a true one: same place in the chain,
    same predecessor (from another branch, or an older copy of the place)."""

    def __str__(self) -> str:
        return self.name


def _swap_data(a: str, b: str) -> Apply:
    def apply(conn: sqlite3.Connection, t: Template) -> None:
        first, second = data(conn, t.ids[a]), data(conn, t.ids[b])
        set_data(conn, t.ids[a], second)
        set_data(conn, t.ids[b], first)

    return apply


def _swap_structure(conn: sqlite3.Connection, t: Template) -> None:
    """Swap the places of m2 and m3 on main (their sequence numbers)."""
    query = f"SELECT sequence_number FROM {STRUCTURE} WHERE message_id = ? AND branch_id = 'main'"
    update = (
        f"UPDATE {STRUCTURE} SET sequence_number = ? WHERE message_id = ? AND branch_id = 'main'"
    )
    a, b = t.ids["m2"], t.ids["m3"]
    seq_a, seq_b = (conn.execute(query, (i,)).fetchone()[0] for i in (a, b))
    conn.execute(update, (-1, a))
    conn.execute(update, (seq_a, b))
    conn.execute(update, (seq_b, a))


def _duplicate(conn: sqlite3.Connection, t: Template) -> None:
    append_row(conn, t, data(conn, t.ids["m2"]))


def _delete(name: str) -> Apply:
    return lambda conn, t: delete_row(conn, t, t.ids[name])


def _reinsert_popped(conn: sqlite3.Connection, t: Template) -> None:
    append_row(conn, t, t.leftovers["m7"])


def _copy_from_branch(conn: sqlite3.Connection, t: Template) -> None:
    append_row(conn, t, data(conn, t.ids["x3"]))


def _splice_from_branch(conn: sqlite3.Connection, t: Template) -> None:
    """Main's third place now shows branch x's third item (same seq, same predecessor)."""
    conn.execute(
        f"UPDATE {STRUCTURE} SET message_id = ? WHERE message_id = ? AND branch_id = 'main'",
        (t.ids["x3"], t.ids["m3"]),
    )


def _splice_from_session(conn: sqlite3.Connection, t: Template) -> None:
    set_data(conn, t.ids["m3"], data(conn, t.ids["o3"]))


def _retype(name: str, kind: str) -> Apply:
    """Make ``name`` a message of type ``kind``, renumbering the turns as the backend would."""

    def apply(conn: sqlite3.Connection, t: Template) -> None:
        seq, was = conn.execute(
            f"SELECT sequence_number, message_type FROM {STRUCTURE} "
            "WHERE message_id = ? AND branch_id = 'main'",
            (t.ids[name],),
        ).fetchone()
        step = (kind == "user") - (was == "user")
        conn.execute(
            f"UPDATE {STRUCTURE} SET user_turn_number = user_turn_number + ?, "
            "branch_turn_number = branch_turn_number + ? "
            "WHERE session_id = ? AND branch_id = 'main' AND sequence_number >= ?",
            (step, step, SID, seq),
        )
        conn.execute(
            f"UPDATE {STRUCTURE} SET message_type = ? WHERE message_id = ? AND branch_id = 'main'",
            (kind, t.ids[name]),
        )

    return apply


def _delete_head(conn: sqlite3.Connection, t: Template) -> None:
    conn.execute(f"DELETE FROM {HEADS} WHERE session_id = ? AND branch_id = 'main'", (SID,))


def _swap_heads(sid: str, branch: str) -> Apply:
    def apply(conn: sqlite3.Connection, t: Template) -> None:
        mine, theirs = head(conn, SID), head(conn, sid, branch)
        set_head(conn, SID, "main", theirs)
        set_head(conn, sid, branch, mine)

    return apply


def _roll_back(name: str) -> Apply:
    """``name``'s row holds the item that stood in its place before (popped, then replaced)."""

    def apply(conn: sqlite3.Connection, t: Template) -> None:
        set_data(conn, t.ids[name], t.leftovers[f"{name}-old"])

    return apply


_ORDER = frozenset({"reordered", "missing", "moved", "duplicated", "resurrected"})
HEAD = frozenset({"head mismatch"})

ATTACKS = [
    Attack("reorder rows", _swap_data("m2", "m3"), _ORDER, depth=4),
    Attack("reorder the newest rows", _swap_data("m5", "m6"), _ORDER | HEAD, depth=1),
    Attack("reorder structure", _swap_structure, _ORDER, depth=4, advanced_only=True),
    Attack("duplicate a row", _duplicate, frozenset({"duplicated", "reordered"}), depth=1),
    Attack("delete from the middle", _delete("m3"), frozenset({"missing"}), depth=4),
    Attack("cut the tail", _delete("m6"), frozenset({"missing"}), depth=1),
    Attack("re-insert a popped row", _reinsert_popped, frozenset({"resurrected"}), depth=1),
    Attack(
        "copy from a branch",
        _copy_from_branch,
        frozenset({"moved", "reordered", "resurrected"}),
        depth=1,
        advanced_only=True,
    ),
    Attack(
        "splice from a branch",
        _splice_from_branch,
        frozenset({"moved"}),
        depth=4,
        advanced_only=True,
        sibling=True,
    ),
    # An item of another session does not open under this session's key at all: a plain
    # TamperedItemError, and skip mode steps over it like any unreadable item.
    Attack(
        "splice from another session",
        _splice_from_session,
        frozenset(),
        depth=4,
        error=TamperedItemError,
    ),
    Attack(
        "assistant message made a user turn",
        _retype("m4", "user"),
        frozenset({"forged structure"}),
        depth=1,
        advanced_only=True,
        structure_only=True,
    ),
    Attack(
        "user turn hidden",
        _retype("m5", "assistant"),
        frozenset({"forged structure"}),
        depth=1,
        advanced_only=True,
        structure_only=True,
    ),
    Attack("delete the head", _delete_head, HEAD, depth=1),
    Attack("swap heads between sessions", _swap_heads("other", "main"), HEAD, depth=1),
    Attack("swap heads between branches", _swap_heads(SID, "x"), HEAD, depth=1, advanced_only=True),
    Attack("roll back the newest row", _roll_back("m6"), HEAD, depth=1),
    Attack("roll back a row", _roll_back("m5"), frozenset({"moved"}), depth=2, sibling=True),
]


def attacks_for(backend: Backend) -> list[Attack]:
    return [a for a in ATTACKS if backend.advanced or not a.advanced_only]


def attack(template: Template, chosen: Attack) -> None:
    """Apply ``chosen`` to the store, in one transaction, as an attacker with sqlite3 would."""
    with connect(template.path) as conn:
        chosen.apply(conn, template)
