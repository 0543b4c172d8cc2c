"""Our bodies against the example bodies of the reference (graph-api.md §14), key by key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from collector import clock
from collector.simulator import server, world

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

REF_A: dict[str, Any] = {
    "data": [
        {
            "id": "118981261308043",
            "name": "Acme Coffee",
            "instagram_business_account": {"id": "17841462785487205"},
        },
        {"id": "204500000000001", "name": "Acme Internal Page"},
    ],
    "paging": {"cursors": {"before": "QVFIUmFaZAU9yZAXZA", "after": "QVFIUjNIWl9ISTNCN3V"}},
}
REF_B = {
    "id": "17841462785487205",
    "username": "acmecoffee",
    "followers_count": 419,
    "follows_count": 112,
    "media_count": 306,
}
REF_C: dict[str, Any] = {
    "data": [
        {"id": "18246395218306388", "media_type": "VIDEO", "media_product_type": "REELS",
         "timestamp": "2026-05-07T13:00:34+0000", "permalink": "https://www.instagram.com/reel/DYCdDzPjXGK/",
         "like_count": 11, "comments_count": 0},
    ],
    "paging": {"cursors": {"before": "QVFIUkJ1c2VyQmVmb3Jl", "after": "QVFIUkFmdGVyQ3Vyc29y"},
               "next": "https://graph.facebook.com/v25.0/17841462785487205/media?after=x"},
}  # fmt: skip
REF_D_ITEM = {"name": "reach", "period": "lifetime", "values": [{"value": 763}], "title": "Accounts reached",
              "description": "…", "id": "18246395218306388/insights/reach/lifetime"}  # fmt: skip
REF_E: dict[str, Any] = {"data": [{
    "name": "navigation", "period": "lifetime", "values": [{"value": 25}], "title": "Navigation", "description": "…",
    "total_value": {"value": 25, "breakdowns": [{"dimension_keys": ["story_navigation_action_type"],
                    "results": [{"dimension_values": ["tap_forward"], "value": 19}]}]},
    "id": "17969782069736348/insights/navigation/lifetime"}]}  # fmt: skip
REF_F: dict[str, Any] = {
    "data": [{"name": "reach", "period": "day",
              "values": [{"value": 212, "end_time": "2026-06-01T07:00:00+0000"}],
              "title": "Reach", "description": "…", "id": "17841462785487205/insights/reach/day"}],
    "paging": {"previous": "https://graph.facebook.com/…", "next": "https://graph.facebook.com/…"},
}  # fmt: skip
REF_G: dict[str, Any] = {
    "data": [
        {"name": "views", "period": "day", "title": "Views", "description": "…",
         "total_value": {"value": 3410, "breakdowns": [{"dimension_keys": ["follow_type"],
                         "results": [{"dimension_values": ["FOLLOWER"], "value": 1220}]}]},
         "id": "17841462785487205/insights/views/day"},
        {"name": "follows_and_unfollows", "period": "day", "title": "Follows and unfollows", "description": "…",
         "total_value": {"breakdowns": [{"dimension_keys": ["follow_type"],
                         "results": [{"dimension_values": ["FOLLOWER"], "value": 14}]}]},
         "id": "17841462785487205/insights/follows_and_unfollows/day"},
    ],
    "paging": {"previous": "https://graph.facebook.com/v25.0/...", "next": "https://graph.facebook.com/v25.0/..."},
}  # fmt: skip
REF_H: dict[str, Any] = {"data": [{"name": "follower_demographics", "period": "lifetime", "title": "Follower demographics",
                   "description": "…", "total_value": {"breakdowns": [{"dimension_keys": ["country"],
                   "results": [{"dimension_values": ["US"], "value": 181}]}]},
                   "id": "17841462785487205/insights/follower_demographics/lifetime"}]}  # fmt: skip
REF_ERR_PLAIN = {
    "message": "…",
    "type": "OAuthException",
    "code": 80002,
    "fbtrace_id": "AmFGcW_3hwDB7qFbl_QdebZ",
}
REF_ERR_SUB = {
    "message": "…",
    "type": "OAuthException",
    "code": 190,
    "error_subcode": 463,
    "fbtrace_id": "AWpk5h2ceG6",
}
REF_ERR_2108006 = {
    "message": "Invalid parameter", "type": "OAuthException", "code": 100, "error_data": {"blame_field_specs": [[""]]},
    "error_subcode": 2108006, "is_transient": False, "error_user_title": "…", "error_user_msg": "…",
    "fbtrace_id": "A8lGX5r60lMwL4B5nKv19u9",
}  # fmt: skip
REF_ERR_CODE2 = {"message": "Service temporarily unavailable", "type": "OAuthException", "is_transient": False,
                 "code": 2, "error_subcode": 1504044, "fbtrace_id": "VWX678yz"}  # fmt: skip
REF_ERR_CODE4 = {"message": "(#4) Application request limit reached", "type": "OAuthException",
                 "is_transient": True, "code": 4, "fbtrace_id": "E+h93KlSgIM"}  # fmt: skip
REF_BUC: dict[str, Any] = {"645699291956344": [{"type": "instagram", "call_count": 97, "total_cputime": 23, "total_time": 31,
                                "estimated_time_to_regain_access": 0}]}  # fmt: skip
REF_APP_USAGE = {"call_count": 28, "total_time": 25, "total_cputime": 25}
REF_K: list[Any] = [{"code": 200, "body": "{}"}, {"code": 400, "body": "{}"}, None]
REF_L: dict[str, Any] = {"data": {"app_id": "1174274799094721", "type": "USER", "application": "Insights Collector",
                  "data_access_expires_at": 1788220800, "expires_at": 1785628800, "is_valid": True,
                  "issued_at": 1780444800, "scopes": ["instagram_basic"],
                  "granular_scopes": [{"scope": "instagram_basic", "target_ids": ["17841462785487205"]}],
                  "user_id": "10212345678901234"}}  # fmt: skip
REF_M: dict[str, Any] = {"object": "instagram", "entry": [{"id": "17841405309211844", "time": 1547687043, "changes": [
    {"field": "story_insights", "value": {"media_id": "18023345989012587", "exits": 1, "replies": 0, "reach": 17,
                                          "taps_forward": 12, "taps_back": 0, "impressions": 28}}]}]}  # fmt: skip


def shape(value: Any) -> Any:
    """The structure of a JSON value: dict keys recursively, one list element, scalar kinds."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def same_shape(ours: Any, ref: Any) -> None:
    assert shape(ours) == shape(ref), json.dumps(ours)[:600]


@pytest.fixture
async def sim() -> AsyncIterator[server.Simulator]:
    cfg = world.WorldConfig(
        seed=11, accounts=3, media_per_account=30, low_follower_fraction=0.0, quiet_story_fraction=0.0,
        converted_fraction=0.0, extra_pages=1,
    )  # fmt: skip
    async with server.running(cfg, clock=clock.FakeClock(START)) as s:
        yield s


async def get(
    sim: server.Simulator, path: str, token: str, **params: str
) -> tuple[Any, dict[str, str]]:
    params["access_token"] = token
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.base_url}{path}", params=params) as resp,
    ):
        return json.loads(await resp.text()), dict(resp.headers)


async def test_discovery_and_nodes(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    body, _ = await get(
        sim, "/v25.0/me/accounts", acct.token, fields="id,name,instagram_business_account"
    )
    same_shape(body["data"][0], REF_A["data"][0])
    same_shape(body["paging"], REF_A["paging"])
    body, _ = await get(
        sim, "/v25.0/me/accounts", sim.world.user_token, fields="id,name,instagram_business_account"
    )
    same_shape(body["data"][-1], REF_A["data"][1])
    body, _ = await get(sim, f"/v25.0/{acct.ig_user_id}", acct.token,
                        fields="id,username,followers_count,follows_count,media_count")  # fmt: skip
    same_shape(body, REF_B)
    assert list(body) == list(REF_B)
    reel = next(m for m in sim.world.media_of(acct.ig_user_id))
    body, _ = await get(sim, f"/v25.0/{acct.ig_user_id}/media", acct.token, limit="2",
                        fields="id,media_type,media_product_type,timestamp,permalink,like_count,comments_count")  # fmt: skip
    assert reel.id == body["data"][0]["id"]
    same_shape(body["data"][0], REF_C["data"][0])
    same_shape(body["paging"], REF_C["paging"])


async def test_insights_bodies(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    ig = acct.ig_user_id
    reel = next(
        m
        for a in sim.world.accounts
        for m in sim.world.media_of(a.ig_user_id)
        if m.product_type == "REELS"
    )
    owner = sim.world.account(reel.ig_user_id)
    body, _ = await get(sim, f"/v25.0/{reel.id}/insights", owner.token,
                        metric="reach,views,ig_reels_avg_watch_time,reels_skip_rate")  # fmt: skip
    assert set(body) == {"data"}
    for item in body["data"]:
        same_shape(item, REF_D_ITEM)
    story = sim.world.stories_of(ig)[0]
    body, _ = await get(sim, f"/v25.0/{story.id}/insights", acct.token,
                        metric="navigation", breakdown="story_navigation_action_type")  # fmt: skip
    same_shape(body, REF_E)
    body, _ = await get(sim, f"/v25.0/{ig}/insights", acct.token, metric="reach", period="day",
                        since="1780272000", until="1780444800")  # fmt: skip
    same_shape(body, REF_F)
    body, _ = await get(sim, f"/v25.0/{ig}/insights", acct.token, metric="views,follows_and_unfollows",
                        period="day", metric_type="total_value", breakdown="follow_type",
                        since="1780272000", until="1780358400")  # fmt: skip
    same_shape(body, REF_G)
    body, _ = await get(sim, f"/v25.0/{ig}/insights", acct.token, metric="follower_demographics",
                        period="lifetime", metric_type="total_value", timeframe="this_month", breakdown="country")  # fmt: skip
    same_shape(body, REF_H)


async def test_error_envelopes_and_headers(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    ig = acct.ig_user_id
    body, headers = await get(
        sim, f"/v25.0/{ig}/insights", acct.token, metric="reach,bogus", period="day"
    )
    same_shape(body["error"], REF_ERR_PLAIN)
    buc = json.loads(headers["X-Business-Use-Case-Usage"])
    for pools in buc.values():
        same_shape(pools, REF_BUC["645699291956344"])
    body, headers = await get(sim, "/v25.0/me/accounts", acct.token)
    same_shape(json.loads(headers["X-App-Usage"]), REF_APP_USAGE)
    sim.world.set_token_state(ig, "expired")
    body, _ = await get(sim, f"/v25.0/{ig}", acct.token)
    same_shape(body["error"], REF_ERR_SUB)
    sim.world.set_token_state(ig, "ok")
    media = sim.world.media_of(ig)
    sim.world.set_conversion(ig, media[0].posted_at + timedelta(seconds=1))
    body, _ = await get(sim, f"/v25.0/{media[0].id}/insights", acct.token, metric="reach")
    same_shape(body["error"], REF_ERR_2108006)
    sim.faults.script("/insights", ["code2", "code4"])
    body, _ = await get(sim, f"/v25.0/{ig}/insights", acct.token, metric="reach", period="day")
    same_shape(body["error"], REF_ERR_CODE2)
    body, _ = await get(sim, f"/v25.0/{ig}/insights", acct.token, metric="reach", period="day")
    same_shape(body["error"], REF_ERR_CODE4)


async def test_batch_debug_token_and_webhook(sim: server.Simulator) -> None:
    acct = sim.world.accounts[1]
    media = sim.world.media_of(acct.ig_user_id)
    ops = [
        {"method": "GET", "relative_url": f"{media[0].id}/insights?metric=reach"},
        {"method": "GET", "relative_url": f"{media[1].id}/insights?metric=navigation"},
        {"method": "GET", "relative_url": f"{media[2].id}/insights?metric=saved"},
    ]
    sim.faults.script(media[2].id, ["timeout"])
    form = {"access_token": acct.token, "include_headers": "false", "batch": json.dumps(ops)}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.base_url}/v25.0/", data=form) as resp,
    ):
        body = await resp.json()
    assert [shape(e) for e in body] == [shape(e) for e in REF_K]
    inner = json.loads(body[0]["body"])
    same_shape(inner["data"][0], REF_D_ITEM)
    body, _ = await get(sim, "/v25.0/debug_token", sim.world.app_token, input_token=acct.token)
    same_shape(body, REF_L)
    story = sim.world.stories_of(acct.ig_user_id)[0]
    payload: dict[str, Any] = {
        "object": "instagram",
        "entry": [{"id": acct.ig_user_id, "time": 0, "changes": [
            {"field": "story_insights", "value": {"media_id": story.id, **sim.webhooks.story_values(story)}}]}],
    }  # fmt: skip
    same_shape(payload, REF_M)
    assert list(payload["entry"][0]["changes"][0]["value"]) == list(
        REF_M["entry"][0]["changes"][0]["value"]
    )
