"""A hostile operator's config against the real ``python -m collector``: an emptied file on
SIGHUP, a token file that is a FIFO (for ``check`` and for a reload), ``check`` on an empty file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from collector import clock
from collector.simulator import server, world

from ..integration.conftest import write_config
from . import proc as proc_mod

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(240)]


async def _until(check: Callable[[], bool], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def _finished(proc: asyncio.subprocess.Process, within: float) -> tuple[int, str]:
    """The exit code and output of ``proc``; a process still running after ``within`` seconds
    is killed and reported as hung."""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(
            f"hung for {within}s:\n{out.decode(errors='replace')[-2000:]}"
        ) from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def _events(lines: list[str], name: str) -> list[dict[str, object]]:
    found = []
    for line in lines:
        if f'"event": "{name}"' in line:
            found.append(json.loads(line))
    return found


async def test_check_refuses_a_fifo_token_file_without_hanging(tmp_path: Path, db_dsn: str) -> None:
    """Finding 9: a token_file that is a FIFO hung `check` (nothing ever writes to it)."""
    cfg = world.WorldConfig(seed=21, accounts=1, media_per_account=1, stories_per_account=0)
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        config = write_config(tmp_path / "collector.toml", sim, db_dsn)
        fifo = tmp_path / "acme.fifo"
        os.mkfifo(fifo)
        text = config.read_text()
        token_file = f'token_file = "{tmp_path / sim.world.accounts[0].username}.token"'
        assert token_file in text
        config.write_text(text.replace(token_file, f'token_file = "{fifo}"'))
        code, out = await _finished(await proc_mod.spawn("check", "--config", str(config)), 60)
    assert code == 2, out
    assert f"accounts[0].token_file: {fifo} is a FIFO, not a regular file" in out
    assert "Traceback" not in out


async def test_check_on_an_empty_config_fails_before_any_database(tmp_path: Path) -> None:
    """Finding 5: `check` on an empty config exited 0, after creating an embedded cluster."""
    config = tmp_path / "collector.toml"
    config.write_text("")
    state = tmp_path / "state"
    code, out = await _finished(
        await proc_mod.spawn("check", "--config", str(config), env={"STATE_DIRECTORY": str(state)}),
        60,
    )
    assert code == 1, out
    assert out.startswith("FAIL  config")
    assert f"{config}: no enabled account (no [[accounts]] table)" in out
    assert "allow_no_accounts = true" in out
    assert not state.exists() or not any(state.iterdir()), sorted(state.rglob("*"))[:5]
    # `run` refuses the same file, with the same reason, before it touches anything
    code, out = await _finished(
        await proc_mod.spawn("run", "--config", str(config), env={"STATE_DIRECTORY": str(state)}),
        60,
    )
    assert code == 2, out
    assert "no enabled account" in out
    assert not state.exists() or not any(state.iterdir())


async def test_sighup_with_an_emptied_config_or_a_fifo_token_keeps_the_daemon_running(
    tmp_path: Path, db_dsn: str
) -> None:
    """Findings 5 and 9: SIGHUP with the config truncated to 0 bytes stopped every account
    without an error; with a FIFO token_file it froze the event loop (/healthz timed out,
    SIGTERM ignored)."""
    cfg = world.WorldConfig(seed=22, accounts=2, media_per_account=2, stories_per_account=1)
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        config = write_config(
            tmp_path / "collector.toml",
            sim,
            db_dsn,
            sections={"web": {"port": 0}, "schedule": {"account_insights_backfill_days": 1}},
        )
        good = config.read_text()
        proc = await proc_mod.spawn("run", "--config", str(config))
        output = proc_mod.Output(proc)
        lines = output.lines
        try:
            await _until(lambda: bool(_events(lines, "daemon_started")), 60)
            base = str(_events(lines, "daemon_started")[0]["web"])
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout) as http:

                async def accounts_in_health() -> int:
                    async with http.get(f"{base}/healthz") as resp:
                        assert resp.status in (200, 503)
                        body = await resp.json()
                    return sum(body["accounts"].values())

                assert await accounts_in_health() == 2

                # 1. the file emptied (an editor crash, a full disk, a bad deploy)
                config.write_text("")
                proc.send_signal(signal.SIGHUP)
                await _until(lambda: len(_events(lines, "config_reload_rejected")) >= 1, 30)
                rejected = _events(lines, "config_reload_rejected")[0]
                assert "no enabled account" in str(rejected["problem"])
                assert await accounts_in_health() == 2
                assert not _events(lines, "config_reloaded")

                # 2. a token file that is a FIFO nobody writes to
                fifo = tmp_path / "token.fifo"
                os.mkfifo(fifo)
                first = sim.world.accounts[0].username
                token_file = f'token_file = "{tmp_path / first}.token"'
                assert token_file in good
                config.write_text(good.replace(token_file, f'token_file = "{fifo}"'))
                proc.send_signal(signal.SIGHUP)
                await _until(lambda: len(_events(lines, "config_reload_rejected")) >= 2, 30)
                rejected = _events(lines, "config_reload_rejected")[1]
                assert "is a FIFO, not a regular file" in str(rejected["problem"])
                # the loop is alive: /healthz answers at once, several times
                for _ in range(3):
                    assert await accounts_in_health() == 2

                # 3. a good file is still taken
                config.write_text(good)
                proc.send_signal(signal.SIGHUP)
                await _until(lambda: bool(_events(lines, "config_reloaded")), 30)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
            await output.task
            assert code == 0, output.text()[-3000:]
            assert "Traceback" not in output.text()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
