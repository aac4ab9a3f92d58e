"""Figures the security and reliability suite reports, so they can be quoted from a run.

``figure()`` keeps each one on the run's config; the ``pytest_terminal_summary`` hook in
conftest.py writes them at the end of the run as ``FIGURE ...`` lines, captured output or not.
"""

from __future__ import annotations

import pytest

_FIGURES = pytest.StashKey[list[str]]()


def figure(config: pytest.Config, text: str) -> None:
    """Record a figure for the run's summary."""
    config.stash.setdefault(_FIGURES, []).append(f"FIGURE {text}")


def write_figures(config: pytest.Config, reporter: pytest.TerminalReporter) -> None:
    """Write the recorded figures, in the order the tests reported them."""
    lines = config.stash.get(_FIGURES, [])
    if not lines:
        return
    reporter.write_sep("=", "figures")
    for line in lines:
        reporter.write_line(line)
