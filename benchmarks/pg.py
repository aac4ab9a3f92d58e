"""The PostgreSQL test server: ENCMEM_TEST_PG_URL if set, else one from scripts/pg-server."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    url: str | None
    note: str
    stop_dir: str | None = None

    def stop(self) -> None:
        if self.stop_dir is not None:
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "pg-server"), "stop", self.stop_dir],
                capture_output=True,
                timeout=60,
                check=False,
            )
            self.stop_dir = None


def find(start: bool) -> Server:
    """A server to use, or a reason there is none."""
    url = os.environ.get("ENCMEM_TEST_PG_URL")
    if url:
        return Server(url, "PostgreSQL from ENCMEM_TEST_PG_URL")
    script = ROOT / "scripts" / "pg-server"
    if not start:
        return Server(None, "PostgreSQL skipped (no ENCMEM_TEST_PG_URL; not started in this mode)")
    if not script.exists():
        return Server(None, "PostgreSQL skipped (no ENCMEM_TEST_PG_URL and no scripts/pg-server)")
    try:
        done = subprocess.run(
            ["bash", str(script), "start"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Server(None, "PostgreSQL skipped (scripts/pg-server start timed out)")
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in done.stdout.splitlines()
        if line.startswith("export ") and "=" in line
    )
    url = exports.get("ENCMEM_TEST_PG_URL", "").strip("'\"")
    if done.returncode != 0 or not url:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Server(None, f"PostgreSQL skipped (scripts/pg-server start failed: {tail})")
    return Server(
        url,
        "PostgreSQL from scripts/pg-server (fsync=off, synchronous_commit=off)",
        exports.get("ENCMEM_TEST_PG_DIR"),
    )


async def reset(url: str) -> None:
    """Empty the public schema so each PostgreSQL cell starts from nothing."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            await conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await engine.dispose()
