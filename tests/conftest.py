"""Shared fixtures: a store per backend, plain and encrypted, and a fixed keyring."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from encmem import Keyring

from .figures import write_figures
from .stores import STORES, EncryptedStore, Store

# A fixed, valid test key (32 random bytes, urlsafe base64); never used outside tests.
TEST_KEY = "p7b0Yk3vX2sQm9Lr4TzW8cNq1HfJd6Ua5EoGiK0yBxM="


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"test-1": TEST_KEY})


def _store_params() -> list[tuple[str, bool]]:
    """Every store plain and encrypted; stores of foreign classes only encrypted.

    A store class sets ``encrypted_only = True`` when it wraps a session class that is not
    ours (the Agents SDK's, a user's): only its behaviour under EncryptedSession is promised.
    """
    return [
        (kind, encrypted)
        for kind, factory in STORES.items()
        for encrypted in (False, True)
        if encrypted or not getattr(factory, "encrypted_only", False)
    ]


@pytest.fixture(
    params=_store_params(),
    ids=lambda p: f"{p[0]}-{'encrypted' if p[1] else 'plain'}",
)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, keyring: Keyring
) -> AsyncIterator[Store]:
    kind, encrypted = request.param
    factory = STORES[kind]
    limits: set[str] = getattr(factory, "known_limits", set())
    test_name = request.node.originalname
    if test_name in limits:
        # An inherent limit of a wrapped foreign class, documented where the store is defined.
        request.applymarker(
            pytest.mark.xfail(strict=True, reason=f"{kind}: known limit of the wrapped class")
        )
    inner = factory(tmp_path)
    result: Store = EncryptedStore(inner, keyring) if encrypted else inner
    try:
        yield result
    finally:
        await result.aclose()


def pytest_configure(config: pytest.Config) -> None:
    """Tests run offline: no trace export to a model provider."""
    try:
        from agents import set_tracing_disabled
    except ImportError:
        return
    set_tracing_disabled(True)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The figures the security and reliability tests recorded (see figures.py)."""
    write_figures(config, terminalreporter)


def _server_marks(item: pytest.Item) -> set[str]:
    """The servers a test needs, read from its store kind or its database fixture."""
    needs: set[str] = set()
    callspec = getattr(item, "callspec", None)
    values = list(callspec.params.values()) if callspec is not None else []
    kinds = [v[0] if isinstance(v, tuple) and v else v for v in values]
    for kind in kinds:
        if isinstance(kind, str) and (kind == "pg" or kind.endswith("-pg")):
            needs.add("pg")
        if isinstance(kind, str) and kind.endswith("redis"):
            needs.add("redis")
    if "pg" in getattr(item, "fixturenames", ()):
        needs.add("pg")
    return needs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that runs against a PostgreSQL or Redis store as pg or redis."""
    for item in items:
        for name in _server_marks(item):
            item.add_marker(getattr(pytest.mark, name))
