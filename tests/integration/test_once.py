"""``run --once`` against the simulator and a real PostgreSQL, checked against ground truth."""

from __future__ import annotations

import io
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from collector import clock, config, daemon, errors
from collector.simulator import server

from .conftest import MakeSettings

Key = tuple[Any, ...]


def _num(value: Any) -> Decimal:
    return Decimal(str(value))


async def _run(settings: Any, fake: clock.FakeClock) -> tuple[int, str]:
    out = io.StringIO()
    rc = await daemon.run_once(settings, clock=fake, out=out)
    return rc, out.getvalue()


def served_media(sim: server.Simulator) -> Counter[Key]:
    """(media_id, metric, breakdown, dimension, captured_at, value) of every served media value."""
    accounts = {a.ig_user_id for a in sim.world.accounts}
    found: Counter[Key] = Counter()
    for v in sim.stats.served:
        if v.object_id in accounts or v.source == "webhook":
            continue
        found[
            (
                v.object_id,
                v.metric,
                v.breakdown or "",
                v.dimension or "",
                v.served_at,
                _num(v.value),
            )
        ] += 1
    return found


async def stored_media(conn: asyncpg.Connection) -> Counter[Key]:
    rows = await conn.fetch(
        "select media_id, metric, breakdown, dimension, captured_at, value from media_metric"
    )
    return Counter(
        (r["media_id"], r["metric"], r["breakdown"], r["dimension"], r["captured_at"], r["value"])
        for r in rows
    )


def served_account(sim: server.Simulator) -> dict[Key, Decimal]:
    """(ig_user_id, metric, breakdown, dimension, end_time) -> value of served account insights."""
    accounts = {a.ig_user_id for a in sim.world.accounts}
    found: dict[Key, Decimal] = {}
    for v in sim.stats.served:
        if v.object_id not in accounts or v.source != "insights":
            continue
        found[(v.object_id, v.metric, v.breakdown or "", v.dimension or "", v.end_time)] = _num(
            v.value
        )
    return found


async def test_one_pass_lands_every_served_value_exactly_once(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=3, media_per_account=15, stories_per_account=3)
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 10}})
    rc, summary = await _run(settings, fake_clock)
    assert rc == 0, summary
    for acct in sim.world.accounts:
        assert acct.username in summary

    conn = await asyncpg.connect(db_dsn)
    try:
        # media and story metrics (insights and counters served as fields): exactly once each
        served = served_media(sim)
        stored = await stored_media(conn)
        assert served, "the simulator served no media values"
        assert stored == served
        assert max(stored.values()) == 1

        # profile counters
        snaps = await conn.fetch("select * from account_snapshot")
        assert len(snaps) == len(sim.world.accounts)
        for snap in snaps:
            at = snap["captured_at"]
            assert snap["followers_count"] == sim.world.followers_count(snap["ig_user_id"], at)
            assert snap["media_count"] == sim.world.media_count(snap["ig_user_id"], at)

        # account insights: day buckets and demographics, each stored with the served value
        rows = await conn.fetch(
            "select ig_user_id, metric, breakdown, dimension, end_time, value, period"
            " from account_metric"
        )
        by_key = {
            (r["ig_user_id"], r["metric"], r["breakdown"], r["dimension"], r["end_time"]): r[
                "value"
            ]
            for r in rows
        }
        served_acct = served_account(sim)
        assert served_acct
        for (uid, metric, breakdown, dimension, end_time), value in served_acct.items():
            if end_time is None:  # demographics: stored on the capture day's bucket
                matches = [
                    v for k, v in by_key.items() if k[:4] == (uid, metric, breakdown, dimension)
                ]
                assert matches == [value], (uid, metric, breakdown, dimension)
            else:
                assert by_key[(uid, metric, breakdown, dimension, end_time)] == value
        assert len(rows) == len(served_acct)

        # every account is healthy, every media row is known
        statuses = await conn.fetch("select status from account")
        assert {r["status"] for r in statuses} == {"ok"}
        media_count = await conn.fetchval("select count(*) from media where not is_story")
        assert media_count == sum(len(sim.world.media_of(a.ig_user_id)) for a in sim.world.accounts)
    finally:
        await conn.close()


async def test_second_pass_appends_history_and_upserts_buckets(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=2, media_per_account=10, stories_per_account=2)
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 5}})
    assert (await _run(settings, fake_clock))[0] == 0
    conn = await asyncpg.connect(db_dsn)
    try:
        first_media = await conn.fetchval("select count(*) from media_metric")
        first_buckets = await conn.fetchval("select count(*) from account_metric")
        first_snaps = await conn.fetchval("select count(*) from account_snapshot")
        sim.stats.reset()
        fake_clock.advance(3600)
        assert (await _run(settings, fake_clock))[0] == 0
        # lifetime counters: a new history row per metric per capture
        second_media = await conn.fetchval("select count(*) from media_metric")
        assert second_media > first_media
        assert await stored_media(conn) - Counter() >= served_media(sim)
        captures = await conn.fetch(
            "select media_id, metric, count(distinct captured_at) n from media_metric"
            " where breakdown = '' group by 1, 2"
        )
        assert {r["n"] for r in captures} == {2}
        reach = await conn.fetch(
            "select value from media_metric m join media using (media_id)"
            " where metric = 'reach' and not is_story order by media_id, captured_at"
        )
        assert reach  # the values grow (lifetime counters), never shrink
        assert await conn.fetchval("select count(*) from account_snapshot") == first_snaps + 2
        # account buckets: the re-polled days are updated in place, not duplicated
        buckets = await conn.fetchval("select count(*) from account_metric")
        dupes = await conn.fetchval(
            "select count(*) from (select 1 from account_metric group by ig_user_id, metric,"
            " period, breakdown, dimension, end_time having count(*) > 1) d"
        )
        assert dupes == 0
        assert buckets >= first_buckets
        for key, value in served_account(sim).items():
            uid, metric, breakdown, dimension, end_time = key
            if end_time is None:
                continue
            stored = await conn.fetchval(
                "select value from account_metric where ig_user_id = $1 and metric = $2"
                " and breakdown = $3 and dimension = $4 and end_time = $5",
                uid,
                metric,
                breakdown,
                dimension,
                end_time,
            )
            assert stored == value
    finally:
        await conn.close()


async def test_one_bad_account_among_good_ones(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=4)
    expired, no_perm = sim.world.accounts[0], sim.world.accounts[1]
    sim.world.set_token_state(expired.ig_user_id, "expired")
    sim.world.set_token_state(no_perm.ig_user_id, "no_permission")
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 2}})
    rc, summary = await _run(settings, fake_clock)
    assert rc == 1
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = {r["ig_user_id"]: r for r in await conn.fetch("select * from account_health")}
        assert rows[expired.ig_user_id]["status"] == "unhealthy"
        assert "code=190" in rows[expired.ig_user_id]["status_reason"]
        assert rows[no_perm.ig_user_id]["status"] == "unhealthy"
        assert "code=10" in rows[no_perm.ig_user_id]["status_reason"]
        for acct in sim.world.accounts[2:]:
            assert rows[acct.ig_user_id]["status"] == "ok"
            assert rows[acct.ig_user_id]["last_success_at"] is not None
        errs = await conn.fetch("select ig_user_id, error_class, code from collection_error")
        assert {(e["ig_user_id"], e["code"]) for e in errs} >= {
            (expired.ig_user_id, 190),
            (no_perm.ig_user_id, 10),
        }
        good_media = await conn.fetchval(
            "select count(*) from media where ig_user_id = any($1::text[])",
            [a.ig_user_id for a in sim.world.accounts[2:]],
        )
        assert good_media > 0
    finally:
        await conn.close()
    assert "unhealthy" in summary


async def test_account_throttle_stops_calls_to_that_account(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=2, account_budget=25)
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 2}})
    rc, _ = await _run(settings, fake_clock)
    assert rc == 1
    for acct in sim.world.accounts:
        calls = [r for r in sim.stats.requests if r.account == acct.ig_user_id]
        refused = [i for i, r in enumerate(calls) if r.error and "80002" in r.error]
        # the pass stops at the usage headers' high-water mark, before Meta has to refuse;
        # if it does refuse, that ends the round trips to that account (what comes after it
        # is only the rest of the batch request that carried it)
        if refused:
            after = calls[refused[0] + 1 :]
            assert all(r.in_batch for r in after), [(r.kind, r.error) for r in after]
        assert len(calls) < 25 + len(refused)
    conn = await asyncpg.connect(db_dsn)
    try:
        statuses = {r["status"] for r in await conn.fetch("select status from account")}
        assert statuses == {"throttled"}
    finally:
        await conn.close()


async def test_app_throttle_code_4(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=2, app_budget=30)
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 2}})
    rc, summary = await _run(settings, fake_clock)
    assert rc == 1
    assert "throttled" in summary
    requests = list(sim.stats.requests)
    first = next(i for i, r in enumerate(requests) if r.status == 403)
    # after the first (#4) the app is paused: only requests already in flight (one per account
    # at most) got their answer after it; none was sent afterwards
    later = requests[first + 1 :]
    # a batch request is recorded after its operations, with the HTTP status of the batch
    # (200) whatever they got: judge batches by their operations
    wrappers = [r for r in later if r.kind == "batch" and not r.in_batch]
    calls = [r for r in later if r.kind != "batch" or r.in_batch]
    if requests[first].in_batch and wrappers:
        wrappers = wrappers[1:]  # the batch request that carried the first (#4) itself
    in_flight = wrappers + [r for r in calls if not r.in_batch]
    assert len(in_flight) < len(sim.world.accounts)
    assert all(r.status == 403 for r in calls)


async def test_object_errors_are_recorded_not_retried(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(
        accounts=2, media_per_account=20, converted_fraction=1.0, quiet_story_fraction=1.0
    )
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 2}})
    assert (await _run(settings, fake_clock))[0] == 0
    conn = await asyncpg.connect(db_dsn)
    try:
        statuses = Counter(
            (r["is_story"], r["insights_status"])
            for r in await conn.fetch("select is_story, insights_status from media")
        )
        assert statuses[(False, "before_conversion")] > 0
        assert statuses[(True, "below_threshold")] > 0
        assert await conn.fetchval("select count(*) from collection_error") == 0
        # deleting a media object: the next pass marks it gone (100/33)
        victim = await conn.fetchval(
            "select media_id from media where not is_story and insights_status = 'ok' limit 1"
        )
        sim.world.delete_media(victim)
        fake_clock.advance(600)
        sim.stats.reset()
        assert (await _run(settings, fake_clock))[0] == 0
        row = await conn.fetchrow(
            "select insights_status, gone_at from media where media_id = $1", victim
        )
        assert row["insights_status"] == "gone"
        assert row["gone_at"] is not None
        victim_calls = [r for r in sim.stats.requests if victim in r.path]
        assert len(victim_calls) == 1
    finally:
        await conn.close()


async def test_rejected_metric_is_learned_and_not_asked_again(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=1, media_per_account=10, feed_views_rejected_fraction=1.0)
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 2}})
    assert (await _run(settings, fake_clock))[0] == 0
    conn = await asyncpg.connect(db_dsn)
    try:
        support = await conn.fetch("select object_kind, metric, supported from metric_support")
        learned = {(r["object_kind"], r["metric"]) for r in support if not r["supported"]}
        assert learned
        assert {m for _, m in learned} == {"views"}
        feed_views = await conn.fetchval(
            "select count(*) from media_metric join media using (media_id)"
            " where metric = 'views' and media_product_type = 'FEED'"
        )
        assert feed_views == 0
        # the other metrics of those media did land
        feed_reach = await conn.fetchval(
            "select count(*) from media_metric join media using (media_id)"
            " where metric = 'reach' and media_product_type = 'FEED'"
        )
        assert feed_reach > 0
        sim.stats.reset()
        fake_clock.advance(3600)
        assert (await _run(settings, fake_clock))[0] == 0
        rejected = [r for r in sim.stats.requests if r.error and "views" in r.error]
        assert rejected == []
    finally:
        await conn.close()


async def test_transient_failures_and_malformed_bodies_are_retried(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=1, media_per_account=5, stories_per_account=1)
    sim.faults.script(r"/insights\?", ["http500", "code2", "truncated", "nonjson", "html502"])
    sim.faults.script(r"/media\?", ["reset"])
    settings = make_settings(
        sim,
        sections={
            "schedule": {"account_insights_backfill_days": 2},
            "graph": {"max_retries": 6},
        },
    )
    rc, summary = await _run(settings, fake_clock)
    assert rc == 0, summary
    assert sim.faults.fired["http500"] == 1
    assert sim.faults.fired["reset"] == 1
    conn = await asyncpg.connect(db_dsn)
    try:
        assert await stored_media(conn) == served_media(sim)
    finally:
        await conn.close()


async def test_persistent_transient_failure_marks_account_failing(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=2)
    bad = sim.world.accounts[0]
    sim.faults.script(rf"/{bad.ig_user_id}\?", ["nonjson"] * 10)
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 2}})
    rc, summary = await _run(settings, fake_clock)
    assert rc == 1
    conn = await asyncpg.connect(db_dsn)
    try:
        status = dict(await conn.fetch("select ig_user_id, status from account"))
        assert status[bad.ig_user_id] == "failing"
        assert status[sim.world.accounts[1].ig_user_id] == "ok"
    finally:
        await conn.close()
    assert "failing" in summary


async def test_pending_migrations_refuse_to_run(
    sim_factory: Any, tmp_path: Any, empty_db_dsn: str, fake_clock: clock.FakeClock
) -> None:
    from collector import config

    from .conftest import write_config

    sim = await sim_factory(accounts=1)
    settings = config.load(write_config(tmp_path / "c.toml", sim, empty_db_dsn), environ={})
    with pytest.raises(errors.PendingMigrations, match="python -m collector migrate"):
        await daemon.run_once(settings, clock=fake_clock)


async def test_batched_insights_retry_null_slots(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=2, media_per_account=30, fault_rates={"batch_null": 0.3})
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 1}})
    rc, summary = await _run(settings, fake_clock)
    assert rc == 0, summary
    assert sim.faults.fired["batch_null"] > 0
    batches = [r for r in sim.stats.requests if r.kind == "batch"]
    assert batches  # feed media insights travelled 50 to a round trip
    conn = await asyncpg.connect(db_dsn)
    try:
        assert await stored_media(conn) == served_media(sim)
        unpolled = {
            r["media_id"]
            for r in await conn.fetch(
                "select media_id from media where not is_story and last_polled_at is null"
                " and posted_at > $1",
                fake_clock.now() - timedelta(days=730),
            )
        }
        errored = {
            r["object_id"]
            for r in await conn.fetch(
                "select object_id from collection_error where job = 'media_insights'"
            )
        }
        # a slot that stayed empty through every retry round is an error on record, not a gap
        assert unpolled <= errored
        assert len(unpolled) <= 2
    finally:
        await conn.close()


async def test_unknown_account_metric_is_learned_and_the_rest_collected(
    sim_factory: Any,
    make_settings: MakeSettings,
    fake_clock: clock.FakeClock,
    db_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataclasses

    from collector import metrics_catalog

    # a metric Meta does not know (yet, or any more) in the daily totals
    totals, *rest = metrics_catalog.ACCOUNT_REQUESTS
    widened = dataclasses.replace(
        totals, metrics=(*totals.metrics[:3], "gone_metric", *totals.metrics[3:])
    )
    monkeypatch.setattr(metrics_catalog, "ACCOUNT_REQUESTS", (widened, *rest))
    sim = await sim_factory(accounts=1, media_per_account=3, stories_per_account=0)
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 3}})
    rc, summary = await _run(settings, fake_clock)
    assert rc == 0, summary
    conn = await asyncpg.connect(db_dsn)
    try:
        learned = await conn.fetch(
            "select object_kind, metric, reason from metric_support where not supported"
        )
        assert [(r["object_kind"], r["metric"]) for r in learned] == [("account", "gone_metric")]
        assert "must be one of" in learned[0]["reason"]
        # every day window still landed with the other metrics of the group
        per_metric = {
            r["metric"]: r["n"]
            for r in await conn.fetch(
                "select metric, count(distinct end_time) n from account_metric"
                " where period = 'day' group by metric"
            )
        }
        assert "gone_metric" not in per_metric
        assert per_metric["reach"] == per_metric["likes"] >= 4
    finally:
        await conn.close()
    # the next pass does not ask for it again
    sim.stats.reset()
    fake_clock.advance(3600)
    assert (await _run(settings, fake_clock))[0] == 0
    assert not [r for r in sim.stats.requests if r.error and r.error.startswith("100")]


async def test_account_its_token_cannot_read_is_parked_unhealthy(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    sim = await sim_factory(accounts=2)
    borrowed, owner = sim.world.accounts
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 2}})
    path = settings.source_path
    assert path is not None
    (path.parent / f"{borrowed.username}.token").write_text(owner.token + "\n")  # not its own
    settings = config.load(path, environ={})
    rc, summary = await _run(settings, fake_clock)
    assert rc == 1
    conn = await asyncpg.connect(db_dsn)
    try:
        row = await conn.fetchrow(
            "select status, status_reason from account where ig_user_id = $1",
            borrowed.ig_user_id,
        )
        assert row["status"] == "unhealthy"
        assert (
            f"the token cannot read account {borrowed.ig_user_id}: mistyped ig_user_id or "
            "another account's token" in row["status_reason"]
        )
        owner_status = await conn.fetchval(
            "select status from account where ig_user_id = $1", owner.ig_user_id
        )
        assert owner_status == "ok"
    finally:
        await conn.close()
    assert "unhealthy" in summary


async def test_tight_budget_keeps_the_account_insights_answered_before_the_block(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock, db_dsn: str
) -> None:
    # 40 calls per 2 minutes: the 30-day backfill cannot fit in one budget
    sim = await sim_factory(
        accounts=2,
        media_per_account=3,
        stories_per_account=0,
        account_budget=40,
        account_window=timedelta(minutes=2),
        low_follower_fraction=0.0,
    )
    settings = make_settings(sim, sections={"schedule": {"account_insights_backfill_days": 30}})
    rc, summary = await _run(settings, fake_clock)
    assert rc == 1, summary  # the budget ran out before the pass could finish
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = await conn.fetch(
            "select ig_user_id, metric, breakdown, dimension, end_time, value from account_metric"
        )
        stored = {tuple(r)[:5]: r["value"] for r in rows}
        served = served_account(sim)
        for acct in sim.world.accounts:
            # what was answered before the budget ran out is stored, the block did not cost it
            assert any(k[0] == acct.ig_user_id for k in stored), summary
        # every answered value, and only those, exactly as served
        assert {k: v for k, v in stored.items() if k[4] is not None} == {
            k: v for k, v in served.items() if k[4] is not None
        }
    finally:
        await conn.close()
    for acct in sim.world.accounts:
        calls = [r for r in sim.stats.requests if r.account == acct.ig_user_id]
        refused = [r for r in calls if r.error and "80002" in r.error]
        # batches are sized by the budget left: few operations meet a refusal, and none
        # after the first refused one in a round trip of its own
        assert len(refused) <= 3, [(r.kind, r.in_batch) for r in refused]
