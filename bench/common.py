"""What the benchmarks share: the simulator process, a fresh database, a measured subprocess.

Everything stays on 127.0.0.1: the simulator binds there and the collector configs written
here point at it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
SIMHOST = ROOT / "bench" / "simhost.py"
#: the maintenance DSN (as the tests find it); bench databases are created next to it
ADMIN_DSN = os.environ.get("COLLECTOR_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
#: a budget no benchmark reaches, so throttling never distorts a timing
HUGE_BUDGET = 10**9


@dataclasses.dataclass
class Simulator:
    """A running simulator process and what it printed."""

    proc: subprocess.Popen[str]
    base_url: str
    config_toml: str
    accounts: list[dict[str, str]]

    def stats(self) -> dict[str, Any]:
        """Its counters so far (SIGUSR1; the in-flight peak restarts at each call)."""
        self.proc.send_signal(signal.SIGUSR1)
        return self._read_stats()

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then the ``# stats`` line it prints on the way out."""
        self.proc.terminate()
        try:
            return self._read_stats()
        finally:
            self.proc.wait(timeout=60)

    def _read_stats(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the simulator stopped without printing its stats")
            if line.startswith("# stats "):
                stats: dict[str, Any] = json.loads(line[len("# stats ") :])
                return stats


def start_simulator(
    *,
    accounts: int,
    media: int,
    stories: int,
    latency_ms: float,
    account_budget: int = HUGE_BUDGET,
    extra: list[str] | None = None,
) -> Simulator:
    """``bench/simhost.py`` (= ``python -m collector simulate`` + counters) on a free port."""
    cmd = [
        sys.executable,
        str(SIMHOST),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--accounts",
        str(accounts),
        "--media",
        str(media),
        "--stories",
        str(stories),
        "--latency-ms",
        str(latency_ms),
        "--account-budget",
        str(account_budget),
        *(extra or []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    lines: list[str] = []
    tokens = 0
    deadline = time.monotonic() + 120
    while tokens < accounts:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the simulator exited before printing its config: {lines[:3]}")
        lines.append(line)
        tokens += line.startswith("token = ")
    text = "".join(line for line in lines if not line.startswith("#"))
    cfg = tomllib.loads(text)
    base_url = cfg["graph"]["base_url"]
    if not base_url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"refusing a simulator that is not on loopback: {base_url}")
    return Simulator(proc, base_url, text, cfg["accounts"])


def database_name(name: str) -> str:
    """``name`` plus ``$BENCH_DB_SUFFIX``, so that benchmarks run from two checkouts at once on
    one server do not drop each other's database."""
    return name + os.environ.get("BENCH_DB_SUFFIX", "")


async def fresh_database(name: str) -> str:
    """Drop and create database ``name`` (see ``database_name``) next to the maintenance
    database; its DSN."""
    name = database_name(name)
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
        await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


async def drop_database(name: str) -> None:
    name = database_name(name)
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()


@dataclasses.dataclass
class Measured:
    """A finished child process: exit code, wall seconds, its own CPU seconds and peak RSS."""

    returncode: int
    wall: float
    user: float
    system: float
    maxrss_mb: float
    stdout: str
    stderr: str

    @property
    def cpu(self) -> float:
        return self.user + self.system


def run_measured(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Measured:
    """Run ``cmd`` and read its rusage with ``wait4`` (this child only, not its siblings)."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd or ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=proc.returncode,
            wall=wall,
            user=usage.ru_utime,
            system=usage.ru_stime,
            maxrss_mb=usage.ru_maxrss / 1024,  # Linux reports KiB
            stdout=out.read(),
            stderr=err.read(),
        )


def log_events(text: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` whose ``event`` is ``event``."""
    found = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(record)
    return found


def machine() -> str:
    """One line: CPU model, cores, memory, Python, PostgreSQL is reported by the caller."""
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as fh:
        kib = int(fh.readline().split()[1])
    return (
        f"{model}, {os.cpu_count()} cores, {kib / 1024**2:.0f} GiB, "
        f"Python {platform.python_version()}"
    )


def git_commit(root: Path = ROOT) -> str:
    """The commit measured: ``HEAD`` of ``root`` (``+dirty`` when collector code is edited), or,
    for a snapshot without ``.git`` (``git archive HEAD``), ``$BENCH_COMMIT``."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return os.environ.get("BENCH_COMMIT", "unknown") + " (snapshot)"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "collector", "sql"],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return done.stdout.strip() + ("+dirty" if dirty else "")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (right-aligned numbers are the reader's job)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
