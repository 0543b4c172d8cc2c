"""story_insights webhooks: signed envelope on expiry, retries, replay, verification."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from collector import clock
from collector.simulator import server, webhooks, world

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


class Receiver:
    """A collector-side webhook endpoint that records raw bodies."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.fail: list[int] = []
        self.url = ""
        self.arrived = asyncio.Event()

    async def post(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail:
            return web.Response(status=self.fail.pop(0))
        self.received.append((body, request.headers["X-Hub-Signature-256"]))
        self.arrived.set()
        return web.Response(text="ok")

    async def get(self, request: web.Request) -> web.Response:
        if request.query.get("hub.verify_token") != "meatyhamhock":
            return web.Response(status=403)
        return web.Response(text=request.query["hub.challenge"])


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/webhooks", rec.post)
    app.router.add_get("/webhooks", rec.get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/webhooks"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def fake() -> clock.FakeClock:
    return clock.FakeClock(START)


def config(url: str) -> world.WorldConfig:
    return world.WorldConfig(
        accounts=2,
        stories_per_account=3,
        story_lifetime=timedelta(minutes=10),
        stories_per_day=0,
        app_secret="test_app_secret",
        webhook_url=url,
        webhook_poll_interval=None,
    )


def test_signature_matches_reference_example() -> None:
    raw = (
        b'{"object":"instagram","entry":[{"id":"17841405309211844","time":1547687043,"changes":'
        b'[{"field":"story_insights","value":{"media_id":"18023345989012587","exits":1,"replies":0,'
        b'"reach":17,"taps_forward":12,"taps_back":0,"impressions":28}}]}]}'
    )
    assert len(raw) == 239
    assert webhooks.sign("test_app_secret", raw) == (
        "sha256=e2440ac1156ad1a8de0a2d3181b552f72e36e3c9c20294b046793932b121c773"
    )


async def test_expired_stories_are_delivered_signed(
    receiver: Receiver, fake: clock.FakeClock
) -> None:
    async with server.running(config(receiver.url), clock=fake) as sim:
        stories = [s for a in sim.world.accounts for s in sim.world.stories_of(a.ig_user_id)]
        assert await sim.webhooks.deliver_due() == []
        fake.advance(600)
        attempted = await sim.webhooks.deliver_due()
        assert {d.story_id for d in attempted} == {s.id for s in stories}
        assert all(d.delivered and d.attempts == 1 for d in attempted)
        assert len(receiver.received) == 6
        raw, signature = receiver.received[0]
        expected = hmac.new(b"test_app_secret", raw, hashlib.sha256).hexdigest()
        assert signature == f"sha256={expected}"
        payload = json.loads(raw)
        assert set(payload) == {"object", "entry"}
        assert payload["object"] == "instagram"
        entry = payload["entry"][0]
        assert set(entry) == {"id", "time", "changes"}
        change = entry["changes"][0]
        assert change["field"] == "story_insights"
        value = change["value"]
        assert list(value) == [
            "media_id",
            "exits",
            "replies",
            "reach",
            "taps_forward",
            "taps_back",
            "impressions",
        ]
        story = sim.world.media(value["media_id"])
        assert story is not None
        assert story.expires_at is not None
        assert entry["time"] == int(story.expires_at.timestamp())
        assert value["reach"] == sim.world.media_metric(story.id, "reach", story.expires_at)
        served = [v for v in sim.stats.served_for(story.id) if v.source == "webhook"]
        assert {v.metric: v.value for v in served} == {
            k: v for k, v in value.items() if k != "media_id"
        }
        # nothing is sent twice
        assert await sim.webhooks.deliver_due() == []


async def test_retries_then_replay(receiver: Receiver, fake: clock.FakeClock) -> None:
    async with server.running(config(receiver.url), clock=fake) as sim:
        receiver.fail = [500] * 6 + [503] * 6
        fake.advance(600)
        first = await sim.webhooks.deliver_due()
        assert all(not d.delivered and d.errors == ["HTTP 500"] for d in first)
        second = await sim.webhooks.deliver_due()  # the first retry is immediate
        assert all(d.attempts == 2 and not d.delivered for d in second)
        assert await sim.webhooks.deliver_due() == []  # the next waits 60 simulated seconds
        fake.advance(60)
        third = await sim.webhooks.deliver_due()
        assert all(d.delivered and d.attempts == 3 for d in third)
        assert len(receiver.received) == 6
        copy = await sim.webhooks.replay(third[0].id)
        assert copy.delivered
        assert copy.replay_of == third[0].id
        assert receiver.received[-1][0] == third[0].body


async def test_gives_up_after_36_hours(receiver: Receiver, fake: clock.FakeClock) -> None:
    async with server.running(config(receiver.url), clock=fake) as sim:
        receiver.fail = [500] * 10_000
        fake.advance(600)
        for _ in range(40):
            await sim.webhooks.deliver_due()
            fake.advance(3 * 3600)
        assert all(d.failed and not d.delivered for d in sim.webhooks.deliveries)


async def test_verification_handshake(receiver: Receiver, fake: clock.FakeClock) -> None:
    async with server.running(config(receiver.url), clock=fake) as sim:
        assert await sim.webhooks.verify("meatyhamhock", "1158201444") == (200, "1158201444")
        status, _ = await sim.webhooks.verify("wrong")
        assert status == 403


async def test_background_sender_runs_on_the_clock(
    receiver: Receiver, fake: clock.FakeClock
) -> None:
    cfg = world.WorldConfig(
        accounts=1, story_lifetime=timedelta(minutes=1), stories_per_day=0,
        webhook_url=receiver.url, webhook_poll_interval=0.01,
    )  # fmt: skip
    async with server.running(cfg, clock=fake) as sim:
        fake.advance(60)
        while len(receiver.received) < 3:
            receiver.arrived.clear()
            await asyncio.wait_for(receiver.arrived.wait(), 5)
        assert len(receiver.received) == 3
        assert all(d.delivered for d in sim.webhooks.deliveries)
