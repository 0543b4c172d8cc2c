"""The one engine: ``run --once`` and the daemon share the runner, the plan, the writer and the
spool. Each test reproduces a way the two engines used to drift or lose rows."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from collector import clock, config, daemon, models, spool
from collector import store as store_mod
from collector.simulator import server

from ..pgproxy import PgProxy
from .conftest import MakeSettings, eventually, write_config
from .test_once import served_account, served_media, stored_media
from .test_runner import Harness


async def _once(settings: config.Settings, fake: clock.FakeClock) -> tuple[int, str]:
    out = io.StringIO()
    rc = await daemon.run_once(settings, clock=fake, out=out)
    return rc, out.getvalue()


async def test_once_with_the_database_cut_mid_pass_completes_spools_and_replays(
    sim_factory: Any,
    make_settings: MakeSettings,
    fake_clock: clock.FakeClock,
    db_dsn: str,
    proxy: PgProxy,
) -> None:
    sim = await sim_factory(accounts=4, media_per_account=60, stories_per_account=2)
    settings = make_settings(
        sim,
        sections={
            "database": {"dsn": proxy.dsn, "connect_timeout": "2s", "command_timeout": "5s"},
            "schedule": {"account_insights_backfill_days": 5},
        },
    )
    # an outage from the 40th request on, until the pass is almost over
    total = len(sim.world.accounts) * 60

    async def outage() -> None:
        await eventually(lambda: sim.stats.total_requests >= 40)
        await proxy.cut()
        await eventually(lambda: sim.stats.total_requests >= total // 2)
        await proxy.restore()

    cutter = asyncio.create_task(outage())
    rc, summary = await _once(settings, fake_clock)
    await cutter
    assert rc == daemon.EXIT_OK, summary
    for acct in sim.world.accounts:
        assert acct.username in summary
    state = settings.state.directory
    assert not (state / spool.FILENAME).exists()  # replayed, then cleared
    conn = await asyncpg.connect(db_dsn)
    try:
        assert await stored_media(conn) == served_media(sim)
        statuses = {r["status"] for r in await conn.fetch("select status from account")}
        assert statuses == {"ok"}
    finally:
        await conn.close()


async def test_once_with_the_database_down_to_the_end_exits_spooled_and_the_next_run_replays(
    sim_factory: Any,
    make_settings: MakeSettings,
    fake_clock: clock.FakeClock,
    db_dsn: str,
    proxy: PgProxy,
) -> None:
    sim = await sim_factory(accounts=2, media_per_account=10, stories_per_account=2)
    settings = make_settings(
        sim,
        sections={
            "database": {"dsn": proxy.dsn, "connect_timeout": "1s", "command_timeout": "3s"},
            "schedule": {"account_insights_backfill_days": 3},
        },
    )

    async def outage() -> None:
        await eventually(lambda: sim.stats.total_requests >= 10)
        await proxy.cut()

    cutter = asyncio.create_task(outage())
    rc, summary = await _once(settings, fake_clock)
    await cutter
    assert rc == daemon.EXIT_SPOOLED, summary
    assert "spool" in summary
    spooled = spool.Spool(settings.state.directory, max_bytes=10**9)
    assert spooled.count() > 0
    served_first = served_media(sim)
    await proxy.restore()
    fake_clock.advance(3600)
    rc, summary = await _once(settings, fake_clock)
    assert rc == daemon.EXIT_OK, summary
    assert spooled.size == 0
    conn = await asyncpg.connect(db_dsn)
    try:
        stored = await stored_media(conn)
        assert stored == served_media(sim)
        assert all(stored[k] == 1 for k in served_first)
    finally:
        await conn.close()


def _listing_limits(sim: server.Simulator) -> list[tuple[Any, str | None]]:
    return [(r.at, r.param("limit")) for r in sim.stats.requests if r.kind == "ig_stories"]


async def test_reload_applies_the_new_plan_to_the_scheduler_and_the_jobs_at_once(
    sim_factory: Any,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
    db_dsn: str,
    tmp_path: Path,
) -> None:
    sim = await sim_factory(
        accounts=2,
        media_per_account=3,
        stories_per_account=2,
        story_lifetime=timedelta(hours=2),
        stories_per_day=24.0,
        quiet_story_fraction=0.0,
    )
    path = tmp_path / "collector.toml"
    schedule = {
        "story_lifetime": "2h",
        "story_final_lead": "25m",
        "story_discovery_every": "5m",
        "story_poll_every": "30m",
        "account_insights_backfill_days": 2,
    }
    write_config(path, sim, db_dsn, sections={"schedule": schedule, "graph": {"page_size": 50}})
    settings = config.load(path, environ={})
    h = Harness(settings, store, fake_clock, sim)
    await h.start()
    try:
        start = fake_clock.now()
        await h.run_until(start + timedelta(hours=2))
        assert {limit for _, limit in _listing_limits(sim)} == {"50"}
        old_finals = await _final_leads(db_dsn)
        assert old_finals
        # taken as the window opens (stories found inside their window are finalised at once)
        assert timedelta(minutes=25) in old_finals.values()
        assert all(lead <= timedelta(minutes=25) for lead in old_finals.values())

        # the operator edits the file and sends SIGHUP (the signal only sets this event)
        schedule["story_final_lead"] = "10m"
        write_config(path, sim, db_dsn, sections={"schedule": schedule, "graph": {"page_size": 25}})
        shell = daemon.Daemon(settings, clock=fake_clock)
        shell.store, shell.writer, shell.runner = store, h.writer, h.runner
        shell.database_ready = True
        reloaded_at = fake_clock.now()
        await shell._reload()
        assert h.runner is not None
        assert h.runner.plan.story_final_lead == timedelta(minutes=10)
        assert h.runner.plan.page_size == 25

        await h.run_until(reloaded_at + timedelta(hours=2))
        later = [limit for at, limit in _listing_limits(sim) if at > reloaded_at]
        assert later
        assert set(later) == {"25"}
        new_finals = {k: v for k, v in (await _final_leads(db_dsn)).items() if k not in old_finals}
        assert new_finals
        # the finals queued before the reload moved to the new window too
        assert all(lead <= timedelta(minutes=10) for lead in new_finals.values())
        assert timedelta(minutes=10) in new_finals.values()
    finally:
        await h.close()


async def _final_leads(db_dsn: str) -> dict[str, timedelta]:
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = await conn.fetch(
            "select media_id, expires_at - final_captured_at as lead from media"
            " where final_captured_at is not null"
        )
    finally:
        await conn.close()
    return {r["media_id"]: r["lead"] for r in rows}


def _polled_media(sim: server.Simulator) -> set[str]:
    polled: set[str] = set()
    for r in sim.stats.requests:
        if r.kind == "media_insights":
            polled.add(r.path.split("/")[2])
    return polled


async def test_media_insights_max_age_holds_for_run_once(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock
) -> None:
    sim = await sim_factory(accounts=2, media_per_account=40, stories_per_account=0)
    settings = make_settings(
        sim,
        sections={
            "schedule": {"media_insights_max_age": "30d", "account_insights_backfill_days": 2}
        },
    )
    rc, summary = await _once(settings, fake_clock)
    assert rc == 0, summary
    _assert_max_age(sim, fake_clock, timedelta(days=30))


async def test_media_insights_max_age_holds_for_the_daemon(
    sim_factory: Any,
    make_settings: MakeSettings,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
) -> None:
    sim = await sim_factory(accounts=2, media_per_account=40, stories_per_account=0)
    settings = make_settings(
        sim,
        sections={
            "schedule": {"media_insights_max_age": "30d", "account_insights_backfill_days": 2}
        },
    )
    h = Harness(settings, store, fake_clock, sim)
    await h.start()
    try:
        await h.run_until(fake_clock.now() + timedelta(days=2))
    finally:
        await h.close()
    _assert_max_age(sim, fake_clock, timedelta(days=30))


def _assert_max_age(sim: server.Simulator, fake: clock.FakeClock, max_age: timedelta) -> None:
    polled = _polled_media(sim)
    assert polled, "no media polled at all"
    posted = {
        m.id: m.posted_at for a in sim.world.accounts for m in sim.world.media_of(a.ig_user_id)
    }
    old = {mid for mid, at in posted.items() if fake.now() - at >= max_age + timedelta(days=2)}
    assert old, "the world has no media older than the max age"
    assert not polled & old
    young = {mid for mid, at in posted.items() if fake.now() - at < max_age - timedelta(days=2)}
    assert young <= polled


async def test_a_job_cancelled_at_the_drain_deadline_hands_over_what_it_collected(
    sim_factory: Any,
    make_settings: MakeSettings,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    sim = await sim_factory(accounts=1, media_per_account=3, stories_per_account=0)
    settings = make_settings(
        sim,
        sections={
            # 90 days of account insights: several batches of 50 operations, one job
            "schedule": {"account_insights_backfill_days": 90},
            "limits": {"max_in_flight": 1},
            "graph": {"timeout": 120},
        },
    )
    # the first batch answers, the second hangs until the drain deadline cancels the job
    sim.faults.script(r"^/v25\.0/?$", ["ok", "timeout"])
    h = Harness(settings, store, fake_clock, sim)
    await h.start()
    try:
        assert h.runner is not None
        run = h.runner
        stop = asyncio.Event()
        task = asyncio.create_task(run.run(stop))
        await eventually(lambda: sim.faults.pending == 0)  # the second batch is in flight
        assert run.in_flight == 1
        stop.set()
        await task
        assert await run.drain(0.0) == 1
        sim.faults.released.set()
        await h.writer.flush()
        served = served_account(sim)
        assert served, "the first batch served nothing"
        conn = await asyncpg.connect(db_dsn)
        try:
            rows = await conn.fetch(
                "select ig_user_id, metric, breakdown, dimension, end_time, value"
                " from account_metric"
            )
        finally:
            await conn.close()
        stored = {
            (r["ig_user_id"], r["metric"], r["breakdown"], r["dimension"], r["end_time"]): r[
                "value"
            ]
            for r in rows
        }
        assert stored == served
    finally:
        await h.close()


async def test_the_runner_holds_only_live_stories_over_days(
    sim_factory: Any,
    make_settings: MakeSettings,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
) -> None:
    sim = await sim_factory(
        accounts=3,
        media_per_account=2,
        stories_per_account=3,
        story_lifetime=timedelta(hours=2),
        stories_per_day=24.0,
        quiet_story_fraction=0.0,
    )
    settings = make_settings(
        sim,
        sections={
            "schedule": {
                "story_lifetime": "2h",
                "story_final_lead": "10m",
                "story_discovery_every": "10m",
                "story_poll_every": "30m",
                "account_insights_backfill_days": 2,
            }
        },
    )
    h = Harness(settings, store, fake_clock, sim)
    await h.start()
    try:
        assert h.runner is not None
        start = fake_clock.now()
        end = start + timedelta(days=3)
        await h.run_until(end)
        now = fake_clock.now()
        held = {
            media_id
            for state in h.runner.accounts.values()
            for media_id, m in state.media.items()
            if m.expires_at is not None
        }
        live = {
            s.id
            for a in sim.world.accounts
            for s in sim.world.stories_of(a.ig_user_id)
            if s.expires_at is not None and s.posted_at <= now < s.expires_at
        }
        total = sum(
            1
            for s in sim.world.stories_between(start, end)
            if s.expires_at is not None and s.expires_at <= end
        )
        assert total > 100  # three days of stories went through
        assert held <= live
        assert len(held) <= len(live)
        assert len(h.runner._expiries) <= 2 * len(live) + 10
        # every story that could have a final got one (Meta shows none under five viewers)
        assert h.runner.stats.stories_missed == h.runner.stats.missed_by_reason["below_threshold"]
    finally:
        await h.close()


async def test_a_pass_verdict_is_the_worst_outcome_of_its_jobs(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=2, media_per_account=5, stories_per_account=1)
    bad = sim.world.accounts[0]
    # media discovery of one account fails through every retry; its other jobs succeed
    sim.faults.script(rf"{bad.ig_user_id}/media", ["http500"] * 50)
    settings = make_settings(
        sim,
        sections={"schedule": {"account_insights_backfill_days": 2}, "graph": {"max_retries": 1}},
    )
    rc, summary = await _once(settings, fake_clock)
    assert rc == daemon.EXIT_FAILED, summary
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = {r["ig_user_id"]: r["status"] for r in await conn.fetch("select * from account")}
    finally:
        await conn.close()
    assert rows[bad.ig_user_id] == str(models.AccountStatus.FAILING)
    assert {v for k, v in rows.items() if k != bad.ig_user_id} == {"ok"}
    line = next(line for line in summary.splitlines() if bad.username in line)
    assert "failing" in line


async def test_stopping_an_account_while_its_job_runs_leaves_the_runner_going(
    sim_factory: Any,
    make_settings: MakeSettings,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
) -> None:
    # the lease of an account is lost (cluster mode) while a job of it waits on the API: the
    # job is cancelled, and the loop that reaps finished jobs must not take that for a crash
    sim = await sim_factory(accounts=1, media_per_account=3, stories_per_account=0)
    settings = make_settings(
        sim,
        sections={"limits": {"max_in_flight": 1}, "graph": {"timeout": 120}},
    )
    sim.faults.script(r".", ["timeout"])  # the first request hangs
    h = Harness(settings, store, fake_clock, sim)
    await h.start()
    try:
        assert h.runner is not None
        run = h.runner
        stop = asyncio.Event()
        task = asyncio.create_task(run.run(stop))
        await eventually(lambda: sim.faults.pending == 0 and run.in_flight == 1)
        (uid,) = list(run.accounts)
        await run.stop_accounts([uid])
        assert run.accounts == {}
        await asyncio.sleep(0)  # the reaping loop runs once more
        assert not task.done(), task.exception() if task.done() else None
        stop.set()
        await task
    finally:
        sim.faults.released.set()
        await h.close()
