"""The texts encmem writes without a JSON encoder per call are the encoder's texts, exactly."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st

from encmem._chain import Head, head_text
from encmem._envelope import _envelope, envelope_text
from encmem._items import _encoder

from .budget import examples

_atoms = st.one_of(
    st.text(),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=examples(800), deadline=None)
@given(
    branch=st.text(),
    seq=st.integers(),
    link=st.text(),
    floor=st.integers(),
    legacy=st.booleans(),
)
def test_head_texts_are_json_dumps_texts(
    branch: str, seq: int, link: str, floor: int, legacy: bool
) -> None:
    head = Head(branch, seq, link, floor, legacy)
    expected = json.dumps({"head": head._asdict()}, ensure_ascii=True, separators=(",", ":"))
    assert head_text(head) == expected
    assert json.loads(head_text(head))["head"] == head._asdict()


_clear_values = st.one_of(_atoms, st.lists(_atoms, max_size=2), st.dictionaries(st.text(), _atoms))


@settings(max_examples=examples(500), deadline=None)
@given(
    kid=st.text(min_size=1, max_size=12),
    seed_id=st.none() | st.text(max_size=16),
    clear=st.dictionaries(
        st.sampled_from(["role", "type", "name", "namespace", "server_label", "content"]),
        _clear_values,
    ),
)
def test_sealed_envelope_texts_are_the_encoders_texts(
    kid: str, seed_id: str | None, clear: dict[str, Any]
) -> None:
    token = Fernet(Fernet.generate_key()).encrypt(b"{}").decode()
    envelope = _envelope(token, kid, clear, seed_id)
    assert envelope_text(token, kid, clear, seed_id) == _encoder.encode(envelope)
