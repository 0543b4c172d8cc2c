"""The jobs against the simulator over real HTTP (no database): what each returns, and that a
job which fails half way has already handed over every row it collected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from collector import clock, errors, graph, jobs, metrics_catalog, models, ratelimit
from collector import plan as plan_mod
from collector.simulator import server, world

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
async def sim() -> AsyncIterator[server.Simulator]:
    cfg = world.WorldConfig(
        seed=11, accounts=2, media_per_account=30, stories_per_account=3, quiet_story_fraction=0.0
    )
    async with server.running(cfg, clock=clock.FakeClock(START)) as s:
        yield s


@pytest.fixture
async def ctx(sim: server.Simulator) -> AsyncIterator[jobs.Context]:
    fake = sim.world.clock
    assert isinstance(fake, clock.FakeClock)
    limiter = ratelimit.Limiter()
    client = graph.GraphClient(
        base_url=sim.base_url,
        api_version="v25.0",
        app_secret=sim.world.config.app_secret,
        clock=fake,
        limiter=limiter,
        sleep=_no_sleep,
        retry_base=0.0,
        retry_max=0.0,
    )
    async with client:
        yield jobs.Context(
            client=client,
            limiter=limiter,
            catalog=metrics_catalog.Catalog("v25.0"),
            clock=fake,
            plan=plan_mod.Plan(),
        )


def _target(sim: server.Simulator, index: int = 0) -> jobs.Target:
    acct = sim.world.accounts[index]
    return jobs.Target(models.IgUserId(acct.ig_user_id), acct.username, acct.token)


def _media(sim: server.Simulator, index: int = 0) -> list[models.Media]:
    acct = sim.world.accounts[index]
    return [
        models.Media(
            models.MediaId(m.id),
            models.IgUserId(acct.ig_user_id),
            m.media_type,
            m.product_type,
            m.posted_at,
            None,
            None,
            None,
            START,
        )
        for m in sim.world.media_of(acct.ig_user_id)
    ]


def _truth_matches(sim: server.Simulator, batch: models.Batch) -> None:
    assert batch.media_metrics
    for v in batch.media_metrics:
        if v.breakdown:
            continue
        truth = sim.world.media_metric(v.media_id, v.metric, v.captured_at)
        assert truth is not None, v
        assert Decimal(str(v.value)) == Decimal(str(truth)), v


async def test_media_insights_many_polls_every_media_in_batches(
    sim: server.Simulator, ctx: jobs.Context
) -> None:
    items = _media(sim)
    out = await jobs.media_insights_many(ctx, _target(sim), items)
    assert {p.media_id for p in out.media_polls} == {m.media_id for m in items}
    _truth_matches(sim, out)
    batches = [r for r in sim.stats.requests if r.kind == "batch"]
    assert batches
    assert len(batches) < len(items)  # several media to a round trip


async def test_a_job_throttled_half_way_has_handed_over_its_first_answers(
    sim: server.Simulator, ctx: jobs.Context
) -> None:
    items = _media(sim)
    # the first batch answers; the second is refused with an app-level throttle (#4)
    sim.faults.script(r"^/v25\.0/?$", ["ok", "code4"])
    out = models.Batch()
    with pytest.raises(errors.AppThrottled):
        await jobs.media_insights_many(ctx, _target(sim), items, out=out)
    assert out.media_polls
    assert len(out.media_polls) < len(items)
    _truth_matches(sim, out)


async def test_story_listing_carries_the_insights_and_falls_back_when_refused(
    sim: server.Simulator, ctx: jobs.Context
) -> None:
    target = _target(sim)
    metrics = ctx.catalog.media_metrics(models.ObjectKind.STORY)
    listing = await jobs.story_discovery(ctx, target, insights=metrics)
    live = sim.world.stories_of(target.ig_user_id)
    assert live
    assert {s.media_id for s in listing.stories} == {s.id for s in live}
    assert listing.polled == {s.id for s in live}
    assert listing.expansion_error is None
    _truth_matches(sim, listing.batch)
    # a metric stories reject: the expansion fails as a whole and the plain listing follows
    refused = await jobs.story_discovery(ctx, target, insights=[*metrics, "no_such_metric"])
    assert refused.expansion_error
    assert refused.polled == set()
    assert {s.media_id for s in refused.stories} == {s.id for s in live}
    assert not refused.batch.media_metrics


async def test_an_invalid_token_is_recorded_before_the_job_raises(
    sim: server.Simulator, ctx: jobs.Context
) -> None:
    target = _target(sim)
    sim.world.set_token_state(target.ig_user_id, "expired")
    out = models.Batch()
    with pytest.raises(errors.TokenInvalid):
        await jobs.token_check(ctx, target, out)
    assert len(out.token_checks) == 1
    assert out.token_checks[0].valid is False


async def test_profile_and_media_discovery_fill_the_batch_they_are_given(
    sim: server.Simulator, ctx: jobs.Context
) -> None:
    target = _target(sim)
    out = models.Batch()
    await jobs.profile(ctx, target, out)
    await jobs.media_discovery(ctx, target, set(), walk_all=True, out=out)
    assert len(out.profiles) == 1
    assert out.profiles[0].followers_count == sim.world.followers_count(target.ig_user_id, START)
    assert {m.media_id for m in out.media} == {m.id for m in sim.world.media_of(target.ig_user_id)}
    # pages of plan.page_size
    limits = {r.param("limit") for r in sim.stats.requests if r.kind == "ig_media_list"}
    assert limits == {str(ctx.plan.page_size)}
