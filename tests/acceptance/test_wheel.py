"""The built wheel, installed in a fresh virtualenv: its ``collector`` command runs ``check``.

Built once, offline (``pip wheel --no-deps --no-build-isolation``) from a copy of the sources,
so the checkout gets no ``build/`` directory. The fresh venv gets the collector from the wheel
alone; its dependencies come from this environment through a ``.pth`` line (no download), so
what is tested is the wheel's content, metadata and entry point, not pip's resolver.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from collector import clock
from collector.simulator import server, world

from ..integration.conftest import write_config

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "instagram-insights-collector"

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTOR_", "PYTHON"))}
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def _build_and_install(tmp_path: Path) -> Path:
    """The fresh venv's bin directory, the wheel installed in it."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in ("collector", "sql"):
        shutil.copytree(ROOT / tree, source / tree, ignore=ignore)
    dist = tmp_path / "dist"
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--wheel-dir",
        dist,
        source,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith("instagram_insights_collector-")

    venv = tmp_path / "fresh"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    purelib = _run(
        python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
    ).stdout.strip()
    # the dependencies (aiohttp, asyncpg, …) from this environment, after the venv's own
    (Path(purelib) / "collector-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


async def test_the_wheel_installs_and_its_command_runs_check(tmp_path: Path, db_dsn: str) -> None:
    bin_dir = await asyncio.to_thread(_build_and_install, tmp_path)
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing importable by accident
    elsewhere.mkdir()

    version = _run(bin_dir / "collector", "--version", cwd=elsewhere)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().startswith("collector ")
    where = _run(
        bin_dir / "python",
        "-c",
        "import collector, importlib.metadata as m; "
        f"print(collector.__file__); print(m.version({DISTRIBUTION!r}))",
        cwd=elsewhere,
    )
    assert where.returncode == 0, where.stderr
    module_file, dist_version = where.stdout.split()
    assert Path(module_file).is_relative_to(bin_dir.parent)  # from the wheel, not the checkout
    assert version.stdout.split()[1] == dist_version

    cfg = world.WorldConfig(seed=3, accounts=1, media_per_account=1, stories_per_account=0)
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        config_path = write_config(tmp_path / "collector.toml", sim, db_dsn)
        check = await asyncio.to_thread(
            _run, bin_dir / "collector", "check", "--config", config_path, cwd=elsewhere
        )
    output = check.stdout + check.stderr
    # it ran: the database answered and the packaged migrations matched its schema
    assert check.returncode in (0, 1), output
    assert "Traceback" not in output
    lines = check.stdout.splitlines()
    assert any(line.startswith("ok") and "database" in line for line in lines), output
    assert any(
        line.startswith("ok") and "schema" in line and "up to date" in line for line in lines
    )
