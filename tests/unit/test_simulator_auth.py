"""Tokens, permissions, appsecret_proof and debug_token over HTTP, with exact error bodies."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from collector import clock
from collector.simulator import graph, server, world

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
async def fake() -> clock.FakeClock:
    return clock.FakeClock(START)


@pytest.fixture
async def sim(fake: clock.FakeClock) -> AsyncIterator[server.Simulator]:
    cfg = world.WorldConfig(seed=9, accounts=3, token_lifetimes={2: timedelta(days=2)})
    async with server.running(cfg, clock=fake) as s:
        yield s


async def get(
    sim: server.Simulator, path: str, params: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.base_url}{path}", params=params, headers=headers or {}) as resp,
    ):
        return resp.status, json.loads(await resp.text())


def without_trace(body: Any) -> Any:
    err = dict(body["error"])
    assert err.pop("fbtrace_id")
    return err


async def test_token_in_header_bearer_and_oauth(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    path = f"/v25.0/{acct.ig_user_id}"
    for scheme in ("Bearer", "OAuth"):
        status, body = await get(sim, path, {}, {"Authorization": f"{scheme} {acct.token}"})
        assert (status, body) == (200, {"id": acct.ig_user_id})
    status, body = await get(sim, path, {})
    assert status == 400
    assert body["error"]["code"] == 104


async def test_token_states(sim: server.Simulator, fake: clock.FakeClock) -> None:
    acct = sim.world.accounts[0]
    path = f"/v25.0/{acct.ig_user_id}"
    params = {"access_token": acct.token}
    status, body = await get(sim, path, {"access_token": "EAAnotatoken"})
    assert status == 400
    assert without_trace(body) == {
        "message": "Invalid OAuth access token - Cannot parse access token",
        "type": "OAuthException",
        "code": 190,
    }
    expectations = {
        "invalid": (190, None),
        "password_changed": (190, 460),
        "logged_out": (190, 467),
        "expired": (190, 463),
    }
    for state, (code, subcode) in expectations.items():
        sim.world.set_token_state(acct.ig_user_id, state)  # type: ignore[arg-type]
        status, body = await get(sim, path, params)
        assert status == 400
        assert body["error"]["code"] == code
        assert body["error"].get("error_subcode") == subcode
    assert body["error"]["message"].startswith(
        "Error validating access token: Session has expired on "
    )
    assert "The current time is Monday, 15-Jun-26 05:00:00 PDT." in body["error"]["message"]
    sim.world.set_token_state(acct.ig_user_id, "ok")
    status, _ = await get(sim, path, params)
    assert status == 200
    # a token that reaches its expiry on the simulated clock expires by itself
    short = sim.world.accounts[2]
    assert short.token_expires_at == START + timedelta(days=2)
    fake.advance(2 * 86400)
    status, body = await get(sim, f"/v25.0/{short.ig_user_id}", {"access_token": short.token})
    assert body["error"]["error_subcode"] == 463
    assert "Session has expired on Wednesday, 17-Jun-26 05:00:00 PDT" in body["error"]["message"]


async def test_missing_insights_permission(sim: server.Simulator) -> None:
    acct = sim.world.accounts[1]
    sim.world.set_token_state(acct.ig_user_id, "no_permission")
    params = {"access_token": acct.token}
    status, _ = await get(sim, f"/v25.0/{acct.ig_user_id}", params)
    assert status == 200
    status, body = await get(
        sim, f"/v25.0/{acct.ig_user_id}/insights", {**params, "metric": "reach", "period": "day"}
    )
    assert status == 400
    assert without_trace(body) == {
        "message": "(#10) Application does not have permission for this action",
        "type": "OAuthException",
        "code": 10,
    }


async def test_deleted_media_and_removed_account(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    media = sim.world.media_of(acct.ig_user_id)[0]
    sim.world.delete_media(media.id)
    params = {"access_token": acct.token}
    status, body = await get(sim, f"/v25.0/{media.id}/insights", {**params, "metric": "reach"})
    assert status == 400
    assert without_trace(body) == {
        "message": f"Unsupported get request. Object with ID '{media.id}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation. Please read the "
        "Graph API documentation at https://developers.facebook.com/docs/graph-api",
        "type": "GraphMethodException",
        "code": 100,
        "error_subcode": 33,
    }
    assert media.id not in [m.id for m in sim.world.media_of(acct.ig_user_id)]
    sim.world.remove_account(acct.ig_user_id)
    status, body = await get(sim, f"/v25.0/{acct.ig_user_id}", params)
    assert body["error"]["error_subcode"] == 33
    assert "sim_acct_1" not in sim.config_toml()


async def test_appsecret_proof(fake: clock.FakeClock) -> None:
    cfg = world.WorldConfig(accounts=1, app_secret="test_app_secret")
    async with server.running(cfg, clock=fake) as sim:
        acct = sim.world.accounts[0]
        path = f"/v25.0/{acct.ig_user_id}"
        status, body = await get(sim, path, {"access_token": acct.token})
        assert status == 400
        assert without_trace(body) == {
            "message": "API calls from the server require an appsecret_proof argument",
            "type": "GraphMethodException",
            "code": 100,
        }
        status, body = await get(sim, path, {"access_token": acct.token, "appsecret_proof": "00"})
        assert body["error"]["message"] == "Invalid appsecret_proof provided in the API argument"
        proof = hmac.new(b"test_app_secret", acct.token.encode(), hashlib.sha256).hexdigest()
        assert graph.appsecret_proof("test_app_secret", "EAAtesttoken123") == (
            "20ac0cb5282ee2c7a1aab2e40deb7f62163ab1c7be37a71fd311a963f224b984"
        )
        status, _ = await get(sim, path, {"access_token": acct.token, "appsecret_proof": proof})
        assert status == 200
        assert 'app_secret = "test_app_secret"' in sim.config_toml()


async def test_debug_token(sim: server.Simulator, fake: clock.FakeClock) -> None:
    w = sim.world
    acct = w.accounts[0]
    status, body = await get(
        sim, "/v25.0/debug_token", {"input_token": acct.token, "access_token": w.app_token}
    )
    assert status == 200
    data = body["data"]
    assert set(data) == {
        "app_id", "type", "application", "data_access_expires_at", "expires_at", "is_valid",
        "issued_at", "scopes", "granular_scopes", "user_id",
    }  # fmt: skip
    assert data["is_valid"] is True
    assert data["expires_at"] == int((START + timedelta(days=60)).timestamp())
    assert "instagram_manage_insights" in data["scopes"]
    assert {"scope": "instagram_basic", "target_ids": [acct.ig_user_id]} in data["granular_scopes"]
    w.set_token_expiry(acct.ig_user_id, START + timedelta(hours=1))
    fake.advance(7200)
    _, body = await get(
        sim, "/v25.0/debug_token", {"input_token": acct.token, "access_token": w.app_token}
    )
    assert body["data"]["is_valid"] is False
    assert body["data"]["error"]["code"] == 190
    assert body["data"]["error"]["subcode"] == 463
    _, body = await get(
        sim, "/v25.0/debug_token", {"input_token": "garbage", "access_token": w.app_token}
    )
    assert body == {
        "data": {
            "error": {"code": 190, "message": "Invalid OAuth access token."},
            "is_valid": False,
            "scopes": [],
        }
    }
    w.set_token_state(w.accounts[1].ig_user_id, "no_permission")
    _, body = await get(
        sim, "/v25.0/debug_token", {"input_token": w.accounts[1].token, "access_token": w.app_token}
    )
    assert "instagram_manage_insights" not in body["data"]["scopes"]
    assert body["data"]["is_valid"] is True
    # the app token cannot read Instagram objects
    status, body = await get(sim, f"/v25.0/{acct.ig_user_id}", {"access_token": w.app_token})
    assert status == 400
    assert body["error"]["code"] == 200
