"""Simulator endpoints over real HTTP: discovery, nodes, edges, paging, fields, multi-id."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from collector import clock
from collector.simulator import server, world

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sim() -> AsyncIterator[server.Simulator]:
    cfg = world.WorldConfig(seed=3, accounts=30, media_per_account=60, extra_pages=2)
    async with server.running(cfg, clock=clock.FakeClock(START)) as s:
        yield s


async def get(
    sim: server.Simulator, path: str, token: str | None = None, **params: str
) -> tuple[int, Any, dict[str, str]]:
    if token is not None:
        params["access_token"] = token
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.base_url}{path}", params=params) as resp,
    ):
        return resp.status, json.loads(await resp.text()), dict(resp.headers)


async def test_me_accounts_paginates_all_pages_for_the_user_token(sim: server.Simulator) -> None:
    token = sim.world.user_token
    status, body, headers = await get(
        sim, "/v25.0/me/accounts", token, fields="id,name,instagram_business_account"
    )
    assert status == 200
    assert len(body["data"]) == 25
    assert set(body["paging"]["cursors"]) == {"before", "after"}
    assert "previous" not in body["paging"]
    assert "X-App-Usage" in headers
    nxt = body["paging"]["next"]
    assert token in nxt
    assert nxt.startswith(sim.base_url + "/v25.0/me/accounts?")
    async with aiohttp.ClientSession() as session, session.get(nxt) as resp:
        page2 = await resp.json()
    assert "next" not in page2["paging"]
    assert "previous" in page2["paging"]
    pages = body["data"] + page2["data"]
    assert len(pages) == 32
    linked = [p for p in pages if "instagram_business_account" in p]
    assert {p["instagram_business_account"]["id"] for p in linked} == {
        a.ig_user_id for a in sim.world.accounts
    }
    assert len(pages) - len(linked) == 2


async def test_account_token_sees_only_its_page(sim: server.Simulator) -> None:
    acct = sim.world.accounts[4]
    _, body, _ = await get(
        sim,
        "/v25.0/me/accounts",
        acct.token,
        fields="id,access_token,instagram_business_account{id,username}",
    )
    assert body["data"] == [
        {
            "id": acct.page_id,
            "access_token": acct.token,
            "instagram_business_account": {"id": acct.ig_user_id, "username": acct.username},
        }
    ]
    _, page, _ = await get(
        sim, f"/v25.0/{acct.page_id}", acct.token, fields="instagram_business_account"
    )
    # Graph nodes carry their id even when it was not asked for (reference §1.1 sample).
    assert page == {"instagram_business_account": {"id": acct.ig_user_id}, "id": acct.page_id}


async def test_ig_user_fields_and_field_errors(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    status, body, headers = await get(
        sim,
        f"/v25.0/{acct.ig_user_id}",
        acct.token,
        fields="id,username,followers_count,follows_count,media_count",
    )
    assert status == 200
    assert body == {
        "id": acct.ig_user_id,
        "username": acct.username,
        "followers_count": sim.world.followers_count(acct.ig_user_id, START),
        "follows_count": acct.follows,
        "media_count": 60,
    }
    assert "X-Business-Use-Case-Usage" in headers
    status, body, _ = await get(sim, f"/v25.0/{acct.ig_user_id}", acct.token, fields="id,bogus")
    assert status == 400
    assert body["error"]["code"] == 100
    assert body["error"]["message"].startswith("(#100) Tried accessing nonexisting field (bogus)")
    status, body, _ = await get(
        sim, f"/v25.0/{acct.ig_user_id}", acct.token, fields="id,username,id"
    )
    assert status == 400
    assert body["error"]["code"] == 2500
    assert body["error"]["message"].startswith(
        '(#2500) Syntax error "Field id specified more than once'
    )
    _, body, _ = await get(sim, f"/v25.0/{acct.ig_user_id}", acct.token)
    assert body == {"id": acct.ig_user_id}


async def test_media_edge_newest_first_with_cursor_paging(sim: server.Simulator) -> None:
    acct = sim.world.accounts[1]
    expected = [m.id for m in sim.world.media_of(acct.ig_user_id)]
    seen: list[str] = []
    status, body, _ = await get(
        sim, f"/v25.0/{acct.ig_user_id}/media", acct.token, fields="id,timestamp"
    )
    assert status == 200
    assert len(body["data"]) == 25
    while True:
        seen += [m["id"] for m in body["data"]]
        if "next" not in body["paging"]:
            break
        async with aiohttp.ClientSession() as session, session.get(body["paging"]["next"]) as resp:
            body = await resp.json()
    assert seen == expected
    stamps = [m.posted for m in sim.world.media_of(acct.ig_user_id)]
    assert stamps == sorted(stamps, reverse=True)
    # before= walks back towards the newest
    after = body["paging"]["cursors"]["before"]
    _, back, _ = await get(
        sim, f"/v25.0/{acct.ig_user_id}/media", acct.token, before=after, limit="5"
    )
    assert [m["id"] for m in back["data"]] == expected[50 - 5 : 50]


async def test_media_fields_absent_is_not_zero(sim: server.Simulator) -> None:
    acct = sim.world.accounts[2]
    media = sim.world.media_of(acct.ig_user_id)
    image = next(m for m in media if m.media_type == "IMAGE")
    reel = next(m for m in media if m.product_type == "REELS")
    wanted = "id,media_type,media_product_type,timestamp,permalink,like_count,comments_count,thumbnail_url,total_views_count"
    _, body, _ = await get(sim, f"/v25.0/{image.id}", acct.token, fields=wanted)
    assert "thumbnail_url" not in body
    assert "total_views_count" not in body
    assert body["timestamp"] == image.posted_at.strftime("%Y-%m-%dT%H:%M:%S+0000")
    assert body["permalink"] == f"https://www.instagram.com/p/{image.shortcode}/"
    assert body["like_count"] == sim.world.media_metric(image.id, "likes", START)
    _, body, _ = await get(sim, f"/v25.0/{reel.id}", acct.token, fields=wanted)
    assert body["media_type"] == "VIDEO"
    assert body["media_product_type"] == "REELS"
    assert "/reel/" in body["permalink"]
    assert "thumbnail_url" in body
    status, body, _ = await get(sim, f"/v25.0/{reel.id}", acct.token, fields="view_count")
    assert status == 400
    assert body["error"]["code"] == 36104


async def test_stories_edge_lists_only_live_stories(sim: server.Simulator) -> None:
    acct = sim.world.accounts[3]
    _, body, _ = await get(
        sim, f"/v25.0/{acct.ig_user_id}/stories", acct.token, fields="id,media_product_type"
    )
    ids = [s["id"] for s in body["data"]]
    assert ids == [s.id for s in sim.world.stories_of(acct.ig_user_id)]
    assert {s["media_product_type"] for s in body["data"]} == {"STORY"}
    _, media, _ = await get(sim, f"/v25.0/{acct.ig_user_id}/media", acct.token, limit="100")
    assert not set(ids) & {m["id"] for m in media["data"]}


async def test_multi_ids_and_nested_edge_fields(sim: server.Simulator) -> None:
    acct = sim.world.accounts[5]
    media = sim.world.media_of(acct.ig_user_id)[:2]
    ids = ",".join(m.id for m in media)
    status, body, _ = await get(sim, "/v25.0/", acct.token, ids=ids, fields="id,media_type")
    assert status == 200
    assert set(body) == {m.id for m in media}
    assert body[media[0].id] == {"id": media[0].id, "media_type": media[0].media_type}
    status, body, _ = await get(sim, "/v25.0/", acct.token, ids=f"{ids},999")
    assert status == 400
    assert body["error"]["code"] == 803
    _, body, _ = await get(
        sim, f"/v25.0/{acct.ig_user_id}", acct.token, fields="id,media.limit(3){id,timestamp}"
    )
    assert [m["id"] for m in body["media"]["data"]] == [
        m.id for m in sim.world.media_of(acct.ig_user_id)[:3]
    ]
    assert "next" in body["media"]["paging"]


async def test_other_accounts_objects_are_invisible(sim: server.Simulator) -> None:
    mine, theirs = sim.world.accounts[0], sim.world.accounts[1]
    status, body, _ = await get(sim, f"/v25.0/{theirs.ig_user_id}", mine.token)
    assert status == 400
    assert body["error"]["code"] == 100
    assert body["error"]["error_subcode"] == 33
    assert body["error"]["type"] == "GraphMethodException"
    status, _, _ = await get(sim, f"/v25.0/{theirs.ig_user_id}", sim.world.user_token)
    assert status == 200


async def test_unknown_version_and_path(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    status, body, _ = await get(sim, f"/v99.0/{acct.ig_user_id}", acct.token)
    assert status == 400
    assert body["error"]["code"] == 2500
    assert body["error"]["message"].startswith("Unknown path components")
    status, _, _ = await get(sim, f"/v16.0/{acct.ig_user_id}", acct.token)
    assert status == 200  # expired versions are served by the oldest available one
    status, body, _ = await get(sim, f"/v25.0/{acct.ig_user_id}/nothing", acct.token)
    assert status == 400
    assert body["error"]["code"] == 2500
