"""`pip install 'encmem[sqlalchemy]'` alone is enough for from_url on aiosqlite and asyncpg.

The Agents SDK's own extra misses greenlet and aiosqlite; this proves ours in a fresh venv
(no system site-packages), so it needs the package registry and takes about a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .pg import PG_URL_ENV, drop_tables, unique_tables

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = textwrap.dedent(
    """
    import asyncio, os, sys
    from encmem.backends import SQLAlchemySession

    async def round_trip(url, **kwargs):
        items = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hé"}]
        session = SQLAlchemySession.from_url("fresh-venv", url=url, create_tables=True, **kwargs)
        async with session:
            await session.add_items(items)
            assert await session.get_items() == items, "round trip failed on " + url
        print("ok", url.split(":")[0])

    asyncio.run(round_trip("sqlite+aiosqlite:///" + sys.argv[1]))
    pg = os.environ.get("ENCMEM_TEST_PG_URL")
    if pg:
        prefix = sys.argv[2]
        asyncio.run(round_trip(pg, sessions_table=prefix + "_s", messages_table=prefix + "_m"))
    """
)


def _copy_source(destination: Path) -> Path:
    """The project as pip would see it, copied so building it leaves the checkout untouched."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", ".*")
    target = destination / "src"
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "encmem", "backends"):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, target / name)
    return target


@pytest.mark.slow
@pytest.mark.pg
def test_the_sqlalchemy_extra_alone_brings_every_driver(tmp_path: Path) -> None:
    source = _copy_source(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{source}[sqlalchemy]",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"

    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    for requirement in ("sqlalchemy", "greenlet", "asyncpg", "aiosqlite"):
        assert f"{requirement}==" in freeze, f"{requirement} was not installed by the extra"
    assert "openai-agents" not in freeze

    tables = unique_tables()
    prefix = tables["sessions_table"].removesuffix("_sessions")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run(
        [str(python), "-c", SNIPPET, str(tmp_path / "fresh.db"), prefix],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 0, f"snippet failed:\n{run.stdout}\n{run.stderr}"
    assert "ok sqlite+aiosqlite" in run.stdout
    pg = os.environ.get(PG_URL_ENV)
    if pg:
        drop_tables(pg, [prefix + "_m", prefix + "_s"])
        assert "ok postgresql+asyncpg" in run.stdout
