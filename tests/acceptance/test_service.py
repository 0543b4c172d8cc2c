"""The daemon as systemd runs it: notify socket, watchdog, reload on SIGHUP, stop on SIGTERM,
and its /metrics and /healthz endpoints."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from collector import clock
from collector.simulator import server, world

from ..integration.conftest import write_config
from . import proc as proc_mod

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(data.decode())

    def seen(self, field: str) -> int:
        return sum(1 for m in self.drain() if field in m.split("\n"))

    def close(self) -> None:
        self.sock.close()


async def _until(check: Callable[[], Awaitable[bool] | bool], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_notify_watchdog_reload_and_stop(tmp_path: Path, db_dsn: str) -> None:
    cfg = world.WorldConfig(seed=9, accounts=3, media_per_account=3, stories_per_account=1)
    notify = NotifySocket(tmp_path / "notify.sock")
    lines: list[str] = []
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        first, second, added = sim.world.accounts
        config = tmp_path / "collector.toml"
        sections = {
            "web": {"port": 0},
            "schedule": {"account_insights_backfill_days": 1},
        }
        write_config(config, sim, db_dsn, accounts=[first, second], sections=sections)
        proc = await proc_mod.spawn(
            "run",
            "--config",
            str(config),
            env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"},
        )
        output = proc_mod.Output(proc)
        lines = output.lines
        reader = output.task
        conn = await asyncpg.connect(db_dsn)
        try:
            await _until(lambda: notify.seen("READY=1") >= 1, 30)
            # the log line is written before READY=1, but reaches us through a pipe that the
            # notify datagram can overtake
            await _until(lambda: any('"daemon_started"' in x for x in lines), 10)
            started = next(json.loads(x) for x in lines if '"daemon_started"' in x)
            base = started["web"]
            assert base.startswith("http://127.0.0.1:")
            # the watchdog is fed from the event loop, about twice per WATCHDOG_USEC
            await _until(lambda: notify.seen("WATCHDOG=1") >= 3, 10)

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/healthz") as resp:
                    health = await resp.json()
                    assert resp.status == 200, health
                    assert health["database_up"] is True

                async def counted() -> bool:
                    # the counters appear once the first jobs have called the API
                    async with http.get(f"{base}/metrics") as resp:
                        body = await resp.text()
                        assert resp.status == 200
                        return "collector_api_calls_total" in body and 'endpoint="{id}"' in body

                await _until(counted, 30)

            async def collected(uid: str) -> bool:
                return bool(
                    await conn.fetchval(
                        "select count(*) from account_snapshot where ig_user_id = $1", uid
                    )
                )

            await _until(lambda: collected(first.ig_user_id), 30)
            assert not await collected(added.ig_user_id)

            # the operator adds an account and reloads
            write_config(config, sim, db_dsn, accounts=[first, second, added], sections=sections)
            proc.send_signal(signal.SIGHUP)
            await _until(lambda: notify.seen("RELOADING=1") >= 1, 10)
            await _until(lambda: notify.seen("READY=1") >= 2, 10)
            assert any(m.startswith("MONOTONIC_USEC=") for m in "\n".join(notify.drain()).split())
            await _until(lambda: collected(added.ig_user_id), 30)

            # a broken file is rejected; the running config stays
            config.write_text(config.read_text().replace("[graph]", "[graph]\nnope = 1"))
            proc.send_signal(signal.SIGHUP)
            await _until(lambda: any("config_reload_rejected" in x for x in lines), 10)
            rejected = [x for x in lines if "config_reload_rejected" in x]
            assert any("nope" in x for x in rejected), rejected

            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            await reader
            assert notify.seen("STOPPING=1") == 1
            stopped = next(json.loads(x) for x in lines if '"daemon_stopped"' in x)
            assert stopped["spool_bytes"] == 0  # everything was flushed to the database
            assert any("STATUS=" in m for m in notify.drain())
        finally:
            if proc.returncode is None:
                proc.kill()
            await conn.close()
            notify.close()


async def test_second_signal_exits_at_once_and_keeps_buffered_rows(
    tmp_path: Path, db_dsn: str
) -> None:
    from collector import spool

    # slow answers keep requests in flight when the signals arrive
    cfg = world.WorldConfig(seed=4, accounts=3, media_per_account=3, latency=1.5)
    state = tmp_path / "state"
    lines: list[str] = []
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        config = write_config(
            tmp_path / "collector.toml",
            sim,
            db_dsn,
            sections={
                "web": {"enabled": False},
                "state": {"directory": str(state)},
                "shutdown": {"drain_timeout": "30s"},
                "schedule": {"account_insights_backfill_days": 1},
            },
        )
        proc = await proc_mod.spawn("run", "--config", str(config))
        output = proc_mod.Output(proc)
        lines = output.lines
        reader = output.task
        try:
            await _until(lambda: any('"daemon_started"' in x for x in lines), 30)
            await asyncio.sleep(4)  # a few slow jobs done, others in flight
            proc.send_signal(signal.SIGTERM)
            await _until(lambda: any('"daemon_stopping"' in x for x in lines), 10)
            t0 = asyncio.get_running_loop().time()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
            assert asyncio.get_running_loop().time() - t0 < 10  # not the 30 s drain
            await reader
        finally:
            if proc.returncode is None:
                proc.kill()
    text = "".join(lines)
    assert '"shutdown_hurried"' in text
    stopped = json.loads(next(x for x in lines if '"daemon_stopped"' in x))
    spooled = list(spool.Spool(state, max_bytes=1).batches())
    # what was buffered went to the spool (no database round trip on a hurried exit)
    assert stopped["spool_bytes"] == (state / spool.FILENAME).stat().st_size if spooled else True
    conn = await asyncpg.connect(db_dsn)
    try:
        stored = {r["media_id"] for r in await conn.fetch("select media_id from media")}
        in_spool = {m.media_id for b in spooled for m in b.media}
        listed = {s.id for a in sim.world.accounts for s in sim.world.stories_of(a.ig_user_id)}
        # the stories listed before the exit are in the database or in the spool
        assert listed
        assert listed <= stored | in_spool
    finally:
        await conn.close()
