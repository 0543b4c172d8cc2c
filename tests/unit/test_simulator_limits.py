"""Rate limits (BUC and app), usage headers, and the batch endpoint over HTTP."""

from __future__ import annotations

import json
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


async def get(sim: server.Simulator, path: str, **params: str) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.base_url}{path}", params=params) as resp,
    ):
        return resp.status, json.loads(await resp.text()), dict(resp.headers)


async def post(sim: server.Simulator, path: str, form: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.base_url}{path}", data=form) as resp,
    ):
        return resp.status, json.loads(await resp.text())


async def test_account_budget_header_throttle_and_recovery(fake: clock.FakeClock) -> None:
    cfg = world.WorldConfig(accounts=2, account_budget=10, account_window=timedelta(hours=1))
    async with server.running(cfg, clock=fake) as sim:
        acct, other = sim.world.accounts
        path = f"/v25.0/{acct.ig_user_id}"
        for i in range(10):
            status, _, headers = await get(sim, path, access_token=acct.token)
            assert status == 200
            usage = json.loads(headers["X-Business-Use-Case-Usage"])
            assert set(usage) == {acct.business_id, acct.ig_user_id}
            pool = usage[acct.ig_user_id][0]
            assert set(pool) == {
                "type",
                "call_count",
                "total_cputime",
                "total_time",
                "estimated_time_to_regain_access",
            }
            assert pool["type"] == "instagram"
            assert pool["call_count"] == (i + 1) * 10
        status, body, headers = await get(sim, path, access_token=acct.token)
        assert status == 400
        assert body["error"]["code"] == 80002
        assert body["error"]["message"].startswith(
            "(#80002) There have been too many calls to this Instagram account. Wait a bit and try again."
        )
        pool = json.loads(headers["X-Business-Use-Case-Usage"])[acct.ig_user_id][0]
        assert pool["call_count"] == 100
        assert 0 < pool["estimated_time_to_regain_access"] <= 60
        # another account is unaffected
        status, _, _ = await get(sim, f"/v25.0/{other.ig_user_id}", access_token=other.token)
        assert status == 200
        fake.advance(pool["estimated_time_to_regain_access"] * 60)
        status, _, _ = await get(sim, path, access_token=acct.token)
        assert status == 200
        assert sim.stats.errors_by_class["80002"] == 1


async def test_app_budget(fake: clock.FakeClock) -> None:
    cfg = world.WorldConfig(accounts=1, app_budget=5, app_window=timedelta(minutes=10))
    async with server.running(cfg, clock=fake) as sim:
        acct = sim.world.accounts[0]
        for _ in range(5):
            status, _, _ = await get(sim, "/v25.0/me/accounts", access_token=acct.token)
            assert status == 200
        status, body, headers = await get(sim, "/v25.0/me/accounts", access_token=acct.token)
        assert status == 403
        err = dict(body["error"])
        err.pop("fbtrace_id")
        assert err == {
            "message": "(#4) Application request limit reached",
            "type": "OAuthException",
            "code": 4,
            "is_transient": True,
        }
        assert json.loads(headers["X-App-Usage"]) == {
            "call_count": 100,
            "total_time": 90,
            "total_cputime": 80,
        }
        fake.advance(600)
        status, _, headers = await get(sim, "/v25.0/me/accounts", access_token=acct.token)
        assert status == 200
        assert set(json.loads(headers["X-App-Usage"])) == {
            "call_count",
            "total_time",
            "total_cputime",
        }


async def test_batch_in_order_with_headers_and_separate_counting(fake: clock.FakeClock) -> None:
    cfg = world.WorldConfig(accounts=2, quiet_story_fraction=0.0, converted_fraction=0.0)
    async with server.running(cfg, clock=fake) as sim:
        acct = sim.world.accounts[0]
        media = sim.world.media_of(acct.ig_user_id)[:3]
        ops = [{"method": "GET", "relative_url": f"{m.id}/insights?metric=reach"} for m in media]
        ops.append({"method": "GET", "relative_url": f"v25.0/{acct.ig_user_id}?fields=id,username"})
        ops.append({"method": "GET", "relative_url": f"{media[0].id}/insights?metric=bogus"})
        status, body = await post(
            sim, "/v25.0/", {"access_token": acct.token, "batch": json.dumps(ops)}
        )
        assert status == 200
        assert [e["code"] for e in body] == [200, 200, 200, 200, 400]
        for element, m in zip(body, media, strict=False):
            assert set(element) == {"code", "headers", "body"}
            inner = json.loads(element["body"])
            assert inner["data"][0]["id"] == f"{m.id}/insights/reach/lifetime"
            names = {h["name"] for h in element["headers"]}
            assert "X-Business-Use-Case-Usage" in names
        assert json.loads(body[3]["body"]) == {"id": acct.ig_user_id, "username": acct.username}
        assert json.loads(body[4]["body"])["error"]["code"] == 100
        assert sim.budgets.account(acct.ig_user_id).used(fake.now().timestamp()) == 5
        status, body = await post(
            sim,
            "/v25.0/",
            {"access_token": acct.token, "batch": json.dumps(ops[:1]), "include_headers": "false"},
        )
        assert set(body[0]) == {"code", "body"}


async def test_batch_limit_and_null_slots(fake: clock.FakeClock) -> None:
    cfg = world.WorldConfig(accounts=1, fault_rates={"batch_null": 0.5})
    async with server.running(cfg, clock=fake) as sim:
        acct = sim.world.accounts[0]
        op = {"method": "GET", "relative_url": f"{acct.ig_user_id}?fields=id"}
        status, body = await post(
            sim, "/v25.0/", {"access_token": acct.token, "batch": json.dumps([op] * 51)}
        )
        assert status == 400
        assert (
            body["error"]["message"]
            == "Too many requests in batch message. Maximum batch size is 50"
        )
        assert body["error"]["type"] == "GraphBatchException"
        status, body = await post(
            sim, "/v25.0/", {"access_token": acct.token, "batch": json.dumps([op] * 50)}
        )
        assert status == 200
        assert len(body) == 50
        nulls = sum(1 for e in body if e is None)
        assert 10 < nulls < 40
        assert sim.faults.fired["batch_null"] == nulls


async def test_request_log_and_counters(fake: clock.FakeClock) -> None:
    async with server.running(world.WorldConfig(accounts=2), clock=fake) as sim:
        a, b = sim.world.accounts
        await get(sim, f"/v25.0/{a.ig_user_id}", access_token=a.token)
        await get(sim, f"/v25.0/{a.ig_user_id}/media", access_token=a.token)
        await get(
            sim,
            f"/v25.0/{b.ig_user_id}/insights",
            access_token=b.token,
            metric="reach",
            period="day",
        )
        await get(
            sim, f"/v25.0/{b.ig_user_id}/insights", access_token=b.token, metric="bad", period="day"
        )
        assert sim.stats.calls_by_kind["ig_user"] == 1
        assert sim.stats.calls_by_kind["ig_media_list"] == 1
        assert sim.stats.calls_by_kind["user_insights"] == 2
        assert sim.stats.calls_by_account == {a.ig_user_id: 2, b.ig_user_id: 2}
        assert sim.stats.errors_by_class == {"100": 1}
        last = sim.stats.requests[-1]
        assert (last.status, last.error, last.at, last.account) == (400, "100", START, b.ig_user_id)
