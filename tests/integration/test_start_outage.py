"""The daemon started while PostgreSQL is down: it collects story work and spools, and once the
database answers it checks the schema, replays the spool and completes every schedule."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import structlog

from collector import clock, daemon

from ..pgproxy import PgProxy
from .conftest import MakeSettings, eventually
from .test_once import served_media, stored_media


async def test_the_daemon_starts_collects_and_spools_while_the_database_is_down(
    sim_factory: Any,
    make_settings: MakeSettings,
    fake_clock: clock.FakeClock,
    db_dsn: str,
    proxy: PgProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = await sim_factory(
        accounts=2,
        media_per_account=6,
        stories_per_account=2,
        story_lifetime=timedelta(hours=2),
        quiet_story_fraction=0.0,
    )
    settings = make_settings(
        sim,
        sections={
            "database": {"dsn": proxy.dsn, "connect_timeout": "1s", "command_timeout": "3s"},
            "schedule": {
                "story_lifetime": "2h",
                "story_final_lead": "10m",
                "account_insights_backfill_days": 2,
            },
            "web": {"port": 0},
        },
    )
    # ask the database again every 0.1 s instead of 5 s: the test waits on what it does
    monkeypatch.setattr(daemon, "DATABASE_RETRY", 0.1)
    await proxy.cut()
    stop = asyncio.Event()
    shell = daemon.Daemon(settings, clock=fake_clock, stop=stop)
    running = asyncio.create_task(shell.run())
    try:
        await eventually(lambda: any(r.kind == "ig_stories" for r in sim.stats.requests))
        await eventually(lambda: shell.writer is not None and shell.writer.spool.size > 0)
        assert not shell.database_ready
        health = shell.health()
        assert health.status == "degraded"
        assert "database unreachable" in health.reasons
        # story work and the cheap account calls first; the rest waits for the schedule
        kinds = {r.kind for r in sim.stats.requests}
        assert "ig_media_list" not in kinds
        assert "user_insights" not in kinds

        await proxy.restore()
        await eventually(lambda: shell.database_ready)
        assert shell.writer is not None
        await eventually(lambda: shell.writer is not None and shell.writer.spool.size == 0)
        await eventually(lambda: any(r.kind == "ig_media_list" for r in sim.stats.requests))
        await eventually(lambda: any(r.kind == "media_insights" for r in sim.stats.requests))
    finally:
        stop.set()
        rc = await running
    assert rc == 0
    conn = await asyncpg.connect(db_dsn)
    try:
        assert await stored_media(conn) == served_media(sim)
        names = {r["name"] for r in await conn.fetch("select name from account")}
        assert names == {a.username for a in sim.world.accounts}
    finally:
        await conn.close()


async def test_the_daemon_maintains_the_history_daily(
    sim_factory: Any,
    make_settings: MakeSettings,
    fake_clock: clock.FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = await sim_factory(accounts=1, media_per_account=2, stories_per_account=0)
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 2}})
    # a day is a moment here: the test waits on what the daemon does, not on the clock
    monkeypatch.setattr(daemon, "MAINTENANCE_EVERY", 0.05)
    stop = asyncio.Event()
    shell = daemon.Daemon(settings, clock=fake_clock, stop=stop)
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(shell.run())
        try:
            await eventually(lambda: any(e["event"] == "maintenance_done" for e in logs))
        finally:
            stop.set()
            assert await running == 0
