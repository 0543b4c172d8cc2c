"""Honest story captures: every story either has a final snapshot that says where it came
from, or says why it has none; metric_support holds what the API accepted as well."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from collector import clock, models, webhook
from collector import store as store_mod

from .conftest import MakeSettings
from .test_runner import Harness

SCHEDULE = {
    "story_lifetime": "2h",
    "story_final_lead": "10m",
    "story_discovery_every": "10m",
    "story_poll_every": "30m",
    "account_insights_backfill_days": 2,
}


async def _stories(db_dsn: str) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = await conn.fetch(
            "select media_id, expires_at, final_captured_at, final_source, missed_reason"
            " from media where is_story"
        )
    finally:
        await conn.close()
    return {r["media_id"]: r for r in rows}


async def test_every_expired_story_has_a_final_or_a_reason(
    sim_factory: Any,
    make_settings: MakeSettings,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    # some stories stay under 5 viewers: Meta shows them no insights, even at the end
    sim = await sim_factory(
        accounts=3,
        media_per_account=2,
        stories_per_account=3,
        story_lifetime=timedelta(hours=2),
        stories_per_day=24.0,
        quiet_story_fraction=0.3,
    )
    settings = make_settings(sim, sections={"schedule": SCHEDULE})
    h = Harness(settings, store, fake_clock, sim)
    await h.start()
    try:
        end = fake_clock.now() + timedelta(hours=8)
        await h.run_until(end)
    finally:
        await h.close()
    stories = await _stories(db_dsn)
    expired = [s for s in stories.values() if s["expires_at"] <= end]
    assert len(expired) > 20
    reasons = {s["missed_reason"] for s in expired if s["final_captured_at"] is None}
    for s in expired:
        if s["final_captured_at"] is not None:
            assert s["final_source"] == "poll"
            assert s["missed_reason"] is None
        else:
            assert s["missed_reason"] is not None, s["media_id"]
    assert str(models.MissReason.BELOW_THRESHOLD) in reasons
    assert any(s["final_source"] == "poll" for s in expired)


async def test_stories_that_expired_while_no_collector_ran_say_so(
    sim_factory: Any,
    make_settings: MakeSettings,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    sim = await sim_factory(
        accounts=2,
        media_per_account=1,
        stories_per_account=2,
        story_lifetime=timedelta(hours=2),
        quiet_story_fraction=0.0,
    )
    settings = make_settings(sim, sections={"schedule": SCHEDULE})
    first = Harness(settings, store, fake_clock, sim)
    await first.start()
    await first.step()  # the stories are discovered and polled once
    await first.close()
    known = {k: v for k, v in (await _stories(db_dsn)).items() if v["final_captured_at"] is None}
    assert known
    # the process is gone for three hours: every story it knew expired meanwhile
    fake_clock.advance(3 * 3600)
    second = Harness(settings, store, fake_clock, sim)
    await second.start()
    await second.close()
    after = await _stories(db_dsn)
    for media_id in known:
        assert after[media_id]["final_captured_at"] is None
        assert after[media_id]["missed_reason"] == "process_down"


async def test_a_poll_final_stays_the_final_when_the_webhook_comes_after(
    sim_factory: Any,
    make_settings: MakeSettings,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    sim = await sim_factory(
        accounts=1,
        media_per_account=1,
        stories_per_account=1,
        story_lifetime=timedelta(hours=2),
        quiet_story_fraction=0.0,
    )
    settings = make_settings(sim, sections={"schedule": SCHEDULE})
    h = Harness(settings, store, fake_clock, sim)
    await h.start()
    try:
        story = sim.world.stories_of(sim.world.accounts[0].ig_user_id)[0]
        assert story.expires_at is not None
        await h.run_until(story.expires_at - timedelta(minutes=1))
        polled = (await _stories(db_dsn))[story.id]
        assert polled["final_source"] == "poll"
        # Meta's delivery at expiry: kept as a capture of its own, never the final over a poll
        payload = {
            "entry": [
                {
                    "id": sim.world.accounts[0].ig_user_id,
                    "time": int(story.expires_at.timestamp()),
                    "changes": [
                        {
                            "field": "story_insights",
                            "value": {"media_id": story.id, "reach": 5, "impressions": 9},
                        }
                    ],
                }
            ]
        }
        await store.write(webhook.to_batch(payload))
        after = (await _stories(db_dsn))[story.id]
        assert after["final_source"] == "poll"
        assert after["final_captured_at"] == polled["final_captured_at"]
        conn = await asyncpg.connect(db_dsn)
        try:
            views = await conn.fetch(
                "select captured_at, is_final from media_metric"
                " where media_id = $1 and metric = 'views' order by captured_at",
                story.id,
            )
        finally:
            await conn.close()
        assert views[-1]["captured_at"] == story.expires_at  # the webhook's, kept in history
    finally:
        await h.close()


async def test_metric_support_records_what_the_api_accepted(
    sim_factory: Any,
    make_settings: MakeSettings,
    store: store_mod.Store,
    fake_clock: clock.FakeClock,
    db_dsn: str,
) -> None:
    sim = await sim_factory(accounts=1, media_per_account=6, stories_per_account=1)
    settings = make_settings(sim, sections={"schedule": SCHEDULE})
    h = Harness(settings, store, fake_clock, sim)
    await h.start()
    try:
        await h.step()
    finally:
        await h.close()
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = await conn.fetch(
            "select object_kind, metric, supported from metric_support where supported"
        )
    finally:
        await conn.close()
    kinds = {r["object_kind"] for r in rows}
    assert "account" in kinds
    assert kinds & {"feed_image", "feed_video", "feed_carousel", "reels"}
    assert all(r["supported"] for r in rows)
