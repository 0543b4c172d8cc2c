"""The simulator's two hosts (Facebook Login, Instagram Login), token refresh, Page listings
for discovery, and the legacy features a new app may not use."""

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


@pytest.fixture
async def fake() -> clock.FakeClock:
    return clock.FakeClock(START)


@pytest.fixture
async def sim(fake: clock.FakeClock) -> AsyncIterator[server.Simulator]:
    cfg = world.WorldConfig(
        seed=11,
        accounts=8,
        extra_pages=3,
        instagram_login=frozenset({7}),
        unreadable=frozenset({2}),
        media_per_account=5,
    )
    async with server.running(cfg, clock=fake) as s:
        yield s


async def get(base: str, path: str, token: str | None, **params: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}{path}", params=params, headers=headers) as resp,
    ):
        return resp.status, json.loads(await resp.text())


async def test_instagram_login_account_lives_on_its_own_host(sim: server.Simulator) -> None:
    ig = sim.world.accounts[7]
    assert ig.login == "instagram"
    assert ig.token.startswith("IGAA")
    status, body = await get(
        sim.instagram_base_url, "/v25.0/me", ig.token, fields="user_id,username"
    )
    assert (status, body) == (
        200,
        {"user_id": ig.ig_user_id, "username": ig.username, "id": ig.ig_user_id},
    )
    # the Instagram User token means nothing to graph.facebook.com, and the reverse
    status, body = await get(sim.base_url, f"/v25.0/{ig.ig_user_id}", ig.token)
    assert (status, body["error"]["code"]) == (400, 190)
    fb = sim.world.accounts[0]
    status, body = await get(sim.instagram_base_url, f"/v25.0/{fb.ig_user_id}", fb.token)
    assert (status, body["error"]["code"]) == (400, 190)
    # no Page listing, debug_token or batch on the instagram host
    for path in ("/v25.0/me/accounts", "/v25.0/debug_token"):
        status, body = await get(sim.instagram_base_url, path, ig.token)
        assert status == 400
        assert body["error"]["code"] == 2500
    # an Instagram Login account has no Page
    status, body = await get(sim.base_url, "/v25.0/me/accounts", sim.world.user_token, limit="50")
    assert ig.ig_user_id not in json.dumps(body)
    records = [r for r in sim.stats.requests if r.host == "instagram"]
    assert records
    assert {r.kind for r in records} >= {"me"}


async def test_instagram_host_has_its_own_media_metric_set(sim: server.Simulator) -> None:
    ig = sim.world.accounts[7]
    media = sim.world.media_of(ig.ig_user_id)[0]
    path = f"/v25.0/{media.id}/insights"
    status, body = await get(sim.instagram_base_url, path, ig.token, metric="reach,total_views")
    assert status == 400
    message = body["error"]["message"]
    assert message.startswith("(#100) metric[1] must be one of the following values: ")
    assert "total_views" not in message
    assert "reach" in message
    status, body = await get(sim.instagram_base_url, path, ig.token, metric="reach")
    assert status == 200
    assert body["data"][0]["name"] == "reach"


async def test_refresh_rules(sim: server.Simulator, fake: clock.FakeClock) -> None:
    ig = sim.world.accounts[7]
    host = sim.instagram_base_url
    seed = ig.token
    status, body = await get(host, "/refresh_access_token", seed, grant_type="ig_refresh_token")
    assert status == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 60 * 86400
    fresh = body["access_token"]
    assert fresh != seed
    # the old token stops working, the new one works
    status, body = await get(host, "/v25.0/me", seed)
    assert (status, body["error"]["code"]) == (400, 190)
    status, _ = await get(host, "/v25.0/me", fresh)
    assert status == 200
    # a token under 24 hours old is not refreshed
    status, body = await get(host, "/refresh_access_token", fresh, grant_type="ig_refresh_token")
    assert status == 400
    assert "at least 24 hours old" in body["error"]["message"]
    fake.advance(25 * 3600)
    status, body = await get(
        host, "/v25.0/refresh_access_token", fresh, grant_type="ig_refresh_token"
    )
    assert status == 200
    newer = body["access_token"]
    assert ig.token_expires_at == (fake.now() + timedelta(days=60)).replace(microsecond=0)
    # an expired token is not refreshed; a refused one neither
    fake.advance(61 * 86400)
    status, body = await get(host, "/refresh_access_token", newer, grant_type="ig_refresh_token")
    assert (status, body["error"]["code"], body["error"].get("error_subcode")) == (400, 190, 463)
    ig.token_expires_at = fake.now() + timedelta(days=5)
    sim.world.set_refresh_fails(ig.ig_user_id)
    status, body = await get(host, "/refresh_access_token", newer, grant_type="ig_refresh_token")
    assert status == 400
    status, body = await get(host, "/refresh_access_token", newer, grant_type="fb_exchange_token")
    assert "grant_type" in body["error"]["message"]
    # a Facebook token cannot be refreshed there
    status, body = await get(
        host, "/refresh_access_token", sim.world.accounts[0].token, grant_type="ig_refresh_token"
    )
    assert (status, body["error"]["code"]) == (400, 190)


async def test_page_listing_for_discovery(sim: server.Simulator) -> None:
    w = sim.world
    fields = "id,name,access_token,instagram_business_account{id,username}"
    status, page1 = await get(
        sim.base_url, "/v25.0/me/accounts", w.user_token, fields=fields, limit="4"
    )
    assert status == 200
    assert len(page1["data"]) == 4
    after = page1["paging"]["cursors"]["after"]
    rest: list[Any] = []
    while True:
        status, page = await get(
            sim.base_url, "/v25.0/me/accounts", w.user_token, fields=fields, limit="4", after=after
        )
        rest += page["data"]
        if "next" not in page["paging"]:
            break
        after = page["paging"]["cursors"]["after"]
    pages = page1["data"] + rest
    # 7 Facebook Login accounts with their Page, and 3 Pages without an Instagram account
    assert len(pages) == 10
    assert sum("instagram_business_account" not in p for p in pages) == 3
    for p in pages:
        assert p["access_token"]
    # the Page token of account 2 cannot read its account
    unreadable = w.accounts[2]
    status, body = await get(
        sim.base_url, f"/v25.0/{unreadable.ig_user_id}", unreadable.token, fields="id,username"
    )
    assert (status, body["error"]["code"]) == (400, 10)
    # a removed Page leaves the listing
    w.remove_page(w.accounts[3].ig_user_id)
    status, body = await get(
        sim.base_url, "/v25.0/me/accounts", w.user_token, fields=fields, limit="50"
    )
    assert len(body["data"]) == 9
    assert w.accounts[3].ig_user_id not in json.dumps(body)


async def test_a_new_app_may_not_use_legacy_features(fake: clock.FakeClock) -> None:
    cfg = world.WorldConfig(seed=2, accounts=2, new_app=True)
    async with server.running(cfg, clock=fake) as sim:
        acct = sim.world.accounts[0]
        status, body = await get(sim.base_url, "/v25.0/", acct.token, ids=acct.ig_user_id)
        assert status == 400
        assert "Multi-ID requests" in body["error"]["message"]
        status, body = await get(
            sim.base_url, f"/v25.0/{acct.ig_user_id}", acct.token, fields="username.as(handle)"
        )
        assert "Field aliases" in body["error"]["message"]
        status, body = await get(
            sim.base_url, f"/v25.0/{acct.ig_user_id}", acct.token, fields="id,username"
        )
        assert status == 200
    cfg = world.WorldConfig(seed=2, accounts=2)
    async with server.running(cfg, clock=fake) as sim:
        acct = sim.world.accounts[0]
        status, body = await get(sim.base_url, "/v25.0/", acct.token, ids=acct.ig_user_id)
        assert status == 200


async def test_config_toml_names_both_hosts(sim: server.Simulator) -> None:
    text = sim.config_toml()
    assert f'instagram_base_url = "{sim.instagram_base_url}"' in text
    assert text.count('login = "instagram"') == 1
