"""Sealing survives interruption and forking: no stored token ever opens to wrong plaintext.

A signal handler raises at arbitrary points of ``add_items`` thousands of times; every token
that reached storage must open with stock ``cryptography`` Fernet to exactly the JSON of an
item that was added, and every ``add_items`` that returned normally must have stored its item.
A process forked while other threads seal and open must seal and open in the child too.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from encmem import EncryptedSession, Keyring
from encmem._envelope import open_envelope

from .conftest import TEST_KEY

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals and fork")


class ListSession:
    """A session kept in a list: adding to it never awaits, so a coroutine runs in one step."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.rows: list[Any] = []

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return list(self.rows if limit is None else self.rows[-limit:])

    async def add_items(self, items: list[Any]) -> None:
        self.rows.extend(items)

    async def pop_item(self) -> Any | None:
        return self.rows.pop() if self.rows else None

    async def clear_session(self) -> None:
        self.rows.clear()


class Interrupted(BaseException):
    """Raised by the timer's signal handler, like KeyboardInterrupt or a soft time limit."""


def _run_now(coroutine: Coroutine[Any, Any, None]) -> None:
    """Drive a coroutine that never suspends to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    finally:
        coroutine.close()
    raise AssertionError("the coroutine suspended")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_interrupted_seals_never_store_a_wrong_token() -> None:
    inner = ListSession("interrupts")
    session = EncryptedSession(
        underlying_session=inner, encryption_key=Keyring({"k": TEST_KEY}), ttl=None
    )
    armed = False
    interrupts = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal armed, interrupts
        if armed:
            armed = False
            interrupts += 1
            raise Interrupted

    attempted: dict[str, dict[str, Any]] = {}
    acknowledged: list[str] = []
    previous = signal.signal(signal.SIGALRM, handler)
    chance = random.Random(12)
    ceiling = 0.00012  # the latest point a timer may fire; tuned below to the machine's speed
    try:
        for n in range(200_000):
            if len(acknowledged) >= 2000 and interrupts >= 2000:
                break
            if n % 500 == 499:  # keep both outcomes common, however loaded the machine is
                recent_acks = len(acknowledged) / (n + 1)
                ceiling *= 1.5 if recent_acks < 0.2 else (1 / 1.5 if recent_acks > 0.8 else 1)
            tag = f"note-{n}"
            item = {"role": "user", "content": f"patient note {tag} " + "x" * (n % 97), "n": n}
            attempted[tag] = item
            done = False
            try:
                try:
                    armed = True
                    # A one-shot timer at a random point of the write, whatever the load.
                    signal.setitimer(signal.ITIMER_REAL, chance.uniform(0.000005, ceiling))
                    _run_now(session.add_items([item]))
                    done = True
                finally:
                    armed = False
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except Interrupted:
                done = False
            if done:
                acknowledged.append(tag)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert interrupts > 1000, f"only {interrupts} interrupts landed; the test proved little"
    assert len(acknowledged) > 1000, "too few writes finished to prove anything"
    fernet = session.keyring.session_fernet("k", "interrupts")
    assert fernet is not None
    stored_tags: list[str] = []
    wrong = 0
    for envelope in inner.rows:
        plaintext = fernet.decrypt(envelope["payload"])  # stock Fernet, no ttl
        try:
            item = json.loads(plaintext)["item"]  # sealed with its place in the chain
            tag = f"note-{item['n']}"
            assert item == attempted[tag]
        except (ValueError, KeyError, TypeError, AssertionError):
            wrong += 1  # authentic under the key, yet not what was added
            continue
        assert open_envelope(envelope, session.keyring, "interrupts").item == item
        stored_tags.append(tag)
    assert wrong == 0, f"{wrong} stored tokens open to plaintext that was never added"
    assert len(stored_tags) == len(set(stored_tags))
    assert set(acknowledged) <= set(stored_tags), "an add_items that returned lost its item"


async def test_cancelled_writes_never_store_a_wrong_token(tmp_path: Any) -> None:
    from encmem.backends import SQLiteSession

    session = EncryptedSession(
        underlying_session=SQLiteSession("cancel", tmp_path / "cancel.db"),
        encryption_key=TEST_KEY,
        ttl=None,
    )
    acknowledged: list[int] = []
    cancelled = 0
    for n in range(300):
        item = {"role": "user", "content": f"cancel me {n}", "n": n}
        try:
            await asyncio.wait_for(session.add_items([item]), timeout=0.0005 * (n % 5))
            acknowledged.append(n)
        except asyncio.TimeoutError:
            cancelled += 1
    await asyncio.sleep(0.2)  # a write handed to the worker thread may still commit
    items = await session.get_items()
    numbers = [item["n"] for item in items]
    assert all(
        item == {"role": "user", "content": f"cancel me {n}", "n": n}
        for item, n in zip(items, numbers, strict=True)
    )
    assert numbers == sorted(set(numbers)) and set(acknowledged) <= set(numbers)
    assert cancelled > 0
    await session.close()


def _child_work(keyring: Keyring) -> int:
    session = EncryptedSession(
        underlying_session=ListSession("child"), encryption_key=keyring, ttl=None
    )
    item = {"role": "user", "content": "from the child"}

    async def work() -> list[Any]:
        await session.add_items([item])
        return await session.get_items()

    return 0 if asyncio.run(work()) == [item] else 1


@pytest.mark.slow
def test_fork_while_other_threads_seal_and_open() -> None:
    keyring = Keyring({"k": TEST_KEY})
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        n = 0
        try:
            while not stop.is_set():
                session_id = f"w{worker}-{n % 300}"
                key = keyring.session_key("k", session_id)
                assert key is not None
                token = key.seal(b'{"role":"user"}', int(time.time()))
                assert key.open(token) is not None
                n += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(w,), daemon=True) for w in range(3)]
    for thread in threads:
        thread.start()
    hangs = failures = 0
    try:
        for _ in range(50):
            pid = os.fork()
            if pid == 0:  # the child: seal and open, then leave at once
                try:
                    code = _child_work(keyring)
                except BaseException:
                    code = 2
                os._exit(code)
            deadline = time.monotonic() + 20
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    failures += os.waitstatus_to_exitcode(status) != 0
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    hangs += 1
                    break
                time.sleep(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert errors == []
    assert (hangs, failures) == (0, 0)
