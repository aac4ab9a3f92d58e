"""Tamper matrix: every edit of a sealed item's token or envelope fields is rejected.

The full matrix runs against :func:`encmem._envelope.open_envelope` directly (fast); a sample
of it runs end to end through every SQLite-file store of ``tests.stores.STORES``. Each test
prints a ``FIGURE`` line with the number of variants tried and rejected, and the number of
wrong plaintexts returned (always 0).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from encmem import (
    DecryptionError,
    EncryptedSession,
    Keyring,
    PlaintextItemError,
    TamperedItemError,
    UnknownKeyIdError,
    generate_key,
)
from encmem._envelope import CLEAR_FIELDS, clear_fields, open_envelope, seal
from encmem._items import encode_item

from .figures import figure
from .stores import STORES, EncryptedStore

SESSION = "tamper-session"
B64 = string.ascii_letters + string.digits + "-_"
#: one item carrying every clear field, and ordinary ones carrying few of them
ITEMS: list[dict[str, Any]] = [
    {
        "type": "mcp_call",
        "role": "assistant",
        "name": "lookup",
        "namespace": "tools.v1",
        "server_label": "crm",
        "arguments": json.dumps({"q": "secret question", "n": 3}),
        "id": "mcp_1",
    },
    {"role": "user", "content": "hello, tamper me"},
    {"type": "function_call_output", "call_id": "c1", "output": "42 Zürich 東京"},
]


def _keyring() -> Keyring:
    return Keyring({"main": generate_key(), "other": generate_key()}, primary="main")


def _sealed(keyring: Keyring, item: dict[str, Any]) -> dict[str, Any]:
    fernet = keyring.session_key(keyring.primary_kid, SESSION)
    assert fernet is not None
    return seal(fernet, keyring.primary_kid, item, encode_item(item), 1_700_000_000)


class Tally:
    """Counts variants and classifies each outcome of opening one."""

    def __init__(self, keyring: Keyring, original: dict[str, Any]) -> None:
        self.keyring = keyring
        self.original = original
        self.tried = 0
        self.rejected = 0
        self.aliases = 0  # equal to the original under JSON/byte semantics: must open intact
        self.wrong: list[str] = []  # accepted with a wrong item, or a foreign exception

    def check(self, variant: object, label: str, *, alias: bool = False) -> None:
        self.tried += 1
        try:
            opened = open_envelope(variant, self.keyring, SESSION)
        except DecryptionError:
            self.rejected += 1
            return
        except Exception as exc:  # any other exception is a finding
            self.wrong.append(f"{label}: raised {type(exc).__name__}: {exc}")
            return
        if alias and opened.item == self.original:
            self.aliases += 1
            return
        self.wrong.append(f"{label}: accepted, returned {opened.item!r}")


def _token_char_variants(token: str) -> Iterator[tuple[str, str, bool]]:
    """Every position x every other base64 character (plus '='), with an alias flag.

    A substitution in the last character before padding may only touch bits the decoder
    ignores; it then decodes to the very same bytes: an alias, not an edit of the token.
    """
    original_bytes = base64.urlsafe_b64decode(token)
    for index, current in enumerate(token):
        for replacement in B64 + "=":
            if replacement == current:
                continue
            variant = token[:index] + replacement + token[index + 1 :]
            try:
                same = base64.urlsafe_b64decode(variant) == original_bytes
            except (ValueError, TypeError):
                same = False
            yield variant, f"char {index} {current!r}->{replacement!r}", same


def _token_bit_variants(token: str) -> Iterator[tuple[str, str]]:
    raw = bytearray(base64.urlsafe_b64decode(token))
    for index in range(len(raw)):
        for bit in range(8):
            raw[index] ^= 1 << bit
            yield base64.urlsafe_b64encode(bytes(raw)).decode("ascii"), f"byte {index} bit {bit}"
            raw[index] ^= 1 << bit


def _token_length_variants(token: str) -> Iterator[tuple[str, str, bool]]:
    """Truncations, extensions and re-spellings; an alias flag when the bytes are unchanged.

    The non-validating base64 decoder Fernet uses stops at padding and skips characters
    outside the alphabet, so some spellings decode to the very same bytes: aliases.
    """
    original_bytes = base64.urlsafe_b64decode(token)
    for variant, label in _token_length_spellings(token):
        try:
            same = base64.urlsafe_b64decode(variant) == original_bytes
        except (ValueError, TypeError):
            same = False
        yield variant, label, same


def _token_length_spellings(token: str) -> Iterator[tuple[str, str]]:
    for cut in range(len(token)):
        yield token[:cut], f"truncated to {cut}"
    raw = base64.urlsafe_b64decode(token)
    for extra in (b"\x00", b"\xff" * 16, raw[-32:]):
        yield base64.urlsafe_b64encode(raw + extra).decode("ascii"), f"extended by {len(extra)}"
    yield token + token, "doubled"
    yield " " + token, "leading space"
    yield token + "\n", "trailing newline"
    yield token.replace("-", "+").replace("_", "/"), "standard base64 alphabet"


_OTHER_VALUES: list[Any] = [
    "assistant",
    "user",
    "x",
    "",
    "LOOKUP",
    0,
    1,
    None,
    True,
    [],
    {},
    ["user"],
]


def _field_variants(envelope: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, bool]]:
    """Edits, additions and removals of every clear field and of kid / v / __enc__."""
    for name in CLEAR_FIELDS:
        if name in envelope:
            for value in _OTHER_VALUES:
                if value == envelope[name] and type(value) is type(envelope[name]):
                    continue
                yield {**envelope, name: value}, f"{name}={value!r}", False
            yield {k: v for k, v in envelope.items() if k != name}, f"removed {name}", False
            yield {**envelope, name: envelope[name] + " "}, f"{name} + space", False
            yield {**envelope, name: envelope[name].upper()}, f"{name} upper-cased", False
        else:
            for value in ("user", "assistant", "lookup", "", None):
                yield {**envelope, name: value}, f"added {name}={value!r}", False
    for name, values in {
        "kid": ["other", "nobody", "", "hkdf-v1", "MAIN", "main ", None, 1, ["main"]],
        "v": [1, 3, 0, -2, "2", None, [2], 2.5, True, 2.0],
        "__enc__": [0, 2, "1", None, True, 1.0, [1]],
        "payload": [None, 1, "", [], {}, b"x".decode()],
    }.items():
        for value in values:
            # equal under JSON number semantics (2.0 == 2, true == 1 in Python): an alias
            alias = value == envelope[name] and not isinstance(value, str)
            yield {**envelope, name: value}, f"{name}={value!r}", alias
        yield {k: v for k, v in envelope.items() if k != name}, f"removed {name}", False
    for extra in ("content", "extra", "__enc2__", "kid2", "sealed_at"):
        yield {**envelope, extra: "x"}, f"added {extra}", False


def _cross_variants(
    keyring: Keyring, envelope: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], str]]:
    """Tokens from elsewhere: another session, another key id, another item's token.

    (An item's token moved whole to another position of the same session, with its clear
    fields, is a reordering: SECURITY.md lists it as not protected, so it is not a variant.)
    """
    current = next(
        item
        for item in ITEMS
        if clear_fields(item) == {k: v for k, v in envelope.items() if k in CLEAR_FIELDS}
    )
    item = ITEMS[(ITEMS.index(current) + 1) % len(ITEMS)]  # other clear fields
    text = encode_item(item)
    for session in ("other-session", SESSION + " ", SESSION.upper(), ""):
        fernet = keyring.session_key("main", session)
        assert fernet is not None
        moved = seal(fernet, "main", ITEMS[0], encode_item(ITEMS[0]), 1_700_000_000)
        yield moved, f"sealed for session {session!r}"
    other = keyring.session_key("other", SESSION)
    assert other is not None
    relabelled = seal(other, "other", ITEMS[0], encode_item(ITEMS[0]), 1_700_000_000)
    yield {**relabelled, "kid": "main"}, "sealed under 'other', labelled 'main'"
    foreign = Keyring({"main": generate_key()})
    foreign_fernet = foreign.session_key("main", SESSION)
    assert foreign_fernet is not None
    yield seal(foreign_fernet, "main", ITEMS[0], encode_item(ITEMS[0]), 1), "other key, same kid"
    mine = keyring.session_key("main", SESSION)
    assert mine is not None
    swapped = seal(mine, "main", item, text, 1_700_000_000)
    yield {**envelope, "payload": swapped["payload"]}, "another item's token, these fields"


def test_tamper_matrix_on_the_envelope_opener(pytestconfig: pytest.Config) -> None:
    keyring = _keyring()
    tried = rejected = aliases = 0
    wrong: list[str] = []
    for item in ITEMS:
        envelope = _sealed(keyring, item)
        assert open_envelope(envelope, keyring, SESSION).item == item  # the baseline opens
        tally = Tally(keyring, item)
        token = envelope["payload"]
        for variant, label, alias in _token_char_variants(token):
            tally.check({**envelope, "payload": variant}, label, alias=alias)
        for variant, label in _token_bit_variants(token):
            tally.check({**envelope, "payload": variant}, label)
        for variant, label, alias in _token_length_variants(token):
            tally.check({**envelope, "payload": variant}, label, alias=alias)
        for obj, label, alias in _field_variants(envelope):
            tally.check(obj, label, alias=alias)
        for obj, label in _cross_variants(keyring, envelope):
            tally.check(obj, label)
        tried, rejected, aliases = (
            tried + tally.tried,
            rejected + tally.rejected,
            (aliases + tally.aliases),
        )
        wrong += tally.wrong
    figure(
        pytestconfig,
        f"tamper-matrix: {tried} variants tried, {rejected} rejected, "
        f"{aliases} encoding aliases opened to the authentic item, "
        f"{len(wrong)} wrong plaintexts",
    )
    assert wrong == [], wrong[:20]
    assert tried == rejected + aliases
    assert tried > 10_000


def test_every_variant_is_rejected_with_the_right_error_class() -> None:
    """Spot checks that the class of the error says what happened."""
    keyring = _keyring()
    envelope = _sealed(keyring, ITEMS[0])
    cases: list[tuple[object, type[DecryptionError]]] = [
        ({**envelope, "kid": "nobody"}, UnknownKeyIdError),
        ({**envelope, "kid": "other"}, TamperedItemError),
        ({**envelope, "role": "user"}, TamperedItemError),
        ({**envelope, "payload": envelope["payload"][:-4]}, TamperedItemError),
        ({k: v for k, v in envelope.items() if k != "__enc__"}, TamperedItemError),
        ({**envelope, "__enc__": 2}, TamperedItemError),
        (ITEMS[0], PlaintextItemError),
    ]
    for obj, expected in cases:
        with pytest.raises(expected):
            open_envelope(obj, keyring, SESSION)


# -- end to end through the stores -------------------------------------------------------------


def _sqlite_file_stores() -> list[str]:
    """The stores of STORES that keep agent_messages in a SQLite file we can edit."""
    return [name for name, factory in STORES.items() if "path" in _attributes(factory)]


def _attributes(factory: Any) -> set[str]:
    try:
        probe = factory(Path("/nonexistent-encmem-probe"))
    except (Exception, pytest.skip.Exception, pytest.fail.Exception):
        return set()  # a store that needs a server is not a file store
    path = getattr(probe, "path", None)
    return {"path"} if isinstance(path, Path) else set()


def _rows(path: Path, session_id: str) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT id, message_data FROM agent_messages WHERE session_id = ? ORDER BY id",
            (session_id,),
        ).fetchall()


def _rewrite(path: Path, row_id: int, text: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE agent_messages SET message_data = ? WHERE id = ?", (text, row_id))


def _sample(items: list[Any], count: int) -> list[Any]:
    step = max(1, len(items) // count)
    return items[::step][:count]


@pytest.mark.parametrize("kind", _sqlite_file_stores())
async def test_tamper_sample_end_to_end(
    kind: str, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    """A sample of the matrix written into the database file; get_items(), get_items(1) and
    pop_item() must each raise a DecryptionError and leave the tampered row in storage."""
    keyring = _keyring()
    inner = STORES[kind](tmp_path)
    store = EncryptedStore(inner, keyring)
    path: Path = inner.path  # type: ignore[attr-defined]
    try:
        writer = await store.open(SESSION)
        ordered = [*ITEMS[1:], ITEMS[0]]  # the item with every clear field is the newest
        await writer.add_items(ordered)
        stored = _rows(path, SESSION)
        assert len(stored) == len(ITEMS)
        row_id, text = stored[-1]
        envelope = json.loads(text)
        token = envelope["payload"]
        variants: list[tuple[dict[str, Any], str]] = []
        variants += [
            ({**envelope, "payload": v}, label)
            for v, label, alias in _sample(list(_token_char_variants(token)), 30)
            if not alias
        ]
        variants += [
            ({**envelope, "payload": v}, label)
            for v, label in _sample(list(_token_bit_variants(token)), 20)
        ]
        variants += _sample(
            [(obj, label) for obj, label, alias in _field_variants(envelope) if not alias], 40
        )
        variants += list(_cross_variants(keyring, envelope))
        tried = rejected = 0
        wrong: list[str] = []
        lost: list[str] = []
        for obj, label in variants:
            _rewrite(path, row_id, json.dumps(obj))
            session: EncryptedSession = await store.open(SESSION)
            for name in ("get_items()", "get_items(1)", "pop_item()"):
                tried += 1
                try:
                    if name == "pop_item()":
                        result: Any = await session.pop_item()
                    else:
                        result = await session.get_items(None if name == "get_items()" else 1)
                except DecryptionError:
                    rejected += 1
                    continue
                except Exception as exc:  # anything else is a finding
                    wrong.append(f"{label}: {name} raised {type(exc).__name__}: {exc}")
                    continue
                wrong.append(f"{label}: {name} read {result!r}")
            # The tampered row is never deleted (a generic pop may take it off and put it
            # back), and the other rows are untouched.
            after = [json.loads(t) for _, t in _rows(path, SESSION)]
            if after != [json.loads(t) for _, t in stored[:-1]] + [obj]:
                lost.append(f"{label}: rows after the reads: {len(after)}")
                break  # the store's own structure rows went with it: stop the sample here
            row_id = _rows(path, SESSION)[-1][0]
        figure(
            pytestconfig,
            f"tamper-e2e[{kind}]: {tried} reads of {len(variants)} stored variants, "
            f"{rejected} rejected, {len(wrong)} wrong plaintexts or foreign errors, "
            f"{len(lost)} tampered rows lost",
        )
        assert wrong == [], wrong[:10]
        assert lost == [], lost[:10]
        assert tried == rejected
        _rewrite(path, row_id, text)
        reader_session = await store.open(SESSION)
        assert await reader_session.get_items() == ordered  # the restored row reads again
    finally:
        await store.aclose()
