"""Hypothesis strategies for session items."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=15,
)

json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(text, json_values, max_size=6)

messages = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["user", "assistant"]),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300),
)

items = st.one_of(json_objects, messages)
