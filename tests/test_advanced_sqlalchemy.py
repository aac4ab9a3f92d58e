"""AdvancedSQLAlchemySession passes AdvancedSQLiteSession's behavioural tests, plain and
encrypted, on SQLite (aiosqlite) and PostgreSQL (asyncpg).

The tests of :mod:`tests.test_advanced` are collected here again; the ``opener`` fixture of
this module opens AdvancedSQLAlchemySession instead, on a SQLite file or in a PostgreSQL
schema of the test's own. The whole-scenario comparison runs plain against encrypted here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from encmem.backends import AdvancedSQLAlchemySession

from encmem import EncryptedSession, Keyring

from . import test_advanced
from .stores_advanced import structure_problems
from .stores_advanced_sqlalchemy import PLACES, Place
from .test_advanced import TURN_1, TURN_2, scenario

# The tests that take ``opener``, collected here against this module's fixture.
globals().update(
    {
        name: test
        for name, test in vars(test_advanced).items()
        if name.startswith("test_") and "opener" in test.__code__.co_varnames
    }
)


class Opener:
    """Opens sessions in one place, bare or under EncryptedSession (test_advanced's Opener)."""

    def __init__(self, place: Place, encrypted: bool, keyring: Keyring) -> None:
        self.place = place
        self.path = place.path
        self.encrypted = encrypted
        self.keyring = keyring
        self.backends: list[AdvancedSQLAlchemySession] = []

    def __call__(self, session_id: str = "s", **kwargs: Any) -> Any:
        backend = self.place.backend(session_id, **kwargs)
        self.backends.append(backend)
        if not self.encrypted:
            return backend
        return EncryptedSession(underlying_session=backend, encryption_key=self.keyring)

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.close()
        self.place.drop()


@pytest.fixture(
    # AdvancedSQLiteSession runs these tests in make test-fast; here, the one-scenario
    # comparisons below stand for them there, and the full runs are left to make test.
    params=[
        pytest.param((kind, mode), marks=pytest.mark.slow, id=f"{kind}-{mode}")
        for kind, _ in PLACES
        for mode in ("plain", "encrypted")
    ],
)
async def opener(
    request: pytest.FixtureRequest, tmp_path: Path, keyring: Keyring
) -> AsyncIterator[Opener]:
    kind, mode = request.param
    place = Place(dict(PLACES)[kind], tmp_path)
    result = Opener(place, mode == "encrypted", keyring)
    try:
        yield result
    finally:
        await result.aclose()


@pytest.fixture(params=PLACES, ids=[kind for kind, _ in PLACES])
def places(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A factory of places of one kind; every place made is dropped afterwards."""
    made: list[Place] = []

    def make(name: str) -> Place:
        made.append(Place(request.param[1], tmp_path, name))
        return made[-1]

    yield make
    for place in made:
        place.drop()


async def test_plain_and_encrypted_give_the_same_results(places: Any, keyring: Keyring) -> None:
    plain_place, sealed_place = places("plain"), places("sealed")
    plain = plain_place.backend("s")
    backend = sealed_place.backend("s")
    sealed = EncryptedSession(underlying_session=backend, encryption_key=keyring)
    try:
        plain_results = await scenario(plain)
        sealed_results = await scenario(sealed)
    finally:
        await plain.close()
        await backend.close()
    assert sealed_results == plain_results
    outcome = dict(plain_results)
    assert outcome["tools"] and outcome["usage"]["total_turns"] == 3
    assert outcome["search café"][0]["turn"] == 3
    assert outcome["branches 2"][-1]["message_count"] == 0
    assert outcome["bad branch"] == outcome["bad turn"] == "BranchError"
    assert structure_problems(plain_place.path) == []
    assert structure_problems(sealed_place.path) == []


async def test_the_same_results_as_advanced_sqlite(
    places: Any, tmp_path: Path, keyring: Keyring
) -> None:
    from encmem.backends import AdvancedSQLiteSession

    reference = AdvancedSQLiteSession(
        session_id="s", db_path=tmp_path / "reference.db", create_tables=True
    )
    ours = places("ours").backend("s")
    try:
        expected = await scenario(reference)
        assert await scenario(ours) == expected
    finally:
        await reference.close()
        await ours.close()


async def test_encrypted_rows_are_sealed_but_classified(places: Any, keyring: Keyring) -> None:
    backend = places("sealed").backend("s")
    session = EncryptedSession(underlying_session=backend, encryption_key=keyring)
    try:
        await session.add_items(TURN_1 + TURN_2)
        raw = await backend.get_items()
        assert all(item.get("__enc__") == 1 for item in raw)
        assert not any("Paris" in str(item) or "Café" in str(item) for item in raw)
        assert await backend.get_tool_usage() == [("get_weather", 1, 1)]
        assert [t["turn"] for t in await session.find_turns_by_content("café")] == [2]
        assert await backend.find_turns_by_content("café") == []
    finally:
        await backend.close()
