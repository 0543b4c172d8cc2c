"""The Graph client against the simulator over real HTTP: retries, typed errors, batches, the
usage headers reaching the limiter, pagination, and the token kept out of every URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from collector import clock, errors, graph, ratelimit
from collector.simulator import server, world

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sim() -> AsyncIterator[server.Simulator]:
    cfg = world.WorldConfig(seed=5, accounts=2, media_per_account=30, stories_per_account=1)
    async with server.running(cfg, clock=clock.FakeClock(START)) as s:
        yield s


@pytest.fixture
async def client(sim: server.Simulator) -> AsyncIterator[graph.GraphClient]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    c = graph.GraphClient(
        base_url=sim.base_url,
        api_version="v25.0",
        app_secret=sim.world.config.app_secret,
        clock=sim.world.clock,
        limiter=ratelimit.Limiter(),
        sleep=sleep,
        retry_base=1.0,
        retry_max=8.0,
        max_retries=3,
    )
    async with c:
        yield c


def _acct(sim: server.Simulator) -> world.Account:
    return sim.world.accounts[0]


async def test_a_transient_failure_is_retried_with_backoff(
    sim: server.Simulator, client: graph.GraphClient
) -> None:
    acct = _acct(sim)
    sim.faults.script(rf"/{acct.ig_user_id}\?", ["http500", "code2"])
    resp = await client.get(
        acct.ig_user_id, {"fields": "id,username"}, token=acct.token, account=acct.ig_user_id
    )
    assert resp.body["username"] == acct.username
    assert client.retries == 2


async def test_persistent_failure_raises_after_the_retries(
    sim: server.Simulator, client: graph.GraphClient
) -> None:
    acct = _acct(sim)
    sim.faults.script(rf"/{acct.ig_user_id}\?", ["http500"] * 10)
    with pytest.raises(errors.GraphError) as caught:
        await client.get(
            acct.ig_user_id, {"fields": "id"}, token=acct.token, account=acct.ig_user_id
        )
    assert caught.value.retryable
    assert client.retries == 3


async def test_an_expired_token_raises_at_once(
    sim: server.Simulator, client: graph.GraphClient
) -> None:
    acct = _acct(sim)
    sim.world.set_token_state(acct.ig_user_id, "expired")
    with pytest.raises(errors.TokenInvalid) as caught:
        await client.get(
            acct.ig_user_id, {"fields": "id"}, token=acct.token, account=acct.ig_user_id
        )
    assert caught.value.code == 190
    assert client.retries == 0
    assert acct.token not in str(caught.value)


async def test_a_batch_answers_operation_by_operation(
    sim: server.Simulator, client: graph.GraphClient
) -> None:
    acct = _acct(sim)
    media = sim.world.media_of(acct.ig_user_id)[:3]
    ops = [graph.BatchOp(f"{m.id}/insights", {"metric": ["reach"]}, ["reach"]) for m in media]
    ops.append(graph.BatchOp("999999999/insights", {"metric": ["reach"]}, ["reach"]))
    results = await client.batch(ops, token=acct.token, account=acct.ig_user_id)
    assert len(results) == 4
    for m, result in zip(media, results[:3], strict=True):
        assert not isinstance(result, errors.GraphError)
        assert result["data"][0]["name"] == "reach"
        assert m.id in result["data"][0]["id"]
    assert isinstance(results[3], errors.GraphError)
    assert client.round_trips == 1


async def test_usage_headers_reach_the_limiter(
    sim: server.Simulator, client: graph.GraphClient
) -> None:
    acct = _acct(sim)
    await client.get(acct.ig_user_id, {"fields": "id"}, token=acct.token, account=acct.ig_user_id)
    usage = client.limiter.accounts[acct.ig_user_id]
    assert usage.percent is not None
    assert 0 <= usage.percent <= 100


async def test_pages_follow_cursors_and_the_token_never_rides_in_a_url(
    sim: server.Simulator, client: graph.GraphClient
) -> None:
    acct = _acct(sim)
    seen: list[str] = []
    async for page in client.pages(
        f"{acct.ig_user_id}/media",
        {"fields": "id", "limit": 7},
        token=acct.token,
        account=acct.ig_user_id,
    ):
        seen.extend(item["id"] for item in page)
    assert seen == [m.id for m in sim.world.media_of(acct.ig_user_id)]
    listed = [r for r in sim.stats.requests if r.kind == "ig_media_list"]
    assert len(listed) == -(-len(seen) // 7)
    for r in sim.stats.requests:
        assert acct.token not in r.path
        assert all(acct.token not in v for _, v in r.params)
