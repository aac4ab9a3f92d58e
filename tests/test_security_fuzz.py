"""Fuzz the envelope opener: whatever is stored, only encmem's own errors may come out.

``open_envelope(obj, keyring, session_id)`` is fed arbitrary JSON values, arbitrary bytes and
text as tokens, envelope-shaped dicts with random field values, and authentic tokens
(sealed under the right session key) around arbitrary plaintext bytes. Every call must either
return the authentic item or raise an :class:`encmem.EncmemError`; nothing else (KeyError,
TypeError, binascii.Error, UnicodeDecodeError, RecursionError...) may escape. Each test
fails on the first input that lets anything else out (hypothesis then shrinks it), checks it
tried as many inputs as asked, and prints a FIGURE line with its counts.
"""

from __future__ import annotations

import base64
import json
import os
import traceback
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encmem import EncmemError, Keyring, generate_key
from encmem._envelope import CLEAR_FIELDS, Opened, open_envelope, seal
from encmem._items import encode_item
from encmem._keys import SDK_KID

from .budget import examples
from .figures import figure
from .strategies import json_objects, json_values

SESSION = "fuzz-session"
KEY = generate_key()
SDK_KEY = generate_key()
KEYRING = Keyring({"main": KEY, "old": generate_key()}, primary="main", sdk_keys=[SDK_KEY])
EXAMPLES = int(os.environ.get("ENCMEM_FUZZ_EXAMPLES", examples(300)))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # reproducible in CI; set ENCMEM_FUZZ_EXAMPLES higher to dig deeper
)


class Counter:
    """Counts what one fuzz target's inputs did; fails at once on anything but EncmemError."""

    def __init__(self) -> None:
        self.tried = 0
        self.encmem_errors = 0
        self.opened = 0

    def feed(self, obj: object, session_id: str = SESSION) -> Opened | None:
        """Open ``obj``: the opened item, or None for an EncmemError; anything else fails."""
        self.tried += 1
        try:
            opened = open_envelope(obj, KEYRING, session_id)
        except EncmemError:
            self.encmem_errors += 1
            return None
        except BaseException as exc:  # the finding itself
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise AssertionError(f"{detail} escaped for input {_short(obj)}") from exc
        self.opened += 1
        return opened

    def report(self, config: pytest.Config, name: str, examples: int) -> None:
        figure(
            config,
            f"fuzz-{name}: {examples} examples, {self.tried} inputs tried, "
            f"{self.encmem_errors} encmem errors, {self.opened} opened authentically",
        )


def _short(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 300 else text[:300] + f"... ({len(text)} chars)"


def _token(fernet_session: str = SESSION, kid: str = "main", plaintext: bytes = b"{}") -> str:
    fernet = KEYRING.session_fernet(kid, fernet_session)
    assert fernet is not None
    return fernet.encrypt_at_time(plaintext, 1_700_000_000).decode("ascii")


GOOD_ITEM = {"role": "user", "content": "fuzz me"}
GOOD = seal(
    KEYRING.session_key("main", SESSION),  # type: ignore[arg-type]
    "main",
    GOOD_ITEM,
    encode_item(GOOD_ITEM),
    1_700_000_000,
)

texts = st.text(max_size=200)
any_text = st.text(alphabet=st.characters(), max_size=200)  # lone surrogates included
base64ish = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=300
)
tokens = st.one_of(
    texts,
    any_text,
    base64ish,
    st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode("ascii")),
    # bytes with Fernet's version byte and a timestamp in front: they pass the layout check
    st.binary(max_size=300).map(
        lambda b: base64.urlsafe_b64encode(b"\x80" + (1_700_000_000).to_bytes(8, "big") + b).decode(
            "ascii"
        )
    ),
    st.just(GOOD["payload"]),
    st.builds(
        lambda cut, extra: GOOD["payload"][:cut] + extra,
        st.integers(0, len(GOOD["payload"])),
        base64ish,
    ),
    json_values,
)
kids = st.one_of(st.sampled_from(["main", "old", SDK_KID, "", "nobody"]), any_text, json_values)
versions = st.one_of(st.sampled_from([1, 2, 3, 0, -1, "2", 2.0, True]), json_values)
envelopes = st.fixed_dictionaries(
    {"__enc__": st.one_of(st.just(1), json_values), "v": versions, "kid": kids, "payload": tokens},
    optional={
        **{
            name: st.one_of(st.sampled_from(["user", "assistant", "message"]), json_values)
            for name in CLEAR_FIELDS
        },
        "extra": json_values,
    },
)


def run_fuzz(config: pytest.Config, name: str, strategy: Any, check: Any) -> Counter:
    """Run ``check(counter, example)`` on EXAMPLES generated examples; report and return."""
    counter = Counter()
    examples = 0

    @given(example=strategy)
    @FUZZ
    def target(example: Any) -> None:
        nonlocal examples
        examples += 1
        check(counter, example)

    target()
    counter.report(config, name, examples)
    assert examples >= EXAMPLES, f"only {examples} of {EXAMPLES} examples ran"
    return counter


def test_fuzz_arbitrary_json(pytestconfig: pytest.Config) -> None:
    counter = run_fuzz(pytestconfig, "json", json_values, Counter.feed)
    assert counter.opened == 0, "arbitrary JSON opened as an authentic item"


def _feed_bytes(counter: Counter, data: bytes) -> None:
    counter.feed(data)
    try:
        decoded: object = json.loads(data)
    except (ValueError, RecursionError):
        decoded = data.decode("latin-1")
    counter.feed(decoded)
    counter.feed({**GOOD, "payload": data})
    counter.feed({**GOOD, "payload": data.decode("latin-1")})
    counter.feed({**GOOD, "payload": base64.urlsafe_b64encode(data).decode("ascii")})


def test_fuzz_arbitrary_bytes(pytestconfig: pytest.Config) -> None:
    counter = run_fuzz(pytestconfig, "bytes", st.binary(max_size=500), _feed_bytes)
    assert counter.opened == 0, "arbitrary bytes opened as an authentic item"


def _feed_text(counter: Counter, text: str) -> None:
    counter.feed(text)
    counter.feed({**GOOD, "payload": text})
    # With the kid it was sealed under ("main", which the generator can draw), the envelope
    # is the authentic one and must open: any other kid must not.
    counter.feed({**GOOD, "kid": text if text != GOOD["kid"] else text + "?"})
    counter.feed({**GOOD, "kid": SDK_KID, "v": 1, "payload": text})


def test_fuzz_arbitrary_text(pytestconfig: pytest.Config) -> None:
    counter = run_fuzz(pytestconfig, "text", any_text, _feed_text)
    assert counter.encmem_errors == counter.tried, "arbitrary text opened"


def _feed_envelope(counter: Counter, obj: dict[str, Any]) -> None:
    opened = counter.feed(obj)
    if opened is not None:
        # only the authentic item can come out, and only with its own clear fields
        assert opened.item == GOOD_ITEM, obj
        assert {k: obj[k] for k in CLEAR_FIELDS if k in obj} == {"role": "user"}


def test_fuzz_envelope_shaped_dicts(pytestconfig: pytest.Config) -> None:
    counter = run_fuzz(pytestconfig, "envelopes", envelopes, _feed_envelope)
    assert counter.encmem_errors > 0, "no malformed envelope was refused"


def _feed_authentic_bytes(counter: Counter, example: tuple[bytes, int]) -> None:
    """A token that authenticates but whose plaintext is not an item is still refused."""
    plaintext, version = example
    if version == 2:
        obj = {"__enc__": 1, "v": 2, "kid": "main", "payload": _token(plaintext=plaintext)}
    else:
        sdk = KEYRING.sdk_keys(SESSION)[0].fernet
        token = sdk.encrypt_at_time(plaintext, 1_700_000_000).decode("ascii")
        obj = {"__enc__": 1, "v": 1, "kid": SDK_KID, "payload": token}
    opened = counter.feed(obj)
    if opened is not None:
        assert opened.item == json.loads(plaintext)


def test_fuzz_authentic_tokens_around_arbitrary_plaintext(pytestconfig: pytest.Config) -> None:
    examples = st.tuples(st.binary(max_size=400), st.sampled_from([1, 2]))
    counter = run_fuzz(pytestconfig, "authentic-bytes", examples, _feed_authentic_bytes)
    assert counter.encmem_errors > 0, "no authentic non-item plaintext was refused"


def _feed_authentic_item(counter: Counter, item: dict[str, Any]) -> None:
    fernet = KEYRING.session_key("main", SESSION)
    assert fernet is not None
    envelope = seal(fernet, "main", item, encode_item(item), 1_700_000_000)
    opened = counter.feed(json.loads(json.dumps(envelope)))
    assert opened is not None and opened.item == item
    # ...and the same envelope read under another session id never opens
    assert counter.feed(envelope, session_id=SESSION + "-other") is None


def test_fuzz_authentic_items_round_trip(pytestconfig: pytest.Config) -> None:
    counter = run_fuzz(pytestconfig, "authentic-items", json_objects, _feed_authentic_item)
    assert counter.opened == counter.encmem_errors == counter.tried // 2


# -- hostile plaintexts found by hand, kept as regression tests --------------------------------


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_authentic_token_around_deeply_nested_json_is_an_encmem_error(depth: int) -> None:
    """Deeply nested JSON inside an authentic token must not escape as RecursionError."""
    plaintext = b"[" * depth + b"]" * depth
    obj = {"__enc__": 1, "v": 2, "kid": "main", "payload": _token(plaintext=plaintext)}
    with pytest.raises(EncmemError):
        open_envelope(obj, KEYRING, SESSION)


@pytest.mark.parametrize("kid", ["main\udc80", "\ud800", "m\x00ain"])
def test_odd_kids_are_encmem_errors(kid: str) -> None:
    with pytest.raises(EncmemError):
        open_envelope({**GOOD, "kid": kid}, KEYRING, SESSION)
