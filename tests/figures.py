"""Figures the security and reliability suite prints, so they can be quoted from a run."""

from __future__ import annotations

import pytest


def figure(config: pytest.Config, text: str) -> None:
    """Print a figure so that it shows in the test run's output, captured or not."""
    line = f"FIGURE {text}"
    print(line)
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)
