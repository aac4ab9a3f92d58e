"""encmem's Fernet opener accepts exactly the authentic tokens Fernet itself accepts."""

from __future__ import annotations

import base64
import os

from cryptography.fernet import Fernet, InvalidToken
from hypothesis import given, settings
from hypothesis import strategies as st

from encmem._token import FernetKey, canonical

from .budget import examples

RAW = os.urandom(32)
KEY = FernetKey(RAW)
FERNET = Fernet(base64.urlsafe_b64encode(RAW))
OTHER = FernetKey(os.urandom(32))


def fernet_opens(token: str) -> bytes | None:
    try:
        return FERNET.decrypt(token)
    except (InvalidToken, ValueError, TypeError):
        return None


@settings(max_examples=examples(300), deadline=None)
@given(plaintext=st.binary(max_size=600), sealed_at=st.integers(min_value=0, max_value=2**40))
def test_every_token_fernet_makes_opens_to_the_same_bytes_and_time(
    plaintext: bytes, sealed_at: int
) -> None:
    token = FERNET.encrypt_at_time(plaintext, sealed_at).decode()
    assert KEY.open(token) == (plaintext, sealed_at)
    assert OTHER.open(token) is None


@settings(max_examples=examples(400), deadline=None)
@given(
    plaintext=st.binary(max_size=200),
    position=st.integers(min_value=0),
    replacement=st.sampled_from("AQgw-_=0aZ+/ ."),
)
def test_an_edited_token_opens_only_if_fernet_would_open_it_identically(
    plaintext: bytes, position: int, replacement: str
) -> None:
    token = FERNET.encrypt(plaintext).decode()
    index = position % len(token)
    edited = token[:index] + replacement + token[index + 1 :]
    ours = KEY.open(edited)
    if ours is not None:  # ours accepts a subset (canonical base64 only) ...
        assert fernet_opens(edited) == ours[0] == plaintext  # ... and agrees on every one
    if edited != token and fernet_opens(edited) is None:
        assert ours is None


@settings(max_examples=examples(300), deadline=None)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_never_open(data: bytes) -> None:
    token = base64.urlsafe_b64encode(data).decode()
    assert KEY.open(token) is None
    assert KEY.open(token[:-1]) is None


def test_bit_flips_anywhere_are_rejected() -> None:
    raw = base64.urlsafe_b64decode(FERNET.encrypt(b'{"role":"user","content":"hi"}'))
    rejected = 0
    for byte in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[byte] ^= 1 << bit
            assert KEY.open(base64.urlsafe_b64encode(bytes(flipped)).decode()) is None
            rejected += 1
    assert rejected == len(raw) * 8


def test_one_key_opens_correctly_from_many_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    tokens = [(FERNET.encrypt(os.urandom(n)).decode(), n) for n in range(0, 400, 7)]
    expected = {token: FERNET.decrypt(token) for token, _ in tokens}

    def check(round_: int) -> int:
        good = 0
        for token, _ in tokens[round_ % 3 :] + tokens[: round_ % 3]:
            opened = KEY.open(token)
            assert opened is not None and opened[0] == expected[token]
            good += 1
        return good

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(check, range(200))) == 200 * len(tokens)


@settings(max_examples=examples(300), deadline=None)
@given(plaintext=st.binary(max_size=600), sealed_at=st.integers(min_value=0, max_value=2**40))
def test_tokens_encmem_seals_are_fernet_tokens(plaintext: bytes, sealed_at: int) -> None:
    token = KEY.seal(plaintext, sealed_at)
    assert FERNET.decrypt(token) == plaintext
    assert FERNET.extract_timestamp(token) == sealed_at
    assert KEY.open(token) == (plaintext, sealed_at)
    assert KEY.seal(plaintext, sealed_at) != token  # a fresh IV every time


def _round_trips(text: str) -> bool:
    """The definition the spelling check stands for: decodes, and encodes back to itself."""
    try:
        spelled = text.encode("ascii")
        raw = base64.urlsafe_b64decode(spelled)
    except (UnicodeEncodeError, ValueError):
        return False
    return len(raw) >= 9 and base64.urlsafe_b64encode(raw) == spelled


_SPELLING = st.text(alphabet=st.sampled_from("AQgwBRhxEFIM04_-=+/ .\né"), min_size=0, max_size=40)


@settings(max_examples=examples(2000), deadline=None)
@given(data=st.binary(min_size=0, max_size=40), edit=st.tuples(st.integers(0), _SPELLING))
def test_the_spelling_check_accepts_exactly_what_encodes_back_to_itself(
    data: bytes, edit: tuple[int, str]
) -> None:
    token = base64.urlsafe_b64encode(data).decode()
    at = edit[0] % (len(token) + 1)
    for text in (token, token[:at] + edit[1] + token[at:], token[:at] + edit[1], edit[1]):
        assert canonical(text) == _round_trips(text), text


def test_the_spelling_check_refuses_each_stray_low_bit() -> None:
    token = FERNET.encrypt(b"x").decode()
    assert canonical(token)
    padded = base64.urlsafe_b64encode(b"123456789a").decode()  # two '=' of padding
    assert padded.endswith("==") and canonical(padded)
    for char in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        edited = padded[:-3] + char + "=="
        assert canonical(edited) == _round_trips(edited) == (char in "AQgw")
