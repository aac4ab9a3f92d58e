"""The benchmark workload: turns of four realistic Responses-API items (~340 B of JSON each).

A turn is a ~200-character user message, a function_call, its function_call_output and a
~600-character assistant message in the Responses output shape. Text is pseudo-random but
deterministic (seeded), so every run and every cell stores the same bytes.
"""

from __future__ import annotations

import json
import random
import string
from typing import Any

Item = dict[str, Any]

ITEMS_PER_TURN = 4
_WORDS = [
    "".join(random.Random(i).choices(string.ascii_lowercase, k=3 + i % 8)) for i in range(512)
]
_CITIES = ["Paris", "Lisbon", "Osaka", "Toronto", "Nairobi", "Lima", "Oslo", "Hanoi"]


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[: length - 1] + "."


def _ident(rng: random.Random, prefix: str, length: int = 24) -> str:
    return prefix + "".join(rng.choices(string.ascii_letters + string.digits, k=length))


def turn(index: int) -> list[Item]:
    """The four items of turn ``index`` (deterministic in ``index``)."""
    rng = random.Random(index)
    call_id = _ident(rng, "call_")
    city = rng.choice(_CITIES)
    return [
        {"role": "user", "content": _text(rng, 200)},
        {
            "type": "function_call",
            "id": _ident(rng, "fc_"),
            "call_id": call_id,
            "name": "get_weather",
            "arguments": json.dumps({"city": city, "unit": "celsius"}),
            "status": "completed",
        },
        {
            "type": "function_call_output",
            "call_id": call_id,
            "output": json.dumps(
                {"city": city, "temp_c": rng.randint(-20, 40), "summary": _text(rng, 60)}
            ),
        },
        {
            "id": _ident(rng, "msg_"),
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": _text(rng, 600), "annotations": []}],
        },
    ]


def items(count: int, start_turn: int = 0) -> list[Item]:
    """``count`` items: whole turns from ``start_turn`` on, the last one cut if needed."""
    result: list[Item] = []
    index = start_turn
    while len(result) < count:
        result.extend(turn(index))
        index += 1
    return result[:count]


def mean_json_size(sample_turns: int = 250) -> float:
    """Average compact-JSON size of an item, in bytes (what the header reports)."""
    sample = items(sample_turns * ITEMS_PER_TURN)
    sizes = [len(json.dumps(i, separators=(",", ":")).encode()) for i in sample]
    return sum(sizes) / len(sizes)
