"""How hard the property tests search: fully in ``make test``, less in ``make test-fast``.

``make test-fast`` sets ``ENCMEM_TEST_EXAMPLE_SCALE`` (a fraction) for its quick inner loop;
every property test still runs, on fewer generated examples.
"""

from __future__ import annotations

import os

SCALE = float(os.environ.get("ENCMEM_TEST_EXAMPLE_SCALE", "1"))


def examples(count: int) -> int:
    """``count`` hypothesis examples, scaled for this run (never fewer than 5)."""
    return max(5, round(count * SCALE))
