"""The real ``python -m collector run`` as a subprocess against the simulator on the real clock.

Stories live one minute here, so within two minutes many are born, polled, finalised and expire
while the daemon runs, is killed with SIGKILL, and restarts.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collector import clock
from collector.simulator import server, world

from ..integration.conftest import write_config
from . import proc as proc_mod

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(300)]

LIFETIME = timedelta(seconds=60)
LEAD = timedelta(seconds=15)


async def _wait_for(
    check: Callable[[], Awaitable[bool]], *, within: float, every: float = 0.5
) -> None:
    """Poll ``check`` until true (real time passes here by design: stories must expire)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


async def _start(config: Path) -> asyncio.subprocess.Process:
    return await proc_mod.spawn("run", "--config", str(config))


Output = proc_mod.Output


async def test_daemon_finalises_every_story_across_a_sigkill(tmp_path: Path, db_dsn: str) -> None:
    cfg = world.WorldConfig(
        seed=11,
        accounts=20,
        media_per_account=4,
        stories_per_account=1,
        story_lifetime=LIFETIME,
        stories_per_day=86400 / 40,  # a new story every ~40 s per account
        quiet_story_fraction=0.0,
        webhook_poll_interval=None,
    )
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        config = write_config(
            tmp_path / "collector.toml",
            sim,
            db_dsn,
            sections={
                "graph": {"retry_base": 0.05, "retry_max": 0.5},
                "limits": {"max_in_flight": 16},
                "schedule": {
                    "story_lifetime": "60s",
                    "story_final_lead": "15s",
                    "story_discovery_every": "5s",
                    "story_poll_every": "20s",
                    "account_insights_backfill_days": 1,
                },
            },
        )
        conn = await asyncpg.connect(db_dsn)
        started = datetime.now(UTC)
        first = await _start(config)
        out1 = Output(first)
        try:

            async def stories_pending_final() -> bool:
                n = await conn.fetchval(
                    "select count(*) from media where is_story and final_captured_at is null"
                    " and expires_at > now() + interval '20 seconds'"
                )
                done = await conn.fetchval(
                    "select count(*) from media where final_captured_at is not null"
                )
                return bool(n >= 5 and done >= 5)

            await _wait_for(stories_pending_final, within=90)
            pending_at_kill = {
                r["media_id"]: r["expires_at"]
                for r in await conn.fetch(
                    "select media_id, expires_at from media where is_story"
                    " and final_captured_at is null and expires_at > now() + interval '5 seconds'"
                )
            }
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            await out1.task

            second = await _start(config)
            out2 = Output(second)
            try:
                last_expiry: datetime = max(pending_at_kill.values())

                async def killed_ones_expired() -> bool:
                    return datetime.now(UTC) > last_expiry + timedelta(seconds=2)

                await _wait_for(killed_ones_expired, within=120)
                ended = datetime.now(UTC)
                second.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(second.wait(), 60) == 0, out2.text()[-3000:]
            finally:
                if second.returncode is None:
                    second.kill()
                await out2.task

            # every story that expired while a daemon was collecting has its final snapshot,
            # taken inside its window, with the values the simulator served at that moment
            expired = [
                s
                for s in sim.world.stories_between(started, ended)
                if s.expires_at is not None and started + LEAD < s.expires_at <= ended
            ]
            assert len(expired) >= 20
            for story in expired:
                row = await conn.fetchrow(
                    "select final_captured_at, insights_status from media where media_id = $1",
                    story.id,
                )
                assert row is not None, f"story {story.id} never discovered"
                final = row["final_captured_at"]
                assert final is not None, (story.id, row["insights_status"], story.expires_at)
                expires_at = story.expires_at
                assert expires_at is not None
                assert expires_at - LEAD <= final < expires_at
                for m in await conn.fetch(
                    "select metric, value, captured_at from media_metric"
                    " where media_id = $1 and is_final and breakdown = ''",
                    story.id,
                ):
                    truth: Any = sim.world.media_metric(story.id, m["metric"], m["captured_at"])
                    assert m["value"] == truth, (story.id, m["metric"])
            # the stories discovered before the kill were finalised by the second process
            assert pending_at_kill
            for media_id in pending_at_kill:
                assert await conn.fetchval(
                    "select final_captured_at from media where media_id = $1", media_id
                )
            # every capture marked final lies inside its story's final window
            outside = await conn.fetchval(
                "select count(*) from media_metric mm join media m using (media_id)"
                " where mm.is_final and not (mm.captured_at >= m.expires_at - $1::interval"
                " and mm.captured_at < m.expires_at)",
                LEAD,
            )
            assert outside == 0
            profiles = await conn.fetchval("select count(*) from account_snapshot")
            assert profiles == len(sim.world.accounts)  # hourly: restart did not repeat it
            text = out2.text()
            assert '"event": "daemon_stopped"' in text
            assert "Traceback" not in out1.text() + text
        finally:
            if first.returncode is None:
                first.kill()
            await conn.close()


async def test_spool_survives_sigkill_during_an_outage(tmp_path: Path, db_dsn: str) -> None:
    from collector import spool

    from ..pgproxy import PgProxy

    proxy = PgProxy(db_dsn)
    await proxy.start()
    cfg = world.WorldConfig(
        seed=5,
        accounts=4,
        media_per_account=4,
        stories_per_account=1,
        story_lifetime=LIFETIME,
        stories_per_day=86400 / 30,
        quiet_story_fraction=0.0,
        webhook_poll_interval=None,
    )
    state = tmp_path / "state"
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        config = write_config(
            tmp_path / "collector.toml",
            sim,
            proxy.dsn,
            sections={
                "database": {"connect_timeout": 1, "command_timeout": 3},
                "graph": {"retry_base": 0.05, "retry_max": 0.5},
                "state": {"directory": str(state)},
                "schedule": {
                    "story_lifetime": "60s",
                    "story_final_lead": "15s",
                    "story_discovery_every": "3s",
                    "story_poll_every": "10s",
                    "account_insights_backfill_days": 1,
                },
            },
        )
        conn = await asyncpg.connect(db_dsn)
        proc = await _start(config)
        out = Output(proc)
        try:

            async def collected() -> bool:
                return bool(await conn.fetchval("select count(*) from media where is_story") >= 4)

            await _wait_for(collected, within=60)
            await proxy.cut()
            spool_path = state / spool.FILENAME

            async def spooled() -> bool:
                return (
                    spool_path.exists()
                    and len(list(spool.Spool(state, max_bytes=1).batches())) >= 3
                )

            await _wait_for(spooled, within=60)
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
            await out.task
            kept = list(spool.Spool(state, max_bytes=1).batches())
            assert sum(len(b.media_metrics) for b in kept) > 0
            assert "database_write_failed" in out.text()

            await proxy.restore()
            proc = await _start(config)
            out = Output(proc)

            async def replayed() -> bool:
                return not spool_path.exists()

            await _wait_for(replayed, within=60)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            await out.task
            assert '"event": "spool_replayed"' in out.text()
            for batch in kept:
                for m in batch.media_metrics:
                    value = await conn.fetchval(
                        "select value from media_metric where media_id = $1 and metric = $2"
                        " and breakdown = $3 and dimension = $4 and captured_at = $5",
                        m.media_id,
                        m.metric,
                        m.breakdown,
                        m.dimension,
                        m.captured_at,
                    )
                    assert value == m.value
                for p in batch.profiles:
                    assert (
                        await conn.fetchval(
                            "select followers_count from account_snapshot"
                            " where ig_user_id = $1 and captured_at = $2",
                            p.ig_user_id,
                            p.captured_at,
                        )
                        == p.followers_count
                    )
        finally:
            if proc.returncode is None:
                proc.kill()
            await conn.close()
            await proxy.close()
