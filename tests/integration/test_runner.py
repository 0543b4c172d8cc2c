"""The daemon's job runner against the simulator, stepped through simulated days on a fake clock.

Each step sets the shared clock to the scheduler's next wake-up and runs everything due, so a
day of collection takes a second of real time and every decision is deterministic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from collector import clock, config, metrics_catalog, runner, wiring
from collector import store as store_mod
from collector import writer as writer_mod
from collector.simulator import server

from .conftest import MakeSettings


class Harness:
    """A runner wired like the daemon, plus the stepping loop."""

    def __init__(
        self,
        settings: config.Settings,
        st: store_mod.Store,
        fake: clock.FakeClock,
        sim: server.Simulator,
    ) -> None:
        self.settings = settings
        self.store = st
        self.fake = fake
        self.sim = sim
        self.limiter = wiring.build_limiter(settings)
        self.client = wiring.build_client(settings, fake, self.limiter)
        self.writer: writer_mod.Writer = wiring.build_writer(settings, st)
        self.runner: runner.Runner | None = None

    async def start(self) -> runner.Runner:
        await wiring.prepare(self.settings, self.store, self.fake)
        catalog = await wiring.load_catalog(self.settings, self.store)
        self.runner = wiring.build_runner(
            self.settings,
            store=self.store,
            client=self.client,
            limiter=self.limiter,
            writer=self.writer,
            catalog=catalog,
            clock=self.fake,
        )
        await self.runner.set_accounts(wiring.targets_of(self.settings))
        return self.runner

    async def step(self) -> None:
        """Everything due now, written."""
        assert self.runner is not None
        await self.runner.run_until_idle()
        await self.writer.flush()

    async def run_until(self, end: datetime, *, max_steps: int = 100_000) -> int:
        assert self.runner is not None
        steps = 0
        while steps < max_steps:
            await self.step()
            wake = self.runner.scheduler.next_wakeup(self.fake.now())
            if wake is None or wake > end:
                if self.fake.now() < end:
                    self.fake.set(end)
                    await self.step()
                return steps
            self.fake.set(max(wake, self.fake.now()))
            steps += 1
        raise AssertionError("too many steps")

    async def close(self) -> None:
        await self.client.close()


@pytest.fixture
async def harness_factory(
    store: store_mod.Store, fake_clock: clock.FakeClock
) -> AsyncIterator[Any]:
    made: list[Harness] = []

    async def make(settings: config.Settings, sim: server.Simulator) -> Harness:
        h = Harness(settings, store, fake_clock, sim)
        made.append(h)
        await h.start()
        return h

    yield make
    for h in made:
        await h.close()


def _story_settings(**schedule: Any) -> dict[str, dict[str, Any]]:
    base = {
        "story_lifetime": "2h",
        "story_final_lead": "10m",
        "story_discovery_every": "10m",
        "story_poll_every": "30m",
        "account_insights_backfill_days": 2,
    }
    base.update(schedule)
    return {"schedule": base}


async def test_every_story_gets_a_final_snapshot_inside_its_window(
    sim_factory: Any,
    make_settings: MakeSettings,
    harness_factory: Any,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    sim = await sim_factory(
        accounts=5,
        media_per_account=8,
        stories_per_account=2,
        story_lifetime=timedelta(hours=2),
        stories_per_day=24.0,
        quiet_story_fraction=0.0,
    )
    settings = make_settings(sim, sections=_story_settings())
    h = await harness_factory(settings, sim)
    start = fake_clock.now()
    end = start + timedelta(hours=8)
    await h.run_until(end)

    conn = await asyncpg.connect(db_dsn)
    try:
        lead = timedelta(minutes=10)
        # every story that was live at start or posted before the last discovery that could
        # still catch it, and that expired before the end, must have its final snapshot
        stories = [
            s
            for s in sim.world.stories_between(start, end)
            if s.expires_at is not None and s.expires_at <= end
        ]
        assert len(stories) > 20
        for story in stories:
            row = await conn.fetchrow(
                "select final_captured_at from media where media_id = $1", story.id
            )
            assert row is not None, f"story {story.id} was never discovered"
            final = row["final_captured_at"]
            assert final is not None, f"story {story.id} has no final snapshot"
            assert story.expires_at - lead <= final < story.expires_at
            finals = await conn.fetch(
                "select metric, breakdown, dimension, value, captured_at from media_metric"
                " where media_id = $1 and is_final",
                story.id,
            )
            assert finals
            for f in finals:
                if f["breakdown"]:
                    continue
                truth = sim.world.media_metric(story.id, f["metric"], f["captured_at"])
                assert truth is not None
                assert f["value"] == truth
        assert h.runner is not None
        # every story that could have a final got one (Meta shows none under five viewers)
        assert h.runner.stats.stories_missed == h.runner.stats.missed_by_reason["below_threshold"]
        # and the view analysts read agrees
        missing = await conn.fetchval(
            "select count(distinct media_id) from story_final_metrics"
            " where expires_at <= $1 and not coalesce(is_final, false)",
            end,
        )
        assert missing == 0
    finally:
        await conn.close()


async def test_cadence_by_media_age_and_no_duplicate_work(
    sim_factory: Any,
    make_settings: MakeSettings,
    harness_factory: Any,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    sim = await sim_factory(accounts=2, media_per_account=30, stories_per_account=0)
    settings = make_settings(sim, sections=_story_settings())
    h = await harness_factory(settings, sim)
    start = fake_clock.now()
    await h.run_until(start + timedelta(hours=12))
    conn = await asyncpg.connect(db_dsn)
    try:
        polls = await conn.fetch(
            "select m.media_id, m.posted_at, count(distinct mm.captured_at) n"
            " from media m join media_metric mm using (media_id)"
            " where not m.is_story and mm.metric = 'reach' group by 1, 2"
        )
        assert polls
        for p in polls:
            age = start - p["posted_at"]
            if age < timedelta(days=2) - timedelta(hours=12):
                assert p["n"] >= 12, p  # hourly
            elif timedelta(days=2) < age < timedelta(days=14) - timedelta(hours=12):
                assert 2 <= p["n"] <= 3, p  # every 6 h
            elif timedelta(days=14) < age < timedelta(days=730):
                assert p["n"] == 1, p  # daily or weekly: once in 12 h
        profiles = await conn.fetchval("select count(*) from account_snapshot")
        assert profiles == 2 * 13  # hourly, at 0h..12h
    finally:
        await conn.close()


async def test_restart_resumes_without_duplicate_work(
    sim_factory: Any,
    make_settings: MakeSettings,
    harness_factory: Any,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    sim = await sim_factory(
        accounts=3,
        media_per_account=10,
        stories_per_account=2,
        story_lifetime=timedelta(hours=2),
        stories_per_day=12.0,
        quiet_story_fraction=0.0,
    )
    settings = make_settings(sim, sections=_story_settings())
    first = await harness_factory(settings, sim)
    start = fake_clock.now()
    await first.run_until(start + timedelta(minutes=50))
    sim.stats.reset()
    # a new process: same database, fresh memory; nothing is due again at once
    second = await harness_factory(settings, sim)
    assert second.runner is not None
    await second.runner.run_until_idle()
    kinds = {r.kind for r in sim.stats.requests}
    # profile, media list, account insights and token were all done minutes ago
    assert kinds.isdisjoint({"ig_user", "ig_media_list", "user_insights", "debug_token"}), kinds
    # the stories discovered by the first process still get their final snapshots
    await second.run_until(start + timedelta(hours=5))
    conn = await asyncpg.connect(db_dsn)
    try:
        early = [
            s
            for s in sim.world.stories_between(start, start + timedelta(minutes=50))
            if s.expires_at is not None and s.expires_at <= start + timedelta(hours=5)
        ]
        assert early
        for story in early:
            final = await conn.fetchval(
                "select final_captured_at from media where media_id = $1", story.id
            )
            assert final is not None
        dupes = await conn.fetchval(
            "select count(*) from (select 1 from account_snapshot group by ig_user_id,"
            " date_trunc('hour', captured_at) having count(*) > 1) d"
        )
        assert dupes == 0
    finally:
        await conn.close()


async def test_throttled_account_gets_no_calls_and_finals_win(
    sim_factory: Any,
    make_settings: MakeSettings,
    harness_factory: Any,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    # a budget far below the demand of 40 media polled hourly plus stories
    sim = await sim_factory(
        accounts=3,
        media_per_account=40,
        stories_per_account=2,
        story_lifetime=timedelta(hours=2),
        stories_per_day=12.0,
        quiet_story_fraction=0.0,
        account_budget=40,
        account_window=timedelta(hours=1),
        throttled_calls_count=True,
    )
    settings = make_settings(
        sim,
        sections=_story_settings()
        | {"limits": {"usage_high_water": 60, "usage_pause": 85, "throttle_floor": "5m"}},
    )
    h = await harness_factory(settings, sim)
    start = fake_clock.now()
    end = start + timedelta(hours=6)
    await h.run_until(end)
    assert h.runner is not None
    # demand exceeded supply: accounts were held to urgent work, other jobs ran late
    assert h.runner.stats.paced > 0
    assert h.runner.stats.max_lateness > 3600
    for acct in sim.world.accounts:
        assert any(
            r.account == acct.ig_user_id and r.at >= end - timedelta(hours=1) and r.status == 200
            for r in sim.stats.requests
        )
    refused = [r for r in sim.stats.requests if r.error == "80002"]
    # the limiter pauses accounts on their own usage headers before Meta has to refuse
    assert len(refused) <= len(sim.world.accounts)
    for acct in sim.world.accounts:
        calls = [r for r in sim.stats.requests if r.account == acct.ig_user_id]
        for i, r in enumerate(calls):
            # after a refusal, the next call waits at least the floor
            if r.error == "80002" and i + 1 < len(calls):
                assert calls[i + 1].at - r.at >= timedelta(minutes=5)
    conn = await asyncpg.connect(db_dsn)
    try:
        stories = [
            s
            for s in sim.world.stories_between(start, end)
            if s.expires_at is not None and s.expires_at <= end
        ]
        assert stories
        finals = 0
        for story in stories:
            if await conn.fetchval(
                "select final_captured_at from media where media_id = $1", story.id
            ):
                finals += 1
        assert finals == len(stories)
        # the usage Meta reported, and the pauses, are visible per account
        health = await conn.fetch(
            "select usage_percent, usage_at, throttle_events from account_health"
        )
        assert all(h["usage_percent"] is not None and h["usage_at"] is not None for h in health)
        assert max(h["usage_percent"] for h in health) >= 60
    finally:
        await conn.close()


async def test_regular_story_polls_ride_on_the_stories_listing(
    sim_factory: Any,
    make_settings: MakeSettings,
    harness_factory: Any,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    sim = await sim_factory(
        accounts=2, media_per_account=2, stories_per_account=3, quiet_story_fraction=0.0
    )
    settings = make_settings(
        sim,
        sections={"schedule": {"story_poll_every": "1h", "account_insights_backfill_days": 1}},
    )
    h = await harness_factory(settings, sim)
    start = fake_clock.now()
    await h.run_until(start + timedelta(hours=6))
    end = start + timedelta(hours=6)
    stories = {
        s.id
        for a in sim.world.accounts
        for s in sim.world.stories_of(a.ig_user_id, start)
        if s.expires_at is not None and s.expires_at > end + timedelta(minutes=30)
    }
    assert stories
    per_story = {
        sid: sum(1 for r in sim.stats.requests if f"/{sid}/insights" in r.path) for sid in stories
    }
    expanded = [r for r in sim.stats.requests if r.kind == "ig_stories" and r.status == 200]
    conn = await asyncpg.connect(db_dsn)
    try:
        for sid in stories:
            captures = await conn.fetchval(
                "select count(distinct captured_at) from media_metric where media_id = $1", sid
            )
            # hourly snapshots for six hours, yet at most the first poll (and a final) was a
            # call of its own: the others came with the /stories listing
            assert captures >= 6, sid
            assert per_story[sid] <= 3, per_story
    finally:
        await conn.close()
    assert len(expanded) >= 6 * 6 * len(sim.world.accounts)  # the listing every 10 minutes


async def test_full_spool_holds_back_everything_but_story_work(
    sim_factory: Any,
    make_settings: MakeSettings,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
) -> None:
    sim = await sim_factory(accounts=2, media_per_account=5, stories_per_account=2)
    settings = make_settings(sim, sections=_story_settings())
    await wiring.prepare(settings, store, fake_clock)
    limiter = wiring.build_limiter(settings)
    wr = wiring.build_writer(settings, store)
    wr.spool.max_bytes = 0  # a spool that is full before anything is in it
    async with wiring.build_client(settings, fake_clock, limiter) as client:
        run = wiring.build_runner(
            settings,
            store=store,
            client=client,
            limiter=limiter,
            writer=wr,
            catalog=metrics_catalog.Catalog("v25.0"),
            clock=fake_clock,
        )
        await run.set_accounts(wiring.targets_of(settings))
        await run.run_until_idle()
        kinds = {r.kind for r in sim.stats.requests}
        assert kinds <= {"ig_stories", "media_insights"}, kinds
        assert "ig_stories" in kinds
        story_ids = {s.id for a in sim.world.accounts for s in sim.world.stories_of(a.ig_user_id)}
        insights = {r.path.split("/")[2] for r in sim.stats.requests if r.kind == "media_insights"}
        assert insights <= story_ids
        # room in the spool again: the held-back jobs run, late but not lost
        wr.spool.max_bytes = 10**9
        await run.run_until_idle()
        kinds = {r.kind for r in sim.stats.requests}
        assert {"ig_user", "ig_media_list", "user_insights", "debug_token"} <= kinds


async def test_expiring_token_warns_and_shows_in_health(
    sim_factory: Any,
    make_settings: MakeSettings,
    harness_factory: Any,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    from structlog.testing import capture_logs

    sim = await sim_factory(accounts=2, media_per_account=2, stories_per_account=0)
    soon = sim.world.accounts[0]
    sim.world.set_token_expiry(soon.ig_user_id, fake_clock.now() + timedelta(days=3))
    settings = make_settings(sim, sections=_story_settings())
    with capture_logs() as logs:
        h = await harness_factory(settings, sim)
        await h.run_until(fake_clock.now() + timedelta(hours=1))
    warnings = [e for e in logs if e["event"] == "token_expiring"]
    assert [w["account"] for w in warnings] == [soon.username]
    assert warnings[0]["days_left"] == pytest.approx(3, abs=0.1)
    conn = await asyncpg.connect(db_dsn)
    try:
        flagged = await conn.fetch(
            "select name from account_health where token_expires_at < now() + interval '7 days'"
            " and token_expires_at < $1",
            fake_clock.now() + timedelta(days=7),
        )
        assert [r["name"] for r in flagged] == [soon.username]
    finally:
        await conn.close()


async def test_refused_listing_story_polls_share_a_batch(
    sim_factory: Any,
    make_settings: MakeSettings,
    harness_factory: Any,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    # every account has a quiet story, so Meta refuses every expanded listing
    sim = await sim_factory(
        accounts=2,
        media_per_account=2,
        stories_per_account=4,
        quiet_story_fraction=0.5,
        story_lifetime=timedelta(hours=4),
        stories_per_day=12.0,
    )
    settings = make_settings(
        sim,
        sections={
            "schedule": {
                "story_lifetime": "4h",
                "story_final_lead": "10m",
                "story_poll_every": "1h",
                "account_insights_backfill_days": 1,
            }
        },
    )
    h = await harness_factory(settings, sim)
    await h.run_until(fake_clock.now() + timedelta(hours=5))
    assert h.runner is not None
    story_ids = {
        s.id
        for s in sim.world.stories_between(fake_clock.now() - timedelta(hours=6), fake_clock.now())
    }
    in_batches = [r for r in sim.stats.requests if r.in_batch and r.path.split("/")[2] in story_ids]
    alone = [
        r
        for r in sim.stats.requests
        if not r.in_batch and r.kind == "media_insights" and r.path.split("/")[2] in story_ids
    ]
    # regular polls travelled together; finals (with the navigation breakdown) went alone
    assert in_batches
    assert alone
    # every story that could have a final got one (Meta shows none under five viewers)
    assert h.runner.stats.stories_missed == h.runner.stats.missed_by_reason["below_threshold"]
    conn = await asyncpg.connect(db_dsn)
    try:
        outside = await conn.fetchval(
            "select count(*) from media_metric mm join media m using (media_id)"
            " where mm.is_final and not (mm.captured_at >= m.expires_at - interval '10 minutes'"
            " and mm.captured_at < m.expires_at)"
        )
        assert outside == 0
    finally:
        await conn.close()


async def test_account_insights_progress_under_a_tight_budget(
    sim_factory: Any,
    make_settings: MakeSettings,
    harness_factory: Any,
    fake_clock: clock.FakeClock,
    db_conn: asyncpg.Connection,
) -> None:
    # 40 calls per 2 minutes: a 30-day backfill (four calls a day) takes several budgets
    sim = await sim_factory(
        accounts=1,
        media_per_account=3,
        stories_per_account=0,
        account_budget=40,
        account_window=timedelta(minutes=2),
        low_follower_fraction=0.0,
    )
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 30}})
    h = await harness_factory(settings, sim)
    await h.run_until(fake_clock.now() + timedelta(minutes=60))
    days = await db_conn.fetchval(
        "select count(distinct end_time) from account_metric where metric = 'reach'"
        " and period = 'day'"
    )
    # each budget's answers were kept and the next job went on from the days completed (from
    # the same first day again, 11 days were in after the hour: the same ones, asked again)
    assert days >= 30
    stored = {
        tuple(r)[:5]: r["value"]
        for r in await db_conn.fetch(
            "select ig_user_id, metric, breakdown, dimension, end_time, value from account_metric"
            " where period = 'day'"
        )
    }
    served: dict[tuple[Any, ...], Any] = {}
    for v in sim.stats.served:
        if v.source == "insights" and v.object_id == v.account and v.period == "day":
            key = (v.object_id, v.metric, v.breakdown or "", v.dimension or "", v.end_time)
            served[key] = v.value
    # the last answer for each bucket is what is stored (Meta revises; so does the simulator)
    assert {k: float(v) for k, v in stored.items()} == {k: float(v) for k, v in served.items()}
    refused = [r for r in sim.stats.requests if r.error and "80002" in r.error]
    assert len(refused) <= 5
