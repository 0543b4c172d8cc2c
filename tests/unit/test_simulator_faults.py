"""Faults on demand: scripted and random, at the error and the transport level."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from collector import clock
from collector.simulator import server, world

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sim() -> AsyncIterator[server.Simulator]:
    cfg = world.WorldConfig(accounts=1, slow_delay=0.05, hang_seconds=30.0)
    async with server.running(cfg, clock=clock.FakeClock(START)) as s:
        yield s


def url(sim: server.Simulator) -> str:
    acct = sim.world.accounts[0]
    return f"{sim.base_url}/v25.0/{acct.ig_user_id}/insights?metric=reach&period=day&access_token={acct.token}"


async def test_scripted_errors_in_order(sim: server.Simulator) -> None:
    sim.faults.script(r"/insights", ["http500", "code2", "ok", "reduce_data"])
    seen = []
    first = None
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.get(url(sim)) as resp:
                body = await resp.json()
                seen.append((resp.status, body.get("error", {}).get("code")))
                if resp.status == 500 and first is None:
                    first = body
    assert seen == [(500, 1), (400, 2), (200, None), (500, 1), (200, None)]
    assert first is not None
    err = dict(first["error"])
    assert err.pop("fbtrace_id")
    assert err == {
        "message": "An unknown error occurred",
        "type": "OAuthException",
        "code": 1,
        "error_subcode": 99,
        "is_transient": True,
    }
    assert sim.faults.pending == 0
    assert sim.stats.errors_by_class["fault:http500"] == 1


async def test_scripts_only_match_their_paths(sim: server.Simulator) -> None:
    acct = sim.world.accounts[0]
    sim.faults.script(r"/insights", ["code2"])
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{sim.base_url}/v25.0/{acct.ig_user_id}?access_token={acct.token}"
        ) as resp:
            assert resp.status == 200
        async with session.get(url(sim)) as resp:
            body = await resp.json()
    assert body["error"]["code"] == 2
    assert body["error"]["error_subcode"] == 1504044


async def test_broken_bodies(sim: server.Simulator) -> None:
    sim.faults.script(r"/insights", ["truncated", "nonjson", "html502"])
    async with aiohttp.ClientSession() as session:
        async with session.get(url(sim)) as resp:
            assert resp.status == 200
            text = await resp.text()
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)
            assert text.startswith('{"data":')
        async with session.get(url(sim)) as resp:
            assert resp.content_type == "application/json"
            with pytest.raises(json.JSONDecodeError):
                json.loads(await resp.text())
        async with session.get(url(sim)) as resp:
            assert resp.status == 502
            assert resp.content_type == "text/html"
            assert "<html" in await resp.text()
    # a truncated answer never reached the client: nothing counts as served
    assert sim.stats.served_for(metric="reach") == []


async def test_connection_reset(sim: server.Simulator) -> None:
    # aiohttp retries an idempotent request once after a dropped connection, so drop two.
    sim.faults.script(r"/insights", ["reset", "reset"])
    async with aiohttp.ClientSession() as session:
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            async with session.get(url(sim)) as resp:
                await resp.read()
        async with session.get(url(sim)) as resp:
            assert resp.status == 200


async def test_timeout_hangs_past_the_client_timeout_and_is_cancellable(
    sim: server.Simulator,
) -> None:
    sim.faults.script(r"/insights", ["timeout", "slow"])
    began = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session:
        with pytest.raises(TimeoutError):
            async with session.get(url(sim)) as resp:
                await resp.read()
    async with aiohttp.ClientSession() as session, session.get(url(sim)) as resp:
        assert resp.status == 200  # slow, then served
    assert time.monotonic() - began < 5
    assert sim.stats.errors_by_class["fault:timeout"] == 1


async def test_random_rates_are_deterministic_per_seed() -> None:
    async def run(seed: int) -> list[int]:
        cfg = world.WorldConfig(seed=seed, accounts=1, fault_rates={"http500": 0.3, "code2": 0.2})
        statuses = []
        async with (
            server.running(cfg, clock=clock.FakeClock(START)) as sim,
            aiohttp.ClientSession() as session,
        ):
            for _ in range(40):
                async with session.get(url(sim)) as resp:
                    statuses.append(resp.status)
        return statuses

    first, again, other = await run(4), await run(4), await run(5)
    assert first == again
    assert first != other
    assert 5 < first.count(500) < 25
    with pytest.raises(ValueError, match="unknown fault kind"):
        server.Simulator(world.WorldConfig(fault_rates={"boom": 0.1}), clock.FakeClock(START))
