"""Insights over HTTP: validation per version and product type, shapes, ground truth."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from collector import clock
from collector.simulator import metrics, server, world

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
async def fake() -> clock.FakeClock:
    return clock.FakeClock(START)


@pytest.fixture
async def sim(fake: clock.FakeClock) -> AsyncIterator[server.Simulator]:
    cfg = world.WorldConfig(
        seed=5,
        accounts=6,
        media_per_account=80,
        low_follower_fraction=0.0,
        quiet_story_fraction=0.0,
    )
    async with server.running(cfg, clock=fake) as s:
        yield s


async def get(sim: server.Simulator, path: str, token: str, **params: str) -> tuple[int, Any]:
    params["access_token"] = token
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.base_url}{path}", params=params) as resp,
    ):
        return resp.status, json.loads(await resp.text())


def pick(
    sim: server.Simulator, product: str, media_type: str | None = None
) -> tuple[world.Account, world.Media]:
    for acct in sim.world.accounts:
        for m in sim.world.media_of(acct.ig_user_id):
            kind_ok = m.product_type == product and media_type in (None, m.media_type)
            if kind_ok and (acct.conversion_at is None or m.posted_at >= acct.conversion_at):
                return acct, m
    raise AssertionError("no such media")


async def test_reel_insights_shape_and_ground_truth(sim: server.Simulator) -> None:
    acct, reel = pick(sim, "REELS")
    status, body = await get(
        sim, f"/v25.0/{reel.id}/insights", acct.token,
        metric="reach,views,ig_reels_avg_watch_time,reels_skip_rate",
    )  # fmt: skip
    assert status == 200
    assert [d["name"] for d in body["data"]] == [
        "reach",
        "views",
        "ig_reels_avg_watch_time",
        "reels_skip_rate",
    ]
    for entry in body["data"]:
        assert set(entry) == {"name", "period", "values", "title", "description", "id"}
        assert entry["period"] == "lifetime"
        assert entry["id"] == f"{reel.id}/insights/{entry['name']}/lifetime"
        assert entry["values"] == [{"value": sim.world.media_metric(reel.id, entry["name"], START)}]
    assert isinstance(body["data"][3]["values"][0]["value"], float)
    served = {v.metric: v.value for v in sim.stats.served_for(reel.id)}
    assert served == {e["name"]: e["values"][0]["value"] for e in body["data"]}
    assert all(
        v.account == acct.ig_user_id and v.served_at == START for v in sim.stats.served_for(reel.id)
    )


async def test_list_params_accept_json_arrays(sim: server.Simulator) -> None:
    acct, media = pick(sim, "FEED", "IMAGE")
    status, body = await get(
        sim, f"/v25.0/{media.id}/insights", acct.token, metric='["reach","saved"]'
    )
    assert status == 200
    assert [d["name"] for d in body["data"]] == ["reach", "saved"]


async def test_unknown_metric_names_index_and_version_enum(sim: server.Simulator) -> None:
    acct, media = pick(sim, "FEED", "IMAGE")
    status, body = await get(sim, f"/v25.0/{media.id}/insights", acct.token, metric="reach,bogus")
    assert status == 400
    assert body["error"]["message"] == (
        "(#100) metric[1] must be one of the following values: " + ", ".join(metrics.media_enum(25))
    )
    _, body21 = await get(sim, f"/v21.0/{media.id}/insights", acct.token, metric="bogus")
    assert "metric[0]" in body21["error"]["message"]
    assert "plays" in body21["error"]["message"]
    assert "plays" not in body["error"]["message"]


async def test_deprecated_metrics_by_version(sim: server.Simulator) -> None:
    acct, reel = pick(sim, "REELS")
    _, body = await get(sim, f"/v25.0/{reel.id}/insights", acct.token, metric="reach,impressions")
    assert body["error"]["message"] == (
        "Starting from version v22.0 and above, the impressions metric is no longer supported for the queried media."
    )
    _, body = await get(sim, f"/v22.0/{reel.id}/insights", acct.token, metric="plays")
    assert "the plays metric is no longer supported" in body["error"]["message"]
    status, body = await get(sim, f"/v21.0/{reel.id}/insights", acct.token, metric="plays")
    assert status == 200
    assert body["data"][0]["name"] == "plays"
    _, body = await get(sim, f"/v21.0/{reel.id}/insights", acct.token, metric="video_views")
    assert "version v21.0 and above, the video_views metric" in body["error"]["message"]
    # impressions on <= v21 only for media created before July 2024
    old = next(
        (a, m)
        for a in sim.world.accounts
        for m in sim.world.media_of(a.ig_user_id)
        if m.product_type == "FEED"
        and m.posted < metrics.IMPRESSIONS_CUTOFF
        and (a.conversion_at is None or m.posted_at >= a.conversion_at)
    )
    status, _ = await get(sim, f"/v21.0/{old[1].id}/insights", old[0].token, metric="impressions")
    assert status == 200
    new_acct, new = pick(sim, "FEED")
    status, body = await get(sim, f"/v21.0/{new.id}/insights", new_acct.token, metric="impressions")
    assert status == 400
    assert "v22.0 and above, the impressions metric" in body["error"]["message"]


async def test_product_type_support_fails_the_whole_request(sim: server.Simulator) -> None:
    acct, media = pick(sim, "FEED", "IMAGE")
    status, body = await get(
        sim, f"/v25.0/{media.id}/insights", acct.token, metric="reach,navigation"
    )
    assert status == 400
    assert body["error"]["message"] == (
        "(#100) The Media Insights API does not support the navigation metric for this media product type."
    )
    _, body = await get(
        sim, f"/v25.0/{media.id}/insights", acct.token, metric="ig_reels_avg_watch_time"
    )
    assert "ig_reels_avg_watch_time metric" in body["error"]["message"]
    assert not sim.stats.served_for(media.id)


async def test_feed_views_rejection_knob(fake: clock.FakeClock) -> None:
    cfg = world.WorldConfig(
        seed=5, accounts=2, feed_views_rejected_fraction=1.0, converted_fraction=0.0
    )
    async with server.running(cfg, clock=fake) as sim:
        acct, media = pick(sim, "FEED")
        _, body = await get(sim, f"/v25.0/{media.id}/insights", acct.token, metric="views")
        assert body["error"]["message"].endswith(
            "does not support the views metric for this media product type."
        )
        acct, reel = pick(sim, "REELS")
        status, _ = await get(sim, f"/v25.0/{reel.id}/insights", acct.token, metric="views")
        assert status == 200


async def test_story_navigation_breakdown(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    story = sim.world.stories_of(acct.ig_user_id)[0]
    status, body = await get(
        sim, f"/v25.0/{story.id}/insights", acct.token,
        metric="navigation", breakdown="story_navigation_action_type",
    )  # fmt: skip
    assert status == 200
    entry = body["data"][0]
    total = sim.world.media_metric(story.id, "navigation", START)
    assert entry["values"] == [{"value": total}]
    bd = entry["total_value"]["breakdowns"][0]
    assert entry["total_value"]["value"] == total
    assert bd["dimension_keys"] == ["story_navigation_action_type"]
    assert sum(r["value"] for r in bd["results"]) == total
    assert {r["dimension_values"][0] for r in bd["results"]} <= set(world.NAVIGATION_DIMS)
    _, body = await get(
        sim, f"/v25.0/{story.id}/insights", acct.token, metric="views", breakdown="follow_type"
    )
    assert (
        body["error"]["message"]
        == "(#100) Incompatible breakdowns (follow_type) for metric (views)"
    )
    _, body = await get(
        sim, f"/v25.0/{story.id}/insights", acct.token, metric="views", breakdown="nope"
    )
    assert body["error"]["message"].startswith(
        "(#100) breakdown[0] must be one of the following values:"
    )


async def test_story_threshold_and_expiry(sim: server.Simulator, fake: clock.FakeClock) -> None:
    acct = sim.world.accounts[0]
    quiet = sim.world.post_story(acct.ig_user_id, quiet=True)
    fake.advance(3 * 3600)
    status, body = await get(sim, f"/v25.0/{quiet.id}/insights", acct.token, metric="reach")
    assert status == 400
    assert body["error"] == {
        "message": "(#10) Not enough viewers for the media to show insights",
        "type": "OAuthException",
        "code": 10,
        "fbtrace_id": body["error"]["fbtrace_id"],
    }
    fresh = sim.world.post_story(acct.ig_user_id)
    status, _ = await get(sim, f"/v25.0/{fresh.id}/insights", acct.token, metric="reach")
    assert status == 400  # nobody has seen a brand-new story yet
    fake.advance(6 * 3600)
    status, body = await get(
        sim, f"/v25.0/{fresh.id}/insights", acct.token, metric="reach,views,replies"
    )
    assert status == 200
    fake.advance(19 * 3600)
    assert fresh.id not in [s.id for s in sim.world.stories_of(acct.ig_user_id)]
    status, body = await get(sim, f"/v25.0/{fresh.id}/insights", acct.token, metric="reach")
    assert (status, body) == (200, {"data": []})


async def test_expired_story_error_knob(fake: clock.FakeClock) -> None:
    cfg = world.WorldConfig(
        seed=5, accounts=1, expired_story_insights="error", story_lifetime=timedelta(minutes=5)
    )
    async with server.running(cfg, clock=fake) as sim:
        acct = sim.world.accounts[0]
        story = sim.world.stories_of(acct.ig_user_id)[0]
        fake.advance(300)
        status, body = await get(sim, f"/v25.0/{story.id}/insights", acct.token, metric="reach")
        assert status == 400
        assert body["error"]["error_subcode"] == 33


async def test_media_before_business_conversion(sim: server.Simulator) -> None:
    acct = sim.world.accounts[1]
    media = sim.world.media_of(acct.ig_user_id)
    sim.world.set_conversion(acct.ig_user_id, media[10].posted_at)
    status, body = await get(sim, f"/v25.0/{media[11].id}/insights", acct.token, metric="reach")
    assert status == 400
    err = body["error"]
    assert (err["code"], err["error_subcode"], err["message"]) == (
        100,
        2108006,
        "Invalid parameter",
    )
    assert err["error_user_title"] == "Media posted before business account conversion"
    assert err["is_transient"] is False
    status, _ = await get(sim, f"/v25.0/{media[10].id}/insights", acct.token, metric="reach")
    assert status == 200
    # and a nested expansion over a page that includes old media fails as a whole
    status, body = await get(
        sim,
        f"/v25.0/{acct.ig_user_id}/media",
        acct.token,
        fields="id,insights.metric(reach)",
        limit="50",
    )
    assert status == 400
    assert body["error"]["error_subcode"] == 2108006


async def test_nested_insights_expansion(sim: server.Simulator) -> None:
    acct = sim.world.accounts[2]
    sim.world.set_conversion(acct.ig_user_id, None)
    status, body = await get(
        sim,
        f"/v25.0/{acct.ig_user_id}/media",
        acct.token,
        fields="id,media_type,insights.metric(reach,saved)",
        limit="10",
    )
    assert status == 200
    for item in body["data"]:
        data = item["insights"]["data"]
        assert [d["name"] for d in data] == ["reach", "saved"]
        assert data[0]["values"][0]["value"] == sim.world.media_metric(item["id"], "reach", START)
    status, body = await get(
        sim,
        f"/v25.0/{acct.ig_user_id}/media",
        acct.token,
        fields="id,insights.metric(reach,ig_reels_avg_watch_time)",
        limit="10",
    )
    assert status == 400
    assert "ig_reels_avg_watch_time" in body["error"]["message"]
    status, body = await get(
        sim, f"/v25.0/{acct.ig_user_id}/stories", acct.token,
        fields="id,insights.metric(navigation).breakdown(story_navigation_action_type)",
    )  # fmt: skip
    assert status == 200
    assert all("total_value" in s["insights"]["data"][0] for s in body["data"])


async def test_account_time_series_pacific_buckets(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    ig = acct.ig_user_id
    status, body = await get(
        sim,
        f"/v25.0/{ig}/insights",
        acct.token,
        metric="reach",
        period="day",
        since="1780272000",
        until="1780444800",
    )
    assert status == 200
    values = body["data"][0]["values"]
    assert [v["end_time"] for v in values] == [
        "2026-06-01T07:00:00+0000",
        "2026-06-02T07:00:00+0000",
    ]
    assert values[0]["value"] == sim.world.account_day_value(
        ig, "reach", datetime(2026, 5, 31).date(), START
    )
    assert body["paging"]["previous"].endswith(
        "since=1780099200&until=1780272000&access_token=" + acct.token
    ) or ("since=1780099200&until=1780272000" in body["paging"]["previous"])
    assert "since=1780444800&until=1780617600" in body["paging"]["next"]
    served = list(sim.stats.served_for(ig, "reach"))
    assert [(v.end_time, v.value) for v in served] == [
        (datetime(2026, 6, 1, 7, tzinfo=UTC), values[0]["value"]),
        (datetime(2026, 6, 2, 7, tzinfo=UTC), values[1]["value"]),
    ]
    # without since/until: the last complete day
    _, body = await get(sim, f"/v25.0/{ig}/insights", acct.token, metric="reach", period="day")
    assert [v["end_time"] for v in body["data"][0]["values"]] == ["2026-06-15T07:00:00+0000"]


async def test_winter_buckets_end_at_0800(fake: clock.FakeClock) -> None:
    fake2 = clock.FakeClock(datetime(2026, 1, 20, 12, tzinfo=UTC))
    async with server.running(
        world.WorldConfig(accounts=1, low_follower_fraction=0.0), clock=fake2
    ) as sim:
        acct = sim.world.accounts[0]
        since = int(datetime(2026, 1, 10, tzinfo=UTC).timestamp())
        _, body = await get(
            sim, f"/v25.0/{acct.ig_user_id}/insights", acct.token, metric="reach", period="day",
            since=str(since), until=str(since + 3 * 86400),
        )  # fmt: skip
        assert [v["end_time"][10:] for v in body["data"][0]["values"]] == ["T08:00:00+0000"] * 3


async def test_account_total_value_and_breakdowns(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    ig = acct.ig_user_id
    status, body = await get(
        sim, f"/v25.0/{ig}/insights", acct.token, metric="views,follows_and_unfollows", period="day",
        metric_type="total_value", breakdown="follow_type", since="1780272000", until="1780358400",
    )  # fmt: skip
    assert status == 200
    views, fau = body["data"]
    assert set(views) == {"name", "period", "title", "description", "total_value", "id"}
    assert views["total_value"]["value"] == sim.world.account_total(
        ig, "views", 1780272000, 1780358400, START
    )
    assert (
        sum(r["value"] for r in views["total_value"]["breakdowns"][0]["results"])
        == views["total_value"]["value"]
    )
    assert "value" not in fau["total_value"]
    dims = {r["dimension_values"][0] for r in fau["total_value"]["breakdowns"][0]["results"]}
    assert dims <= {"FOLLOWER", "NON_FOLLOWER"}
    assert "paging" in body


async def test_account_validation_messages(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    path = f"/v25.0/{acct.ig_user_id}/insights"
    _, body = await get(sim, path, acct.token, metric="reach,views,profile_views", period="day")
    assert body["error"]["message"] == (
        "(#100) The following metrics (views,profile_views) should be specified with parameter metric_type=total_value"
    )
    _, body = await get(sim, path, acct.token, metric="online_followers", period="week")
    assert (
        body["error"]["message"]
        == "(#100) The following periods (week) are incompatible with the metric (online_followers)"
    )
    _, body = await get(
        sim,
        path,
        acct.token,
        metric="reach",
        period="day",
        since="1700000000",
        until=str(1700000000 + 31 * 86400),
    )
    assert (
        body["error"]["message"]
        == "(#100) There cannot be more than 30 days (2592000 s) between since and until"
    )
    _, body = await get(sim, path, acct.token, metric="reach,nope", period="day")
    assert body["error"]["message"] == (
        "(#100) metric[1] must be one of the following values: reach, follower_count, website_clicks, profile_views, "
        "online_followers, accounts_engaged, total_interactions, likes, comments, shares, saves, replies, "
        "engaged_audience_demographics, reached_audience_demographics, follower_demographics, follows_and_unfollows, "
        "profile_links_taps, views, reposts"
    )
    _, body = await get(sim, path, acct.token, metric="impressions", period="day")
    assert body["error"]["message"].startswith(
        "Starting from version 22 and above, the impressions metric is no longer supported for the queried user."
    )
    status, _ = await get(
        sim, path.replace("v25.0", "v21.0"), acct.token, metric="impressions", period="day"
    )
    assert status == 200
    _, body = await get(
        sim,
        path,
        acct.token,
        metric="views",
        period="day",
        metric_type="total_value",
        breakdown="contact_button_type",
    )
    assert (
        body["error"]["message"]
        == "(#100) Incompatible breakdowns (contact_button_type) for metric (views)"
    )
    status, _ = await get(
        sim, path.replace("v25.0", "v20.0"), acct.token, metric="profile_views", period="day"
    )
    assert status == 200


async def test_demographics_and_online_followers(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    path = f"/v25.0/{acct.ig_user_id}/insights"
    status, body = await get(
        sim, path, acct.token, metric="follower_demographics", period="lifetime",
        metric_type="total_value", timeframe="this_month", breakdown="country",
    )  # fmt: skip
    assert status == 200
    entry = body["data"][0]
    assert set(entry["total_value"]) == {"breakdowns"}
    results = entry["total_value"]["breakdowns"][0]["results"]
    assert sum(r["value"] for r in results) <= sim.world.followers_count(acct.ig_user_id, START)
    assert "paging" not in body
    _, body = await get(
        sim, path, acct.token, metric="follower_demographics", period="lifetime",
        metric_type="total_value", breakdown="age,gender",
    )  # fmt: skip
    assert body["data"][0]["total_value"]["breakdowns"][0]["dimension_keys"] == ["age", "gender"]
    _, body = await get(
        sim,
        path,
        acct.token,
        metric="online_followers",
        period="lifetime",
        since=str(int(START.timestamp()) - 3 * 86400),
        until=str(int(START.timestamp())),
    )
    values = body["data"][0]["values"]
    assert len(values) == 3
    assert set(values[0]["value"]) == {str(h) for h in range(24)}


async def test_follower_metrics_empty_under_100_followers(fake: clock.FakeClock) -> None:
    async with server.running(
        world.WorldConfig(accounts=2, low_follower_fraction=1.0), clock=fake
    ) as sim:
        acct = sim.world.accounts[0]
        path = f"/v25.0/{acct.ig_user_id}/insights"
        status, body = await get(sim, path, acct.token, metric="follower_count", period="day")
        assert (status, body) == (200, {"data": []})
        _, body = await get(
            sim, path, acct.token, metric="follower_demographics", period="lifetime",
            metric_type="total_value", breakdown="age",
        )  # fmt: skip
        assert body == {"data": []}
        _, body = await get(sim, path, acct.token, metric="reach,follower_count", period="day")
        assert [d["name"] for d in body["data"]] == ["reach"]
        # fields have no threshold
        status, body = await get(
            sim, f"/v25.0/{acct.ig_user_id}", acct.token, fields="followers_count"
        )
        assert body["followers_count"] < 100


async def test_lifetime_counters_grow_between_polls(
    sim: server.Simulator, fake: clock.FakeClock
) -> None:
    acct = sim.world.accounts[0]
    newest = sim.world.media_of(acct.ig_user_id)[0]
    _, first = await get(sim, f"/v25.0/{newest.id}/insights", acct.token, metric="views")
    _, user1 = await get(sim, f"/v25.0/{acct.ig_user_id}", acct.token, fields="followers_count")
    fake.advance(3600)
    _, second = await get(sim, f"/v25.0/{newest.id}/insights", acct.token, metric="views")
    _, user2 = await get(sim, f"/v25.0/{acct.ig_user_id}", acct.token, fields="followers_count")
    assert second["data"][0]["values"][0]["value"] > first["data"][0]["values"][0]["value"]
    assert user2["followers_count"] > user1["followers_count"]
