"""The systemd unit's own command lines, run the way systemd runs them: ``ExecStartPre=``
(migrations) and ``ExecStart=`` (the daemon) with the credentials ``LoadCredential=`` hands over,
a watchdog kill of the whole unit with its embedded PostgreSQL, and the restart policy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import asyncpg
import pytest

from collector import clock, config, embedded, schema
from collector.simulator import server, world

from ..integration.conftest import toml_value
from .test_service import NotifySocket, _until

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "collector.service"
VENV_PYTHON = "/opt/collector/venv/bin/python"

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


def _installed() -> bool:
    try:
        embedded.bin_dir()
    except embedded.EmbeddedError:
        return False
    return True


def directives() -> dict[str, list[str]]:
    """``Key=value`` lines of the unit (comments and section headers left out)."""
    found: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def command(key: str, config_path: Path | None = None, *, main_pid: int | None = None) -> list[str]:
    """The unit's ``key`` command line, with this interpreter, this config file, this $MAINPID."""
    (line,) = directives()[key]
    args = shlex.split(line)
    assert args[0] == VENV_PYTHON, line
    args[0] = sys.executable
    if config_path is not None:
        args[args.index("--config") + 1] = str(config_path)
    if main_pid is not None:
        args = [str(main_pid) if a == "$MAINPID" else a for a in args]
    return args


def unit_environment(credentials: Path, **extra: str) -> dict[str, str]:
    """What systemd gives the unit's processes: its Environment= lines and the credentials."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COLLECTOR_") and k not in ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET")
    }
    for assignment in directives()["Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value
    env["CREDENTIALS_DIRECTORY"] = str(credentials)
    return env | extra


async def run(args: list[str], env: Mapping[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd="/",
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


class Daemon:
    """``ExecStart=`` as a subprocess, its output collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, args: list[str], env: Mapping[str, str]) -> Daemon:
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd="/",
            env=dict(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await self.reader
        return code

    def text(self) -> str:
        return "".join(self.lines)


def write_unit_config(
    directory: Path, sim: server.Simulator, *, dsn: str | None, state: Path
) -> tuple[Path, Path]:
    """A config as the README recommends (every secret a ``*_credential``) and the credentials
    directory systemd would fill from ``LoadCredential=``; no ``dsn``: the embedded server."""
    credentials = directory / "credentials"
    credentials.mkdir()
    lines = ["[database]"]
    if dsn is not None:
        (credentials / "database_dsn").write_text(dsn + "\n")
        lines.append('dsn_credential = "database_dsn"')
    lines += [
        "[graph]",
        f"base_url = {toml_value(sim.base_url)}",
        "retry_base = 0.001",
        "retry_max = 0.01",
        "timeout = 5",
    ]
    if sim.world.config.app_secret:
        (credentials / "app_secret").write_text(sim.world.config.app_secret + "\n")
        lines.append('app_secret_credential = "app_secret"')
    lines += [
        "[schedule]",
        "account_insights_backfill_days = 1",
        "[web]",
        "port = 0",
        "[log]",
        'format = "json"',
        "[state]",
        f"directory = {toml_value(str(state))}",
    ]
    for acct in sim.world.accounts:
        (credentials / f"{acct.username}.token").write_text(acct.token + "\n")
        lines += [
            "[[accounts]]",
            f"name = {toml_value(acct.username)}",
            f"ig_user_id = {toml_value(acct.ig_user_id)}",
            f"token_credential = {toml_value(acct.username + '.token')}",
        ]
    path = directory / "collector.toml"
    path.write_text("\n".join(lines) + "\n")
    config.load(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})  # it is valid
    return path, credentials


def test_restart_policy_outlasts_a_long_outage() -> None:
    """Restarts never stop (no start limit), spaced by RestartSec; failures and the watchdog
    restart, a clean stop does not."""
    unit = directives()
    assert unit["StartLimitIntervalSec"] == ["0"]
    assert "StartLimitBurst" not in unit
    assert unit["Restart"] == ["on-failure"]
    (restart_sec,) = unit["RestartSec"]
    assert config.parse_duration(restart_sec).total_seconds() >= 5
    assert unit["WatchdogSec"]
    # migrations run inside the unit, where the credentials are
    assert "migrate" in shlex.split(unit["ExecStartPre"][0])


async def test_migrations_run_by_the_unit_with_its_credentials(
    tmp_path: Path, empty_db_dsn: str
) -> None:
    """README step "the schema": the unit's ExecStartPre migrates with the *_credential keys
    (which a root shell cannot resolve), then ExecStart becomes READY."""
    cfg = world.WorldConfig(seed=5, accounts=1, media_per_account=2, stories_per_account=1)
    notify = NotifySocket(tmp_path / "notify.sock")
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        path, credentials = write_unit_config(
            tmp_path, sim, dsn=empty_db_dsn, state=tmp_path / "state"
        )
        env = unit_environment(credentials)

        # outside the unit, the credentials cannot be found: the README no longer says so
        outside = {k: v for k, v in env.items() if k != "CREDENTIALS_DIRECTORY"}
        code, out = await run(
            [sys.executable, "-m", "collector", "migrate", "-c", str(path)], outside
        )
        assert code == 2
        assert "$CREDENTIALS_DIRECTORY is not set" in out

        code, out = await run(command("ExecStartPre", path), env)
        assert code == 0, out
        (line,) = out.splitlines()  # one JSON line, no plain sentence repeating it
        assert json.loads(line)["applied"] == [m.name for m in schema.migrations()]
        code, out = await run(command("ExecStartPre", path), env)
        assert code == 0, out
        (line,) = out.splitlines()
        assert json.loads(line)["applied"] == []

        daemon = await Daemon.start(
            command("ExecStart", path), env | {"NOTIFY_SOCKET": str(notify.path)}
        )
        try:
            await _until(lambda: notify.seen("READY=1") >= 1, 60)
            # systemctl reload: the unit's ExecReload= (no /bin/kill on a minimal Debian)
            code, out = await run(command("ExecReload", main_pid=daemon.proc.pid), env)
            assert code == 0, out
            await _until(lambda: notify.seen("RELOADING=1") >= 1, 30)
            await _until(lambda: notify.seen("READY=1") >= 2, 30)
        finally:
            code = await daemon.stop()
            notify.close()
        assert code == 0, daemon.text()
        assert empty_db_dsn not in daemon.text()


async def test_a_database_down_at_start_does_not_keep_the_unit_down(tmp_path: Path) -> None:
    """ExecStartPre's ``--if-reachable``: an unreachable database is one warning line and exit
    0 (the daemon starts and waits for it); plain ``migrate`` fails with one clear line."""
    cfg = world.WorldConfig(seed=5, accounts=1, media_per_account=1, stories_per_account=0)
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        secret_dsn = f"postgresql://collector:s3cret-pw@127.0.0.1:{embedded.free_port()}/collector"
        path, credentials = write_unit_config(
            tmp_path, sim, dsn=secret_dsn, state=tmp_path / "state"
        )
        env = unit_environment(credentials, COLLECTOR_DATABASE__CONNECT_TIMEOUT="2s")

        code, out = await run(command("ExecStartPre", path), env)
        assert code == 0, out
        (line,) = out.splitlines()
        event = json.loads(line)
        assert event["event"] == "migrations_skipped"
        assert "cannot connect" in event["reason"]

        plain = [sys.executable, "-m", "collector", "migrate", "--config", str(path)]
        code, out = await run(plain, env)
        assert code == 1
        # one line, the JSON event: no plain "error:" line repeating it
        (line,) = out.splitlines()
        failed = json.loads(line)
        assert failed["event"] == "command_failed"
        assert "cannot connect" in failed["message"]
        assert "s3cret-pw" not in out


@pytest.fixture
def state_base() -> Iterator[Path]:
    """A directory the embedded server's user can traverse (tmp_path is 0700, as root)."""
    path = Path(tempfile.mkdtemp(prefix="collector-unit-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        pg = embedded.EmbeddedPostgres(path / "state" / "postgres")
        pg.stop()
        shutil.rmtree(path, ignore_errors=True)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return embedded._process_state(pid) in ("Z", "X")


async def _snapshots(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await conn.fetchval("select count(*) from account_snapshot"))
    finally:
        await conn.close()


async def _collected(dsn: str) -> bool:
    return await _snapshots(dsn) > 0


@pytest.mark.skipif(not _installed(), reason="pip install 'instagram-insights-collector[embedded]'")
async def test_embedded_server_recovers_after_a_watchdog_kill(
    tmp_path: Path, state_base: Path
) -> None:
    """A watchdog timeout SIGKILLs the whole unit, the embedded PostgreSQL with the daemon (a
    clean stop lets the daemon stop it). The next start recovers the cluster and its rows."""
    cfg = world.WorldConfig(seed=6, accounts=1, media_per_account=2, stories_per_account=1)
    state = state_base / "state"
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        path, credentials = write_unit_config(tmp_path, sim, dsn=None, state=state)
        env = unit_environment(credentials)
        pg = embedded.EmbeddedPostgres(state / "postgres")

        code, out = await run(command("ExecStartPre", path), env)
        assert code == 0, out
        assert not pg.status().running  # migrate started and stopped its own server

        notify = NotifySocket(tmp_path / "notify.sock")
        daemon = await Daemon.start(
            command("ExecStart", path), env | {"NOTIFY_SOCKET": str(notify.path)}
        )
        try:
            await _until(lambda: notify.seen("READY=1") >= 1, 60)
            status = pg.status()
            assert status.running
            assert status.pid is not None
            dsn = pg.dsn("collector")
            await _until(lambda: _collected(dsn), 60)
            before = await _snapshots(dsn)
            # what systemd does to the unit's cgroup: SIGKILL to every process at once
            victims = [daemon.proc.pid, status.pid, *_children(status.pid)]
            for pid in victims:
                # a backend may end between the listing and the kill
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.wait_for(daemon.proc.wait(), 30)
            await daemon.reader
            await _until(lambda: all(_dead(pid) for pid in victims), 30)
        finally:
            if daemon.proc.returncode is None:
                daemon.proc.kill()
            notify.close()

        # systemd restarts the unit: ExecStartPre, then ExecStart
        code, out = await run(command("ExecStartPre", path), env)
        assert code == 0, out
        notify = NotifySocket(tmp_path / "notify-again.sock")
        again = await Daemon.start(
            command("ExecStart", path), env | {"NOTIFY_SOCKET": str(notify.path)}
        )
        try:
            await _until(lambda: notify.seen("READY=1") >= 1, 60)
            assert await _snapshots(dsn) >= before
            assert pg.status().pid not in victims
        finally:
            code = await again.stop()
            notify.close()
        assert code == 0, again.text()
        assert not pg.status().running  # a clean stop stops the server too
        log = (state / "postgres" / "postgres.log").read_text()
        assert "database system was interrupted" in log or "not properly shut down" in log
