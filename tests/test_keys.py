"""Keys: what is accepted, what is refused (and how), derivation, keyrings."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.fernet import InvalidToken
from hypothesis import given, settings
from hypothesis import strategies as st

from encmem import InvalidKeyError, Keyring, generate_key
from encmem._envelope import open_envelope, seal
from encmem._keys import fingerprint, parse_key

from .budget import examples
from .conftest import TEST_KEY
from .strategies import json_objects


def test_generated_keys_are_always_accepted() -> None:
    kids = {Keyring(generate_key()).primary_kid for _ in range(3000)}
    assert len(kids) == 3000


def test_random_secrets_in_every_accepted_form() -> None:
    for _ in range(500):
        raw = os.urandom(32)
        assert parse_key(raw)[0] == raw
        assert parse_key(base64.urlsafe_b64encode(raw).decode())[0] == raw
        assert parse_key(base64.urlsafe_b64encode(raw))[0] == raw


def test_other_spellings_of_a_random_key_are_refused() -> None:
    raw = base64.urlsafe_b64decode(TEST_KEY)
    for spelling in (
        raw.hex(),
        base64.b64encode(b"\xfb\xff" + raw[2:]).decode(),
        TEST_KEY.rstrip("="),
        base64.urlsafe_b64encode(raw + os.urandom(16)).decode(),
    ):
        with pytest.raises(InvalidKeyError, match="encmem keygen"):
            parse_key(spelling)


@pytest.mark.parametrize(
    "weak",
    [
        "",
        "secret",
        "your-secret-key",
        "correct horse battery staple correct horse battery",
        "Tr0ub4dor&3",
        "0" * 64,
        "abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd",
        "thisisaverylongbutstillhumanmadepasswordstring",
        b"short bytes",
        b"\x00" * 32,
        "A" * 44,
        "A" * 43 + "=",
        "0123456789abcdef" * 4,
        bytes(range(32)),
        bytes(range(16)) * 2,
    ],
)
def test_weak_keys_are_refused_and_the_error_names_the_fix(weak: str | bytes) -> None:
    with pytest.raises(InvalidKeyError) as info:
        Keyring(weak)
    message = str(info.value)
    assert "Keyring.from_passphrase" in message and "encmem keygen" in message
    if weak and len(weak) > 3:
        shown = weak if isinstance(weak, str) else weak.decode("latin-1")
        assert shown not in message


def test_non_key_types_are_refused() -> None:
    with pytest.raises(InvalidKeyError, match="str or bytes"):
        Keyring({"a": 12345})  # type: ignore[dict-item]


def test_bare_key_id_is_a_stable_fingerprint() -> None:
    assert Keyring(TEST_KEY).primary_kid == Keyring(TEST_KEY).primary_kid
    assert Keyring(TEST_KEY).primary_kid != Keyring(generate_key()).primary_kid
    assert Keyring(TEST_KEY).primary_kid == fingerprint(parse_key(TEST_KEY)[0])
    assert TEST_KEY[:8] not in Keyring(TEST_KEY).primary_kid


def test_keyring_primary_and_order() -> None:
    new, old = generate_key(), generate_key()
    ring = Keyring({"2026-11": new, "2026-05": old})
    assert ring.primary_kid == "2026-11" and ring.kids == ("2026-11", "2026-05")
    ring = Keyring({"2026-11": new, "2026-05": old}, primary="2026-05")
    assert ring.kids == ("2026-05", "2026-11")
    with pytest.raises(InvalidKeyError, match="not one of the"):
        Keyring({"a": new}, primary="b")
    for bad_kid in ("", "has space", "x" * 65, "hkdf-v1", "colon:kid"):
        with pytest.raises(InvalidKeyError):
            Keyring({bad_kid: new})


def test_with_primary_keeps_old_keys_for_reading() -> None:
    old = Keyring({"old": TEST_KEY})
    new_key = generate_key()
    ring = old.with_primary(new_key, kid="new")
    assert ring.kids == ("new", "old")
    assert ring.session_fernet("old", "s") is not None


def test_repr_names_kids_only() -> None:
    key = generate_key()
    ring = Keyring({"prod": key})
    assert repr(ring) == "Keyring(kids=['prod'], primary='prod')"
    assert key not in str(ring)


def test_session_keys_differ_by_session_and_kid() -> None:
    ring = Keyring({"a": TEST_KEY, "b": generate_key()})
    token = ring.session_fernet("a", "s1").encrypt(b"x")  # type: ignore[union-attr]
    assert ring.session_fernet("a", "s1").decrypt(token) == b"x"  # type: ignore[union-attr]
    for kid, session in (("a", "s2"), ("b", "s1")):
        with pytest.raises(InvalidToken):
            ring.session_fernet(kid, session).decrypt(token)  # type: ignore[union-attr]
    assert ring.session_fernet("a", "s1") is ring.session_fernet("a", "s1")
    assert ring.session_fernet("zzz", "s1") is None


def test_passphrase_keyring_round_trips_and_names_its_parameters() -> None:
    ring = Keyring.from_passphrase(
        "a long passphrase of mine", salt=b"deployment-salt-0001", log2_n=14
    )
    again = Keyring.from_passphrase(
        "a long passphrase of mine", salt=b"deployment-salt-0001", log2_n=14
    )
    other = Keyring.from_passphrase(
        "a long passphrase of mine", salt=b"deployment-salt-0002", log2_n=14
    )
    assert ring.primary_kid == again.primary_kid != other.primary_kid
    assert ring.primary_kid.startswith("scrypt.n14.r8.p1.")
    item = {"role": "user", "content": "hi"}
    sealed = seal(
        ring.session_key(ring.primary_kid, "s"),
        ring.primary_kid,
        item,
        '{"role":"user","content":"hi"}',
        100,
    )  # type: ignore[arg-type]
    assert open_envelope(sealed, again, "s").item == item
    with pytest.raises(InvalidKeyError, match="salt"):
        Keyring.from_passphrase("a long passphrase", salt="short")


def test_from_env_reads_pairs_primary_first(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = generate_key(), generate_key()
    monkeypatch.setenv("ENCMEM_KEYS", f"new:{a}, old:{b}")
    ring = Keyring.from_env()
    assert ring.kids == ("new", "old")
    monkeypatch.setenv("ENCMEM_KEYS", a)
    assert Keyring.from_env().primary_kid == Keyring(a).primary_kid
    monkeypatch.setenv("ENCMEM_KEYS", f"new:{a},broken")
    with pytest.raises(InvalidKeyError, match="kid:key"):
        Keyring.from_env()
    monkeypatch.delenv("ENCMEM_KEYS")
    with pytest.raises(InvalidKeyError, match="ENCMEM_KEYS is not set"):
        Keyring.from_env()


@settings(max_examples=examples(200), deadline=None)
@given(item=json_objects, sealed_at=st.integers(min_value=0, max_value=2**40))
def test_seal_then_open_round_trips(item: dict[str, object], sealed_at: int) -> None:
    from encmem._items import encode_item

    ring = Keyring({"k": TEST_KEY})
    envelope = seal(ring.session_key("k", "s"), "k", item, encode_item(item), sealed_at)  # type: ignore[arg-type]
    opened = open_envelope(envelope, ring, "s", clock=lambda: float(sealed_at))
    assert opened.item == item and opened.sealed_at == sealed_at and opened.kid == "k"
