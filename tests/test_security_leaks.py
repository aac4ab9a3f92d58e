"""Leak scan and secrets: no plaintext reaches storage, no key material reaches anywhere.

* Canary strings written through every store of ``tests.stores.STORES``, encrypted, must not
  appear in the database file, its WAL / journal / shm, the stored rows, nor in any log record
  (DEBUG, root logger) captured during the run; neither as UTF-8 nor JSON-escaped.
* ``repr`` / ``str`` of keyrings and sessions, exception messages on bad keys and on
  decryption failures, and DEBUG logs of runs with wrong keys and skip mode never contain key
  material in any encoding (as given, raw bytes in hex, standard and urlsafe base64, and the
  derived per-session keys).

Each test prints a FIGURE line with what it scanned.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from encmem import (
    DecryptionError,
    EncryptedSession,
    InvalidKeyError,
    Keyring,
    generate_key,
)
from encmem._envelope import open_envelope
from encmem._keys import parse_key

from .figures import figure
from .stores import STORES, EncryptedStore, Store

RUN = uuid.uuid4().hex[:10]
NON_ASCII = ["Grüße", "東京都", "Привет", "🦄🔑", "עברית"]
CANARIES = [f"CANARY{n}x{RUN}" for n in range(8)]


def _forms(secret: str) -> set[bytes]:
    """A secret's spellings: UTF-8, UTF-16, and JSON-escaped (\\uXXXX, either case)."""
    escaped = json.dumps(secret, ensure_ascii=True)[1:-1]
    return {
        secret.encode("utf-8"),
        secret.encode("utf-16-le"),
        escaped.encode("ascii"),
        escaped.lower().encode("ascii"),
        secret.encode("unicode_escape"),
    }


def _needles() -> dict[str, set[bytes]]:
    return {text: _forms(text) for text in [*CANARIES, *NON_ASCII]}


def _items(n: int) -> list[dict[str, Any]]:
    """One of each kind of item, with canaries in every place that must be sealed."""
    c = CANARIES
    return [
        {"role": "user", "content": f"{c[0]} {NON_ASCII[0]} {NON_ASCII[1]} #{n}"},
        {
            "type": "function_call",
            "name": "lookup",
            "call_id": f"call_{c[1]}",
            "arguments": json.dumps({"q": c[2], "city": NON_ASCII[2]}, ensure_ascii=False),
        },
        {
            "type": "function_call_output",
            "call_id": f"call_{c[1]}",
            "output": f"{c[3]} {NON_ASCII[3]}",
        },
        {
            "role": "assistant",
            "type": "message",
            "content": [{"type": "output_text", "text": f"{c[4]} {NON_ASCII[4]}"}],
        },
        {"role": "user", "content": [{"type": "input_text", "text": c[5], c[6]: c[7]}]},
    ]


def _scan(blob: bytes, needles: dict[str, set[bytes]]) -> list[str]:
    return sorted({text for text, forms in needles.items() if any(f in blob for f in forms)})


def _file_blobs(store: Store) -> dict[str, bytes]:
    path = getattr(store, "path", None)
    if not isinstance(path, Path):
        return {}
    blobs = {}
    for suffix in ("", "-wal", "-journal", "-shm"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            blobs[candidate.name] = candidate.read_bytes()
    return blobs


async def _raw_blobs(inner: Store, session_ids: Iterable[str]) -> dict[str, bytes]:
    """Stored rows read past encmem, by whatever means the store offers."""
    blobs: dict[str, bytes] = {}
    for sid in session_ids:
        if inner.has_raw:
            blobs[f"raw_messages({sid})"] = "\n".join(inner.raw_messages(sid)).encode()
        raw_rows = getattr(inner, "raw_rows", None)
        if callable(raw_rows):
            blobs[f"raw_rows({sid})"] = "\n".join(await raw_rows(sid)).encode()
        # the wrapped session itself, unencrypted: what any reader of the store gets
        plain = await inner.open(sid)
        blobs[f"underlying get_items({sid})"] = json.dumps(
            await plain.get_items(), ensure_ascii=False
        ).encode()
    tables = getattr(inner, "tables", None)
    url = getattr(inner, "url", None)
    if isinstance(tables, dict) and isinstance(url, str) and url.startswith("postgresql"):
        from .pg import run_sync

        for table in tables.values():
            rows = run_sync(url, f"SELECT CAST(t.* AS text) FROM {table} AS t")
            blobs[f"pg table {table}"] = "\n".join(str(r[0]) for r in rows).encode()
    database = getattr(inner, "database", None)
    if isinstance(database, dict):
        blobs["in-memory database"] = repr(database).encode()
    return blobs


@pytest.mark.parametrize("kind", list(STORES))
async def test_leak_scan(
    kind: str,
    tmp_path: Path,
    keyring: Keyring,
    caplog: pytest.LogCaptureFixture,
    pytestconfig: pytest.Config,
) -> None:
    caplog.set_level(logging.DEBUG)
    inner = STORES[kind](tmp_path)
    store = EncryptedStore(inner, keyring)
    needles = _needles()
    sids = [f"leak-a-{RUN}", f"leak-b-{RUN}"]
    scanned: dict[str, int] = {}
    found: dict[str, list[str]] = {}

    def scan_all(blobs: dict[str, bytes], when: str) -> None:
        for name, blob in blobs.items():
            scanned[f"{when}:{name}"] = len(blob)
            hits = _scan(blob, needles)
            if hits:
                found[f"{when}:{name}"] = hits

    try:
        for sid in sids:
            session = await store.open(sid)
            for turn in range(3):
                await session.add_items(_items(turn))
            assert len(await session.get_items()) == 15
            assert (await session.pop_item())["content"][0]["text"] == CANARIES[5]
            assert len(await session.get_items(4)) == 4
        await (await store.open(sids[1])).clear_session()
        scan_all(_file_blobs(inner), "open")
        scan_all(await _raw_blobs(inner, sids), "open")
    finally:
        await store.aclose()
    scan_all(_file_blobs(inner), "closed")
    log_text = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    scan_all({"log records": log_text.encode()}, "log")
    key_hits = [form for form in _key_forms(keyring) if form in log_text]
    figure(
        pytestconfig,
        f"leak-scan[{kind}]: {len(needles)} canaries x {len(scanned)} places "
        f"({sum(scanned.values())} bytes, {len(caplog.records)} log records) scanned, "
        f"{len(found)} places with plaintext, {len(key_hits)} key forms in logs",
    )
    assert found == {}
    assert key_hits == []
    assert sum(scanned.values()) > 0


# -- key material ------------------------------------------------------------------------------


def _key_forms(keyring: Keyring, *keys: str | bytes, session_ids: Iterable[str] = ()) -> set[str]:
    """Every spelling of every key held by ``keyring`` or given, and derived session keys."""
    forms: set[str] = set()
    materials: list[bytes] = list(keyring._material.values())  # the secret itself
    for key in keys:
        if isinstance(key, str):
            forms.update({key, key.rstrip("=")})
        try:
            materials.append(parse_key(key)[0])
        except InvalidKeyError:
            if isinstance(key, bytes):
                materials.append(key)
    for sid in session_ids:
        for kid in keyring.kids:
            raw = _session_key_bytes(keyring, kid, sid)
            materials += [raw, raw[:16], raw[16:]]  # the key, its signing and encryption halves
    for raw in materials:
        forms.update(_byte_forms(raw))
    return {form for form in forms if len(form) >= 8}


def _session_key_bytes(keyring: Keyring, kid: str, session_id: str) -> bytes:
    """A session's Fernet key, derived here from the documented HKDF inputs and checked
    against the keyring's own Fernet, so the test needs no private part of ``cryptography``."""
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    kid_bytes = kid.encode("ascii")
    info = (
        b"encmem.session-key.v2"
        + len(kid_bytes).to_bytes(2, "big")
        + kid_bytes
        + session_id.encode("utf-8")
    )
    material = keyring._material[kid]
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)
    theirs = keyring.session_fernet(kid, session_id)
    assert theirs is not None
    assert Fernet(base64.urlsafe_b64encode(raw)).decrypt(theirs.encrypt(b"probe")) == b"probe"
    return raw


def _byte_forms(raw: bytes) -> set[str]:
    forms = {
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        repr(raw)[2:-1],
    }
    # a prefix long enough to matter (12 base64 characters = 9 bytes) of each spelling
    forms |= {form[:12] for form in list(forms) if len(form) >= 12}
    return forms


def _leaks(text: str, forms: set[str]) -> list[str]:
    return sorted(form for form in forms if form in text)


def _keyrings() -> list[tuple[str, Keyring, tuple[str | bytes, ...]]]:
    k1, k2, k3 = generate_key(), generate_key(), generate_key()
    raw = base64.urlsafe_b64decode(generate_key())
    sdk_password = "an SDK-era password"
    rings = [
        ("bare Fernet key", Keyring(k1), (k1,)),
        ("mapping", Keyring({"2026-11": k1, "2026-05": k2}), (k1, k2)),
        ("primary chosen", Keyring({"a": k1, "b": k2}, primary="b"), (k1, k2)),
        ("raw bytes", Keyring(raw), (raw,)),
        ("key as ASCII bytes", Keyring(k3.encode()), (k3,)),
        ("sdk keys", Keyring(k1, sdk_keys=[k2, sdk_password]), (k1, k2, sdk_password)),
        ("with_primary", Keyring(k1).with_primary(k3, kid="new"), (k1, k3)),
        ("parsed", Keyring.parse(f"a:{k1}, b:{k2}"), (k1, k2)),
    ]
    passphrase = "correct horse battery staple"
    ring = Keyring.from_passphrase(passphrase, salt="a-deployment-salt-16b", log2_n=14)
    rings.append(("passphrase", ring, (passphrase,)))
    return rings


def test_keyring_repr_and_str_hold_no_key_material(pytestconfig: pytest.Config) -> None:
    checked = 0
    leaks: dict[str, list[str]] = {}
    for label, ring, keys in _keyrings():
        forms = _key_forms(ring, *keys)
        for text in (repr(ring), str(ring), f"{ring}", f"{ring!r}", repr([ring])):
            checked += 1
            if hits := _leaks(text, forms):
                leaks[label] = hits
    figure(pytestconfig, f"secrets-keyring-repr: {checked} renderings checked, {len(leaks)} leaks")
    assert leaks == {}


@pytest.mark.parametrize("kind", list(STORES))
async def test_session_repr_and_str_hold_no_key_material(
    kind: str, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    key = generate_key()
    ring = Keyring({"main": key})
    inner = STORES[kind](tmp_path)
    store = EncryptedStore(inner, ring)
    sid = "repr-session"
    try:
        session: EncryptedSession = await store.open(sid)
        await session.add_items([{"role": "user", "content": CANARIES[0]}])
        underlying = session.underlying_session
        forms = _key_forms(ring, key, session_ids=[sid])
        texts = [repr(session), str(session), repr(underlying), str(underlying), repr(ring)]
        leaks = [hit for text in texts for hit in _leaks(text, forms)]
        content = [text for text in texts if CANARIES[0] in text]
        figure(
            pytestconfig,
            f"secrets-session-repr[{kind}]: {len(texts)} renderings x {len(forms)} key forms, "
            f"{len(leaks)} key leaks, {len(content)} content leaks",
        )
        assert leaks == [] and content == []
    finally:
        await store.aclose()


def _bad_keys() -> list[tuple[str, object]]:
    real = base64.urlsafe_b64decode(generate_key())
    return [
        ("31 random bytes, urlsafe b64", base64.urlsafe_b64encode(real[:31]).decode()),
        ("16 random bytes, hex", real[:16].hex()),
        ("16 random bytes", real[:16]),
        ("31 raw bytes", bytes(range(200, 231))),
        ("low-variety bytes", b"\x01\x02" * 20),
        ("password", "Tr0ub4dor&3-horse-battery"),
        ("base64 with a bad character", generate_key()[:-2] + "!="),
        ("key with spaces inside", generate_key()[:20] + " " + generate_key()[20:]),
        ("int", 123456789012345678901234567890),
        ("list of keys", [generate_key()]),
    ]


def _misused_keys() -> list[tuple[str, Any]]:
    """A real key put where a key id (or a primary key id) belongs: a plausible mix-up."""
    k1, k2 = generate_key(), generate_key()
    return [
        ("key as key id", lambda: Keyring({k1: k2}), k1),
        ("key as primary", lambda: Keyring({"a": k2}, primary=k1), k1),
        ("key as with_primary kid", lambda: Keyring(k2).with_primary(generate_key(), kid=k1), k1),
        ("key as parsed kid", lambda: Keyring.parse(f"{k1}:{k2}"), k1),
    ]


def test_bad_key_errors_hold_no_key_material(pytestconfig: pytest.Config) -> None:
    checked = 0
    leaks: dict[str, list[str]] = {}
    for label, value in _bad_keys():
        forms = set()
        if isinstance(value, (str, bytes)):
            forms = {f for f in _byte_forms(value if isinstance(value, bytes) else value.encode())}
        if isinstance(value, str):
            forms |= {value, value[:12], value[-12:]}
        elif isinstance(value, list):
            forms |= {value[0], value[0][:12]}
        elif isinstance(value, int):
            forms |= {str(value)}
        for attempt in (
            lambda v=value: Keyring(v),
            lambda v=value: Keyring({"kid": v}),
            lambda v=value: EncryptedSession("s", _Dummy("s"), encryption_key=v),
            lambda v=value: Keyring(generate_key()).with_primary(v),
        ):
            checked += 1
            with pytest.raises((InvalidKeyError, TypeError)) as info:
                attempt()
            text = f"{info.value} {info.value!r} {info.value.args}"
            if hits := _leaks(text, forms):
                leaks[label] = hits
    figure(
        pytestconfig,
        f"secrets-bad-key-errors: {checked} refused keys checked, {len(leaks)} leaks",
    )
    assert leaks == {}


@pytest.mark.parametrize("label", [label for label, _, _ in _misused_keys()])
def test_a_key_given_as_key_id_is_not_echoed(label: str) -> None:
    """SECURITY.md: key material never appears in exception messages, even after a mix-up."""
    [(_, attempt, key)] = [case for case in _misused_keys() if case[0] == label]
    try:
        ring = attempt()
    except InvalidKeyError as exc:
        text = f"{exc} {exc!r}"
        assert _leaks(text, _byte_forms(base64.urlsafe_b64decode(key)) | {key, key[:12]}) == []
    else:  # accepted: then the key must not have become a public key id
        assert key not in repr(ring) and all(key not in kid for kid in ring.kids)


class _Dummy:
    """The smallest Session: enough to construct an EncryptedSession."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.items: list[Any] = []

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return list(self.items if limit is None else self.items[-limit:] if limit else [])

    async def add_items(self, items: list[Any]) -> None:
        self.items.extend(items)

    async def pop_item(self) -> Any:
        return self.items.pop() if self.items else None

    async def clear_session(self) -> None:
        self.items.clear()


async def test_decryption_failures_and_logs_hold_no_key_material(
    caplog: pytest.LogCaptureFixture, pytestconfig: pytest.Config
) -> None:
    """Wrong keys, wrong kids, tampered items and skip mode: messages and DEBUG logs."""
    caplog.set_level(logging.DEBUG)
    writer_key, other_key, same_kid_key = generate_key(), generate_key(), generate_key()
    writer_ring = Keyring({"prod": writer_key})
    store = _Dummy("dec")
    writer = EncryptedSession(underlying_session=store, encryption_key=writer_ring)
    await writer.add_items([{"role": "user", "content": f"{CANARIES[0]} {i}"} for i in range(3)])
    tampered = dict(store.items[1])
    tampered["payload"] = tampered["payload"][:40] + "A" + tampered["payload"][41:]
    readers = {
        "unknown kid": Keyring({"other": other_key}),
        "same kid, wrong key": Keyring({"prod": same_kid_key}),
        "bare wrong key": Keyring(other_key),
        "right key": writer_ring,
    }
    forms = set()
    for ring in [writer_ring, *readers.values()]:
        forms |= _key_forms(ring, session_ids=["dec"])
    forms |= _key_forms(writer_ring, writer_key, other_key, same_kid_key)
    messages: list[str] = []
    for label, ring in readers.items():
        items = list(store.items)
        if label == "right key":
            items[1] = tampered
        for mode in ("raise", "skip"):
            store.items = list(items)
            reader = EncryptedSession(
                underlying_session=store, encryption_key=ring, on_invalid=mode
            )
            for call in (reader.get_items, lambda r=reader: r.get_items(1), reader.pop_item):
                try:
                    await call()
                except DecryptionError as exc:
                    messages.append(f"{exc} {exc!r} {exc.args} {exc.__cause__!r}")
        for obj in items:
            try:
                open_envelope(obj, ring, "dec")
            except DecryptionError as exc:
                messages.append(f"{exc} {exc!r}")
    log_text = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    leaks = sorted({hit for text in [*messages, log_text] for hit in _leaks(text, forms)})
    content = [text for text in [*messages, log_text] if CANARIES[0] in text]
    figure(
        pytestconfig,
        f"secrets-decryption: {len(messages)} error messages and {len(caplog.records)} log "
        f"records x {len(forms)} key forms, {len(leaks)} key leaks, {len(content)} content leaks",
    )
    assert len(messages) >= 10 and any("skipped" in r.getMessage() for r in caplog.records)
    assert leaks == [] and content == []
