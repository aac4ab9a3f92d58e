"""Raw limits for context: Fernet decrypt alone, json.loads alone, sqlite3 executemany alone."""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from pathlib import Path

import workload
from cryptography.fernet import Fernet
from timing import rate


def fernet_decrypt(count: int) -> float:
    """Items/s of Fernet.decrypt over ``count`` tokens of workload items (no JSON, no I/O)."""
    fernet = Fernet(Fernet.generate_key())
    tokens = [fernet.encrypt(json.dumps(i).encode()) for i in workload.items(count)]
    start = time.perf_counter()
    for token in tokens:
        fernet.decrypt(token)
    return rate(count, time.perf_counter() - start)


def json_loads(count: int) -> float:
    """Items/s of json.loads over ``count`` workload items."""
    texts = [json.dumps(i) for i in workload.items(count)]
    start = time.perf_counter()
    for text in texts:
        json.loads(text)
    return rate(count, time.perf_counter() - start)


def sqlite_executemany(count: int, workdir: Path) -> float:
    """Items/s of one executemany of ``count`` 340-byte rows in one WAL transaction."""
    conn = sqlite3.connect(workdir / "raw.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE m (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT, data TEXT)"
        )
        conn.execute("CREATE INDEX m_sid ON m (session_id, id)")
        rows = [("bench", "x" * 340) for _ in range(count)]
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO m (session_id, data) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
        return rate(count, time.perf_counter() - start)
    finally:
        conn.close()


def sqlite_commit_ms(commits: int, workdir: Path) -> float:
    """Median ms of one single-row write transaction (WAL, synchronous=FULL): the fsync floor
    under every add_items turn and every pop_item."""
    conn = sqlite3.connect(workdir / "commit.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, data TEXT)")
        samples = []
        for _ in range(commits):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO m (data) VALUES (?)", ("x" * 340,))
            conn.execute("COMMIT")
            samples.append(time.perf_counter() - start)
        return 1e3 * statistics.median(samples)
    finally:
        conn.close()
