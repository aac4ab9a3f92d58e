"""The plaintext cache only ever skips a decryption: with it or without it, opening a stored
envelope gives the same item or the same refusal, however the envelope was altered since it
was first opened (a field's value swapped for one Python calls equal, ``1`` for ``1.0`` or
``true``; a field added, dropped or reordered)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from encmem import Keyring, generate_key
from encmem._envelope import Opener, seal
from encmem._exact_json import same_json
from encmem._items import encode_item

from .budget import examples

KEYRING = Keyring({"k1": generate_key()})
SESSION = "cache-session"

items = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=20)},
    optional={
        "type": st.just("message"),
        # a clear field may hold any JSON value the caller gave it, numbers and booleans too
        "name": st.one_of(st.sampled_from(["a", "b"]), st.integers(0, 2), st.booleans()),
    },
)


def _equal_but_other(value: Any) -> list[Any]:
    """Values Python's ``==`` takes for ``value`` that are other JSON values."""
    if isinstance(value, bool):
        return [int(value), float(value)]
    if isinstance(value, int):
        return [float(value), *([bool(value)] if value in (0, 1) else [])]
    if isinstance(value, str):
        return [[value], {"s": value}]
    return []


alterations = st.one_of(
    st.tuples(st.just("swap"), st.integers(0, 20), st.integers(0, 3)),
    st.tuples(
        st.just("add"), st.sampled_from(["role", "type", "extra", "seed"]), st.text(max_size=5)
    ),
    st.tuples(st.just("drop"), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("reorder"), st.just(0), st.just(0)),
)


def alter(envelope: dict[str, Any], how: tuple[str, Any, Any]) -> dict[str, Any]:
    kind, where, which = how
    altered = copy.deepcopy(envelope)
    keys = list(altered)
    if kind == "swap":
        key = keys[where % len(keys)]
        options = _equal_but_other(altered[key])
        if options:
            altered[key] = options[which % len(options)]
    elif kind == "add":
        altered[where] = which
    elif kind == "drop":
        del altered[keys[where % len(keys)]]
    else:
        altered = dict(reversed(list(altered.items())))
    return altered


def outcome(opener: Opener, obj: dict[str, Any]) -> tuple[str, Any]:
    try:
        opened = opener.open(obj)
    except Exception as exc:  # the kind of refusal is what must agree
        return "refused", type(exc).__name__
    return "opened", opened.item


@settings(max_examples=examples(300), deadline=None)
@given(item=items, how=alterations)
def test_a_cached_open_gives_what_an_uncached_one_gives(
    item: dict[str, Any], how: tuple[str, Any, Any]
) -> None:
    key = KEYRING.session_key(KEYRING.primary_kid, SESSION)
    assert key is not None
    envelope = seal(key, KEYRING.primary_kid, item, encode_item(item), 1_700_000_000)
    warm = Opener(KEYRING, SESSION, cache_size=16)
    assert warm.open(envelope).item == item  # now cached
    altered = alter(envelope, how)
    cold = outcome(Opener(KEYRING, SESSION), altered)
    hot = outcome(warm, altered)
    assert hot[0] == cold[0]
    if hot[0] == "opened":
        assert same_json(hot[1], cold[1])
    else:
        assert hot[1] == cold[1]
