"""Keyring hardening: no key in any error, only generated keys accepted, thread and fork safety,
passphrase parameters.

Each section pins one property a careless change would break:

* a malformed keyring spec built from a real key never puts that key (as given, its decoded
  bytes in hex or either base64, or any 12-character piece of those) into an exception, its
  cause/context chain, or the output of the ``encmem`` command;
* only the forms ``encmem keygen`` / ``Fernet.generate_key()`` write, or 32 raw bytes, are
  accepted, and not even those when they carry a pattern no random key has;
* one Keyring shared by 8 threads over more sessions than its cache holds derives exactly the
  keys a single thread derives, and a forked child can still use it;
* passphrases: scrypt N=2**17, r=8, p=1 by default, at least 12 characters, and keys made with
  older parameters still derive to the same bytes.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import string
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from math import comb, factorial
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from hypothesis import given, settings
from hypothesis import strategies as st

from encmem import InvalidKeyError, Keyring, generate_key
from encmem._keys import check_kid, fingerprint, parse_key
from encmem._token import FernetKey

from .budget import examples

ENCMEM = str(Path(sys.executable).with_name("encmem"))
KEY, OTHER = generate_key(), generate_key()
RAW = base64.urlsafe_b64decode(KEY)
HINTS = ("encmem keygen", "generate_key()", "Keyring.from_passphrase")


# -- leak detection --------------------------------------------------------------------------


def _spellings(key: str) -> list[str]:
    raw = base64.urlsafe_b64decode(key)
    standard = base64.b64encode(raw).decode()
    return [key, raw.hex(), raw.hex().upper(), standard, repr(raw)]


def _needles(*keys: str) -> set[str]:
    """Every 12-character piece of every spelling: a truncated key is still a leak."""
    return {
        spelling[i : i + 12]
        for key in keys
        for spelling in _spellings(key)
        for i in range(len(spelling) - 11)
    }


NEEDLES = _needles(KEY, OTHER)
RAW_NEEDLES = {raw[i : i + 12] for raw in (RAW, base64.urlsafe_b64decode(OTHER)) for i in range(21)}


def _exception_texts(exc: BaseException) -> Iterator[str | bytes]:
    """str, repr, args and the formatted traceback of an exception and its whole chain."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        for arg in current.args:
            yield arg if isinstance(arg, bytes) else repr(arg)
        if isinstance(current, UnicodeError):
            obj = getattr(current, "object", b"")
            yield obj if isinstance(obj, bytes) else str(obj)
        yield from getattr(current, "__notes__", [])
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    yield "".join(traceback.format_exception(exc))


def _leaks(texts: Iterator[str | bytes]) -> list[str]:
    found = []
    for text in texts:
        if isinstance(text, bytes):
            found += [repr(n) for n in RAW_NEEDLES if n in text]
        else:
            found += [n for n in NEEDLES if n in text]
    return found


K, K2, NOPAD = KEY, OTHER, KEY.rstrip("=")
MALFORMED_SPECS = [
    f"{K}:new,{K}:old",  # key and id swapped
    f"{NOPAD}:new,{NOPAD}:old",  # swapped, padding lost: every character is a valid id character
    f"{K}:new",
    f"{NOPAD}:new",
    f"{K}:{K2}",
    f"{K}:",
    f":{K}",
    f"new:{K},new:{K2}",  # duplicated id
    f"new:{K},{K}",  # a bare key after a pair
    f"{K},{K2}",
    f"{K}{K}",
    f"new:{K}{K2}",
    f"new:{K[:30]}",  # truncated
    f"new:{K[1:]}",
    f"new:{NOPAD}",
    f"new::{K}",  # extra separators
    f"new:{K}:",
    f"new:{K}:old:{K2}",
    f"new={K}",
    f"new:{K};old:{K2}",
    f"new:'{K}'",
    f'new:"{K}"',
    f"new:{K[:22]} {K[22:]}",
    f"{K[:22]}:{K[22:]}",
    f"new:{RAW.hex()}",  # the same key in forms no longer accepted
    f"{RAW.hex()}:new",
    f"new:{base64.b64encode(RAW + RAW).decode()}",
    f"new:{K}\x00",
    f"new:{K}\u00e9",
]


@pytest.mark.parametrize("spec", MALFORMED_SPECS, ids=range(len(MALFORMED_SPECS)))
def test_malformed_specs_are_refused_without_the_key(spec: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        Keyring.parse(spec)
    assert _leaks(_exception_texts(info.value)) == []


@settings(max_examples=examples(300), deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(
            [K, K2, NOPAD, K[:22], K[22:], ":", ",", " ", "=", "new", "old", RAW.hex(), "\n"]
        ),
        min_size=1,
        max_size=7,
    )
)
def test_any_splice_of_keys_and_separators_fails_cleanly(pieces: list[str]) -> None:
    try:
        Keyring.parse("".join(pieces))
    except InvalidKeyError as exc:
        assert _leaks(_exception_texts(exc)) == []


@pytest.mark.parametrize(
    "build",
    [
        lambda: Keyring({K: "new"}),
        lambda: Keyring({NOPAD: K2}),
        lambda: Keyring({RAW.hex(): K2}),
        lambda: Keyring(K2).with_primary(K, kid=NOPAD),
        lambda: Keyring(K[:40]),
        lambda: Keyring(RAW[:31]),
        lambda: Keyring(RAW + b"\xff"),
        lambda: Keyring(K.encode() + b"\xff"),
        lambda: Keyring(RAW.hex()),
        lambda: Keyring(K, primary=K),
        lambda: Keyring({"a": K}, primary=NOPAD),
        lambda: check_kid(NOPAD),
        lambda: check_kid(RAW.hex()),
    ],
)
def test_every_constructor_refusal_is_clean(build: Callable[[], object]) -> None:
    with pytest.raises(InvalidKeyError) as info:
        build()
    assert _leaks(_exception_texts(info.value)) == []


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    from encmem.backends import SQLiteSession

    from encmem import EncryptedSession

    path = tmp_path_factory.mktemp("cli") / "store.db"

    async def fill() -> None:
        session = EncryptedSession(
            underlying_session=SQLiteSession("user-1", path), encryption_key=generate_key()
        )
        await session.add_items([{"role": "user", "content": "hello"}])
        await session.close()

    asyncio.run(fill())
    return path


CLI_SPECS = [MALFORMED_SPECS[i] for i in (0, 1, 2, 3, 7, 10, 12, 15, 24, 25)]


def _run_cli(command: str, db: Path, spec: str, way: str, tmp: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMEM_KEY")}
    args = [ENCMEM, command, str(db)]
    if way == "file":
        key_file = tmp / f"keys-{abs(hash((command, spec)))}.txt"
        key_file.write_text(spec, encoding="utf-8")
        args += ["--key-file", str(key_file)]
    else:
        env[way] = spec
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    problems = _leaks(iter([done.stdout, done.stderr]))
    if done.returncode != 3 or "Traceback" in done.stderr:
        problems.append(f"exit {done.returncode}: {done.stderr[-200:]!r}")
    return problems


@pytest.mark.slow
def test_the_command_never_prints_a_malformed_key(store_file: Path, tmp_path: Path) -> None:
    runs = [("verify", spec, "ENCMEM_KEYS") for spec in CLI_SPECS]
    runs += [("inspect", spec, "ENCMEM_KEYS") for spec in CLI_SPECS[::2]]
    runs += [("verify", spec, way) for spec in CLI_SPECS[:2] for way in ("ENCMEM_KEY", "file")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda r: _run_cli(r[0], store_file, r[1], r[2], tmp_path), runs)
        outcomes = zip(runs, results, strict=True)
        failures = {f"{r[0]} {r[2]} #{CLI_SPECS.index(r[1])}": p for r, p in outcomes if p}
    assert failures == {}


# -- which keys are accepted ------------------------------------------------------------------


def _canonical(first43: str) -> str:
    """A 44-character urlsafe key text starting with ``first43`` (last character normalised)."""
    return base64.urlsafe_b64encode(base64.urlsafe_b64decode(first43[:43] + "=")).decode()


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
STRUCTURED = {
    "alphabet in order": ALPHABET[:43] + "=",
    "alphabet in order, canonical": _canonical(ALPHABET),
    "alphabet backwards": _canonical(ALPHABET[::-1]),
    "alphabet, step 3": _canonical("".join(ALPHABET[(3 * i) % 64] for i in range(43))),
    "hex digits x4": "0123456789abcdef" * 4,
    "hex digits, key length": _canonical("0123456789abcdef" * 3),
    "hex of random bytes": RAW.hex(),
    "one letter": "A" * 43 + "=",
    "lowercase phrase": _canonical("thisismylongsecretpasswordforencmemproduction"),
    "dashed phrase": _canonical("this-is-my-long-secret-password-for-encmem-prod"),
    "bytes 0..31": bytes(range(32)),
    "bytes 0..15 twice": bytes(range(16)) * 2,
    "bytes 0..31 as text": _text(bytes(range(32))),
    "bytes 0..15 twice as text": _text(bytes(range(16)) * 2),
    "arithmetic bytes": bytes((7 + 13 * i) % 256 for i in range(32)),
    "descending bytes": bytes(range(255, 223, -1)),
    "zero bytes": bytes(32),
    "random half twice": RAW[:16] * 2,
    "random quarter x4 as text": _text(RAW[:8] * 4),
    "printable bytes": b"a very long passphrase, 32 char!",
    "printable bytes as text": _text(b"correct horse battery staple!!!!"),
    "31 random bytes": RAW[:31],
    "33 random bytes": RAW + b"\x01",
    "48 random bytes as text": _text(os.urandom(48)),
    "standard base64": base64.b64encode(b"\xfb\xff" + RAW[2:]).decode(),
    "unpadded": NOPAD,
    "password": "hunter2hunter2",
    "empty": "",
    "whitespace only": " \n\t",
    "empty bytes": b"",
}


@pytest.mark.parametrize("weak", list(STRUCTURED.values()), ids=list(STRUCTURED))
def test_structured_or_foreign_keys_are_refused_with_the_fix(weak: str | bytes) -> None:
    for given_as in (weak, weak.encode() if isinstance(weak, str) else weak):
        with pytest.raises(InvalidKeyError) as info:
            Keyring(given_as)
        message = str(info.value)
        assert all(hint in message for hint in HINTS), message
        shown = weak if isinstance(weak, str) else weak.decode("latin-1")
        assert len(shown) < 8 or shown[:8] not in message


def test_generated_keys_in_both_forms_are_accepted() -> None:
    for _ in range(10_000):
        text = Fernet.generate_key()
        raw = base64.urlsafe_b64decode(text)
        assert parse_key(text) == (raw, raw)
        assert parse_key(text.decode()) == (raw, raw)
    for _ in range(10_000):
        raw = os.urandom(32)
        assert parse_key(raw) == (raw, None)


def test_surrounding_whitespace_is_stripped() -> None:
    for spelled in (f"  {KEY}\n", f"\t{KEY}\r\n", f"{KEY}\n".encode()):
        assert parse_key(spelled)[0] == RAW
        assert Keyring(spelled).primary_kid == Keyring(KEY).primary_kid


def test_sdk_keys_still_take_any_string_the_sdk_took() -> None:
    ring = Keyring(KEY, sdk_keys=["hunter2", "0" * 64, RAW.hex(), ALPHABET, OTHER])
    assert len(ring.sdk_keys("s")) == 6
    assert len({k.fernet.encrypt(b"x") for k in ring.sdk_keys("s")}) == 6


def test_key_looking_ids_are_refused_without_echo() -> None:
    for kid in (NOPAD, RAW.hex(), base64.b64encode(RAW).decode().rstrip("=").replace("+", "-")):
        with pytest.raises(InvalidKeyError, match=r"looks like a key|not repeated"):
            check_kid(kid.replace("/", "_"))
    assert check_kid("2026-11") == "2026-11"
    assert check_kid("scrypt.n17.r8.p1.k0123456789") == "scrypt.n17.r8.p1.k0123456789"


def _p_fewer_distinct(draws: int, alphabet: int, threshold: int) -> Fraction:
    """P(fewer than ``threshold`` distinct values in ``draws`` uniform draws from ``alphabet``)."""
    stirling = [[Fraction(0)] * (threshold + 1) for _ in range(draws + 1)]
    stirling[0][0] = Fraction(1)
    for n in range(1, draws + 1):
        for k in range(1, min(n, threshold) + 1):
            stirling[n][k] = k * stirling[n - 1][k] + stirling[n - 1][k - 1]
    return sum(
        (
            comb(alphabet, d) * stirling[draws][d] * factorial(d) / Fraction(alphabet) ** draws
            for d in range(1, threshold)
        ),
        Fraction(0),
    )


def test_false_refusal_probability_of_the_thresholds_is_negligible() -> None:
    from encmem import _keyparse as rules

    span = rules.TEXT_SPAN
    lower = Fraction(28, 64)  # a-z, '-' and '_'
    p_lower = sum(
        comb(span, i) * lower**i * (1 - lower) ** (span - i)
        for i in range(rules.MAX_LOWERCASE_CHARS + 1, span + 1)
    )
    total = (
        _p_fewer_distinct(32, 256, rules.MIN_DISTINCT_BYTES)
        + _p_fewer_distinct(31, 256, rules.MIN_DISTINCT_BYTE_STEPS)
        + Fraction(95, 256) ** 32
        + _p_fewer_distinct(span, 64, rules.MIN_DISTINCT_CHARS)
        + _p_fewer_distinct(span - 1, 64, rules.MIN_DISTINCT_CHAR_STEPS)
        + p_lower
    )
    assert total < Fraction(2, 10**11)


# -- threads and fork --------------------------------------------------------------------------


@pytest.mark.slow
def test_one_keyring_shared_by_8_threads_over_6500_sessions() -> None:
    ring = Keyring({"a": KEY}, sdk_keys=[OTHER])
    reference = Keyring({"a": KEY}, sdk_keys=[OTHER])  # derives everything on one thread
    sessions = [f"session-{i}" for i in range(6_500)]  # more than the 4,096 cache slots
    expected = {s: reference.session_fernet("a", s).encrypt_at_time(b"x", 0) for s in sessions}  # type: ignore[union-attr]
    sdk_expected = {s: reference.sdk_keys(s)[0].fernet.encrypt_at_time(b"x", 0) for s in sessions}
    errors: list[BaseException] = []
    got: list[list[tuple[str, FernetKey | None, FernetKey]]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        order = random.Random(index).sample(sessions, len(sessions))
        barrier.wait()
        try:
            for s in order:
                got[index].append((s, ring.session_key("a", s), ring.sdk_keys(s)[0]))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert all(len(results) == len(sessions) for results in got)
    # Each distinct key object once: most lookups hit the cache and return the same object.
    distinct = {(s, id(key), id(sdk)): (s, key, sdk) for r in got for s, key, sdk in r}
    for s, key, sdk_key in distinct.values():
        assert key is not None and key.fernet.decrypt(expected[s]) == b"x"
        assert sdk_key.fernet.decrypt(sdk_expected[s]) == b"x"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_can_use_a_keyring_whose_lock_was_held() -> None:
    from encmem import _keys as keys_module

    ring = Keyring(KEY)
    expected = ring.session_fernet(ring.primary_kid, "s").encrypt(b"x")  # type: ignore[union-attr]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with keys_module._CACHE_LOCK:  # the child is forked while another thread holds the lock
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                signal.alarm(10)
                key = ring.session_key(ring.primary_kid, "s")
                fresh = ring.session_key(ring.primary_kid, "another session")
                ok = key is not None and fresh is not None and key.fernet.decrypt(expected)
                os._exit(0 if ok == b"x" else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- passphrases -------------------------------------------------------------------------------

PASSPHRASE, SALT = "pinned passphrase for tests", b"encmem-pinned-salt-01"
# Computed with the derivation as first released (scrypt, then HKDF per session); a change to
# either breaks every deployment that derived its key from a passphrase.
PINNED = {
    14: ("scrypt.n14.r8.p1.k2064a81d2b", "qrEsAE6XESuRtKxgiGwmi8kBm0eJuBt9JI4x-J8RZ8E="),
    15: ("scrypt.n15.r8.p1.kbc4063a078", "xpRDgnaQkFI1QKvDUzr8r4srmIe_iYNVGHHq8J6rbpQ="),
}


@pytest.mark.parametrize("log2_n", sorted(PINNED))
def test_keys_from_older_parameters_derive_the_same_bytes(log2_n: int) -> None:
    kid, session_key = PINNED[log2_n]
    ring = Keyring.from_passphrase(PASSPHRASE, salt=SALT, log2_n=log2_n)
    assert ring.primary_kid == kid
    token = ring.session_fernet(kid, "session-1").encrypt(b"pinned")  # type: ignore[union-attr]
    assert Fernet(session_key).decrypt(token) == b"pinned"


@pytest.mark.slow
def test_default_scrypt_cost_is_n17_r8_p1() -> None:
    ring = Keyring.from_passphrase(PASSPHRASE, salt=SALT)
    raw = Scrypt(salt=SALT, length=32, n=2**17, r=8, p=1).derive(PASSPHRASE.encode())
    assert ring.primary_kid == f"scrypt.n17.r8.p1.{fingerprint(raw)}"


@pytest.mark.parametrize(
    "passphrase", ["", "short", "elevenchars", "ééééééééééé", b"elevenbytes", "x" * 11]
)
def test_passphrases_under_12_characters_are_refused(passphrase: str | bytes) -> None:
    with pytest.raises(InvalidKeyError, match="12 characters") as info:
        Keyring.from_passphrase(passphrase, salt=SALT, log2_n=14)
    if passphrase:
        shown = passphrase if isinstance(passphrase, str) else passphrase.decode()
        assert shown not in str(info.value)


def test_12_characters_and_the_parameter_range_are_accepted() -> None:
    assert Keyring.from_passphrase("twelve chars", salt=SALT, log2_n=14).primary_kid.startswith(
        "scrypt.n14.r8.p1."
    )
    for log2_n in (13, 23):
        with pytest.raises(InvalidKeyError, match="14<=log2_n<=22"):
            Keyring.from_passphrase("twelve chars", salt=SALT, log2_n=log2_n)
