"""Bad input matrix: every hostile or mistaken input gets a clear, specific error and writes
nothing; every odd-but-valid input round-trips exactly.

Runs over the shared ``store`` fixture: every store of ``tests.stores.STORES``, plain and
encrypted (foreign session classes only encrypted). Each matrix test prints a FIGURE line.
"""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from encmem import EncmemError, EncryptedSession, InvalidItemError, InvalidKeyError, generate_key

from .figures import figure
from .stores import EncryptedStore, Store


def _inner(store: Store) -> Store:
    return store.inner if isinstance(store, EncryptedStore) else store


def _ours(store: Store) -> bool:
    """Whether the store's session class is one of encmem's backends (not a foreign one)."""
    return not getattr(type(_inner(store)), "encrypted_only", False)


def _label(store: Store) -> str:
    return store.name if isinstance(store, EncryptedStore) else f"{store.name}-plain"


async def _count(store: Store, session_id: str) -> int:
    """Rows stored for ``session_id``, read past encmem where the store allows it."""
    try:
        return await _count_rows(_inner(store), session_id)
    except Exception as exc:
        if "no such table" in str(exc) or "does not exist" in str(exc):
            return 0  # nothing was ever written: not even the tables exist
        raise


async def _count_rows(inner: Store, session_id: str) -> int:
    if inner.has_raw:
        return len(inner.raw_messages(session_id))
    raw_rows = getattr(inner, "raw_rows", None)
    if callable(raw_rows):
        return len(await raw_rows(session_id))
    return len(await (await inner.open(session_id)).get_items())


def _tables(store: Store) -> set[str] | None:
    path = getattr(_inner(store), "path", None)
    if not isinstance(path, Path) or not path.exists():
        return None
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


OK_ITEM = {"role": "user", "content": "fine"}

#: (label, the add_items argument, expected exception, fragment of its message)
BAD_ITEMS: list[tuple[str, Any, type[BaseException], str]] = [
    ("str item", ["hello"], InvalidItemError, "item 0 is a str, not a JSON object"),
    ("int item", [42], InvalidItemError, "item 0 is an int"),
    ("None item", [None], InvalidItemError, "item 0 is null, not a JSON object"),
    ("list item", [["role", "user"]], InvalidItemError, "item 0 is a list"),
    ("bytes item", [b'{"role": "user"}'], InvalidItemError, "item 0 is a bytes"),
    ("set value", [{"a": {1, 2}}], InvalidItemError, "item 0 cannot be stored as JSON"),
    ("object value", [{"a": object()}], InvalidItemError, "item 0 cannot be stored as JSON"),
    ("bytes value", [{"a": b"raw"}], InvalidItemError, "item 0 cannot be stored as JSON"),
    (
        "datetime value",
        [{"at": datetime.datetime(2026, 1, 1)}],
        InvalidItemError,
        "item 0 cannot be stored as JSON",
    ),
    ("int key", [{1: "one"}], InvalidItemError, "item 0 has a key of type int"),
    ("nested tuple key", [{"a": [{(1, 2): 3}]}], InvalidItemError, "key of type tuple"),
    ("NaN", [{"x": float("nan")}], InvalidItemError, "item 0 cannot be stored as JSON"),
    ("Infinity", [{"x": float("inf")}], InvalidItemError, "item 0 cannot be stored as JSON"),
    ("-Infinity", [{"x": [float("-inf")]}], InvalidItemError, "item 0 cannot be stored as JSON"),
    ("lone surrogate", [{"content": "a\ud800b"}], InvalidItemError, "lone surrogate"),
    ("surrogate key", [{"\udfff": 1}], InvalidItemError, "lone surrogate"),
    ("bad third item", [OK_ITEM, OK_ITEM, {"x": float("nan")}], InvalidItemError, "item 2"),
    ("bad second of many", [OK_ITEM, [1], *[OK_ITEM] * 50], InvalidItemError, "item 1 is a list"),
    ("a str, not a list", "hello", InvalidItemError, "add_items takes a list"),
    ("a dict, not a list", OK_ITEM, InvalidItemError, "add_items takes a list"),
    ("None, not a list", None, InvalidItemError, "add_items takes a list"),
    ("a set, not a list", {"a"}, InvalidItemError, "add_items takes a list"),
]

BAD_LIMITS: list[tuple[Any, type[BaseException], str]] = [
    (-1, ValueError, "limit must be zero or positive"),
    (-(10**6), ValueError, "limit must be zero or positive"),
    (1.5, TypeError, "limit must be an int"),
    ("3", TypeError, "limit must be an int"),
    (True, TypeError, "limit must be an int"),
    ([3], TypeError, "limit must be an int"),
]

BAD_TABLES: list[Any] = [
    "agent_messages; DROP TABLE x",
    "x; --",
    "a b",
    "1abc",
    "",
    "x" * 64,
    'tbl"',
    "tbl`",
    "[tbl]",
    "ümlaut",
    "main.agent_messages",
    None,
    123,
]


async def test_bad_input_matrix(store: Store, pytestconfig: pytest.Config) -> None:
    """Bad items, non-lists, bad limits: the expected error class and message, zero rows."""
    sid = "bad-input"
    session = await store.open(sid)
    await session.add_items([OK_ITEM])  # the schema exists and one row is there
    before = await _count(store, sid)
    tried, problems = 0, []
    for label, argument, expected, fragment in BAD_ITEMS:
        tried += 1
        try:
            await session.add_items(argument)
        except expected as exc:
            if fragment not in str(exc):
                problems.append(f"{label}: message {str(exc)!r} lacks {fragment!r}")
        except BaseException as exc:  # a wrong error is the finding
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{label}: accepted")
        if (after := await _count(store, sid)) != before:
            problems.append(f"{label}: {after - before} rows written")
            before = after
    for limit, expected, fragment in BAD_LIMITS:
        for name, call in (
            ("get_items", lambda lim=limit: session.get_items(lim)),
            ("open with session_settings", lambda lim=limit: _open_with_limit(store, sid, lim)),
        ):
            if name != "get_items" and limit in ("3", True):
                continue  # the SDK's pydantic SessionSettings coerces these to a valid int
            tried += 1
            # The Agents SDK's SessionSettings (a pydantic model) refuses a non-int limit with
            # a ValidationError, which is a ValueError: either class is clear there.
            accepted = (TypeError, ValueError) if name != "get_items" else expected
            fragment = fragment if name == "get_items" else "limit"
            try:
                await call()
            except accepted as exc:
                if fragment not in str(exc):
                    problems.append(f"{name}({limit!r}): {str(exc)!r} lacks {fragment!r}")
            except BaseException as exc:
                problems.append(f"{name}({limit!r}): {type(exc).__name__}: {exc}")
            else:
                problems.append(f"{name}({limit!r}): accepted")
    assert await session.get_items() == [OK_ITEM]
    figure(
        pytestconfig,
        f"bad-input[{_label(store)}]: {tried} bad inputs tried, {tried - len(problems)} "
        f"refused with the expected error, {len(problems)} problems, "
        f"{await _count(store, sid) - 1} extra rows",
    )
    assert problems == []


async def _open_with_limit(store: Store, sid: str, limit: Any) -> None:
    """A session whose settings carry a bad limit: refused when built, or on the first read."""
    session = await store.open(sid, session_settings={"limit": limit})
    await session.get_items()


async def test_bad_table_names_are_refused_before_any_sql(
    store: Store, pytestconfig: pytest.Config
) -> None:
    if not _ours(store):
        pytest.skip("table names of foreign session classes are theirs to check")
    before = _tables(store)
    tried, problems = 0, []
    for bad in BAD_TABLES:
        for parameter in ("messages_table", "sessions_table"):
            tried += 1
            try:
                session = await store.open("tables", **{parameter: bad})
                await session.add_items([OK_ITEM])
            except ValueError as exc:
                if parameter not in str(exc) or "identifier" not in str(exc):
                    problems.append(f"{parameter}={bad!r}: unclear message {exc}")
            except BaseException as exc:
                problems.append(f"{parameter}={bad!r}: {type(exc).__name__}: {exc}")
            else:
                problems.append(f"{parameter}={bad!r}: accepted")
    assert _tables(store) == before  # no table created, none dropped
    figure(
        pytestconfig,
        f"bad-table-names[{_label(store)}]: {tried} tried, {tried - len(problems)} refused "
        f"with ValueError, {len(problems)} problems",
    )
    assert problems == []


async def test_bad_session_ids(store: Store, pytestconfig: pytest.Config) -> None:
    """Non-str and non-Unicode session ids are refused and write nothing."""
    if not _ours(store):
        pytest.skip("a foreign session class checks (or not) its own constructor's arguments")
    tried, problems = 0, []
    for bad, expected in (
        (123, (TypeError, ValueError)),
        (None, (TypeError, ValueError)),
        (b"bytes-id", (TypeError, ValueError)),
        (["list"], (TypeError, ValueError)),
        ("lone \ud800 surrogate", (ValueError,)),
    ):
        tried += 1
        try:
            session = await store.open(bad)
            await session.add_items([OK_ITEM])
        except expected:
            pass
        except BaseException as exc:
            problems.append(f"{bad!r}: {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{bad!r}: accepted")
    figure(
        pytestconfig,
        f"bad-session-ids[{_label(store)}]: {tried} tried, {tried - len(problems)} refused, "
        f"{len(problems)} problems",
    )
    assert problems == []


async def test_empty_session_id_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="session"):
        session = await store.open("")
        await session.add_items([OK_ITEM])


async def test_huge_and_odd_session_ids_work_and_stay_apart(store: Store) -> None:
    """A 10k-character id and ids that differ only by invisible characters are distinct."""
    if not _ours(store):
        pytest.skip("what ids a foreign session class can store is its own limit")
    ids = [
        "x" * 10_000,
        "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(10_000)),
        "user-42",
        "user-42\u200f",  # RTL mark
        "user\u200d-42",  # zero-width joiner
        "\u202euser-42",  # RTL override
        "user-42 👩\u200d👩\u200d👧\u200d👦",
        "ｕｓｅｒ-42",  # fullwidth  # noqa: RUF001
        "user-42\n",
    ]
    accepted: list[int] = []
    for index, sid in enumerate(ids):
        try:
            session = await store.open(sid)
            await session.add_items([{"role": "user", "content": f"for {index}"}])
        except (ValueError, EncmemError) as exc:  # a clear refusal is acceptable
            assert "session" in str(exc).lower(), exc
            continue
        accepted.append(index)
    assert len(accepted) >= len(ids) - 2  # only the two 10k-character ids may be refused
    for index in accepted:
        session = await store.open(ids[index])
        items = await session.get_items()
        assert items == [{"role": "user", "content": f"for {index}"}], (index, items)


async def test_nul_in_session_id_round_trips_or_is_refused(store: Store) -> None:
    if not _ours(store):
        pytest.skip("what ids a foreign session class can store is its own limit")
    sid = "nul\x00id"
    try:
        session = await store.open(sid)
        await session.add_items([OK_ITEM])
    except (ValueError, EncmemError) as exc:
        assert "session" in str(exc).lower() or "NUL" in str(exc), exc
        assert await _count(store, sid) == 0
        return
    assert await (await store.open(sid)).get_items() == [OK_ITEM]
    assert await (await store.open("nul")).get_items() == []


ODD_TEXTS = [
    "\u200fright-to-left mark\u200f and \u202eoverride\u202c",
    "zero\u200bwidth\u200c non\u200djoiners\u2060",
    "👩\u200d👩\u200d👧\u200d👦 👨🏽\u200d💻 🏳️\u200d🌈 🇨🇭",
    "NUL \x00 inside and at the end\x00",
    "\ufeffBOM first, \ufffe and \uffff non-characters",
    "line\u2028separator\u2029paragraph\r\n\t\x0b\x0c\x1b[31m",
    "combining e\u0301 vs \u00e9, ﬁ ligature, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral 𐍈",  # noqa: RUF001
    "'; DROP TABLE agent_messages; -- %_ \\ \" ` ${x} {{y}}",
    "",
]


async def test_odd_unicode_round_trips_exactly(store: Store) -> None:
    session = await store.open("odd-unicode")
    items = [{"role": "user", "content": text, text or "empty": [text]} for text in ODD_TEXTS]
    items.append({"type": "function_call", "name": "t", "arguments": "\x00".join(ODD_TEXTS)})
    await session.add_items(items)
    reopened = await store.open("odd-unicode")
    assert await reopened.get_items() == items
    assert await reopened.get_items(3) == items[-3:]
    assert await reopened.pop_item() == items[-1]


async def test_a_5_mb_item_round_trips(store: Store, pytestconfig: pytest.Config) -> None:
    big = ("0123456789abcdef Zürich 東京 " * 200_000)[: 5 * 1024 * 1024]
    item = {"role": "user", "content": big, "n": 1}
    session = await store.open("big")
    await session.add_items([item, OK_ITEM])
    reopened = await store.open("big")
    assert await reopened.get_items() == [item, OK_ITEM]
    assert await reopened.get_items(2) == [item, OK_ITEM]
    raw = _inner(store).raw_messages("big") if _inner(store).has_raw else None
    stored = len(raw[0]) if raw else 0
    figure(
        pytestconfig,
        f"big-item[{_label(store)}]: {len(big.encode())} bytes of content round-tripped"
        + (f", stored as {stored} characters" if stored else ""),
    )


@pytest.mark.slow  # a hundred thousand levels of nesting, on every store
@pytest.mark.parametrize("depth", [100_000])
async def test_deeply_nested_item_is_refused_cleanly(store: Store, depth: int) -> None:
    """Hostile nesting must give InvalidItemError (not RecursionError) and write nothing."""
    session = await store.open("deep")
    with pytest.raises(InvalidItemError, match="item 1"):
        await session.add_items([OK_ITEM, {"content": _nested(depth)}])
    assert await _count(store, "deep") == 0


@pytest.mark.parametrize("depth", [100, 500, 900])
async def test_an_item_that_was_stored_can_be_read_back(store: Store, depth: int) -> None:
    """No poison items: whatever add_items accepted, get_items and pop_item return."""
    session = await store.open("nesting")
    item = {"content": _nested(depth)}
    try:
        await session.add_items([item])
    except InvalidItemError:
        assert await _count(store, "nesting") == 0
        return
    reopened = await store.open("nesting")
    assert await reopened.get_items() == [item]
    assert await reopened.pop_item() == item


BAD_KEYS: list[tuple[str, Any]] = [
    ("int", 12345),
    ("float", 3.14),
    ("list", [generate_key()]),
    ("tuple", (generate_key(),)),
    ("dict with int kid", {1: generate_key()}),
    ("dict with empty kid", {"": generate_key()}),
    ("dict with reserved kid", {"hkdf-v1": generate_key()}),
    ("empty dict", {}),
    ("empty str", ""),
    ("short str", "secret"),
    ("short bytes", b"0123456789"),
    ("password", "correct horse battery staple"),
    ("object", object()),
]


async def test_wrong_key_types_are_refused(store: Store, pytestconfig: pytest.Config) -> None:
    inner = _inner(store)
    sid = "keys"
    underlying = await inner.open(sid)
    tried, problems = 0, []
    for label, key in [*BAD_KEYS, ("None", None)]:
        tried += 1
        try:
            EncryptedSession(session_id=sid, underlying_session=underlying, encryption_key=key)
        except (InvalidKeyError, TypeError) as exc:
            if not any(word in str(exc) for word in ("key", "Keyring")):
                problems.append(f"{label}: unclear message {exc}")
        except BaseException as exc:
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{label}: accepted")
    assert await _count(store, sid) == 0
    figure(
        pytestconfig,
        f"bad-keys[{_label(store)}]: {tried} tried, {tried - len(problems)} refused with "
        f"InvalidKeyError/TypeError, {len(problems)} problems",
    )
    assert problems == []
