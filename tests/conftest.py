"""Shared fixtures: a store per backend, plain and encrypted, and a fixed keyring."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from encmem import Keyring

from .stores import STORES, EncryptedStore, Store

# A fixed, valid test key (32 random bytes, urlsafe base64); never used outside tests.
TEST_KEY = "p7b0Yk3vX2sQm9Lr4TzW8cNq1HfJd6Ua5EoGiK0yBxM="


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"test-1": TEST_KEY})


@pytest.fixture(
    params=[(kind, enc) for kind in STORES for enc in (False, True)],
    ids=lambda p: f"{p[0]}-{'encrypted' if p[1] else 'plain'}",
)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, keyring: Keyring
) -> AsyncIterator[Store]:
    kind, encrypted = request.param
    inner = STORES[kind](tmp_path)
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
