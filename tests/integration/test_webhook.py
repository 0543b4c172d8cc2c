"""story_insights notifications → rows in PostgreSQL: mapping, idempotent redeliveries, and the
simulator's own signed sender end to end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog

from collector import clock, config, models, telemetry, web, webhook
from collector import store as store_mod
from collector.simulator import server as sim_server
from collector.simulator import webhooks

SECRET = "test_app_secret"
REFERENCE_BODY = (
    b'{"object":"instagram","entry":[{"id":"17841405309211844","time":1547687043,"changes":'
    b'[{"field":"story_insights","value":{"media_id":"18023345989012587","exits":1,"replies":0,'
    b'"reach":17,"taps_forward":12,"taps_back":0,"impressions":28}}]}]}'
)
REFERENCE_TIME = datetime.fromtimestamp(1547687043, UTC)
NAV = webhook.NAVIGATION_BREAKDOWN


def payload(value: object, *, ig_user_id: object = "1784", at: object = 1780000000) -> Any:
    return {
        "object": "instagram",
        "entry": [
            {
                "id": ig_user_id,
                "time": at,
                "changes": [{"field": "story_insights", "value": value}],
            }
        ],
    }


def metrics(batch: models.Batch) -> dict[tuple[str, str, str], models.Number]:
    return {(m.metric, m.breakdown, m.dimension): m.value for m in batch.media_metrics}


# ---------------------------------------------------------------- mapping (no database)


def test_reference_payload_maps_to_final_rows_at_the_entry_time() -> None:
    batch = webhook.to_batch(json.loads(REFERENCE_BODY))
    [media] = batch.media
    assert media == models.Media(
        media_id=models.MediaId("18023345989012587"),
        ig_user_id=models.IgUserId("17841405309211844"),
        media_type=None,
        media_product_type="STORY",
        posted_at=None,
        permalink=None,
        caption=None,
        expires_at=None,
        seen_at=REFERENCE_TIME,
    )
    assert metrics(batch) == {
        ("navigation", NAV, "tap_exit"): 1,
        ("replies", "", ""): 0,
        ("reach", "", ""): 17,
        ("navigation", NAV, "tap_forward"): 12,
        ("navigation", NAV, "tap_back"): 0,
        ("views", "", ""): 28,
    }
    assert all(m.is_final and m.captured_at == REFERENCE_TIME for m in batch.media_metrics)
    assert all(m.media_id == "18023345989012587" for m in batch.media_metrics)


def test_values_below_the_threshold_are_skipped() -> None:
    batch = webhook.to_batch(
        payload(
            {
                "media_id": "55",
                "reach": -1,
                "impressions": 0,
                "replies": True,
                "exits": "3",
                "taps_forward": 4.0,
                "taps_back": 2.5,
                "views": 10,  # not a webhook key (yet): ignored
            }
        )
    )
    assert metrics(batch) == {("views", "", ""): 0, ("navigation", NAV, "tap_forward"): 4}
    assert [m.media_id for m in batch.media] == ["55"]


def test_several_entries_and_changes() -> None:
    body = {
        "object": "instagram",
        "entry": [
            {
                "id": "1",
                "time": 1780000000,
                "changes": [
                    {"field": "story_insights", "value": {"media_id": "10", "reach": 5}},
                    {"field": "comments", "value": {"media_id": "11", "text": "hi"}},
                    {"field": "story_insights", "value": {"media_id": "12", "reach": 6}},
                ],
            },
            {
                "id": 2,
                "time": 1780000100,
                "changes": [{"field": "story_insights", "value": {"media_id": 13, "reach": 7}}],
            },
        ],
    }
    batch = webhook.to_batch(body)
    assert [(m.media_id, m.ig_user_id) for m in batch.media] == [
        ("10", "1"),
        ("12", "1"),
        ("13", "2"),
    ]
    assert [m.value for m in batch.media_metrics] == [5, 6, 7]


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "x",
        {"object": "instagram"},
        {"object": "instagram", "entry": ["x", None]},
        {"object": "page", "entry": [{"id": "1", "time": 1, "changes": []}]},
        payload({"media_id": "abc", "reach": 5}),
        payload({"media_id": "-5", "reach": 5}),
        payload({"reach": 5}),
        payload({"media_id": "1", "reach": 5}, ig_user_id="abc"),
        payload({"media_id": "1", "reach": 5}, ig_user_id=True),
        payload({"media_id": "1", "reach": 5}, at="yesterday"),
        payload({"media_id": "1", "reach": 5}, at=-1),
        payload({"media_id": "1", "reach": 5}, at=1e300),
        payload({"media_id": "1", "reach": 5}, at=float("nan")),
        payload([1, 2]),
        {"object": "instagram", "entry": [{"id": "1", "time": 1780000000, "changes": "x"}]},
        {"object": "instagram", "entry": [{"id": "1", "time": 1780000000, "changes": [None, 3]}]},
    ],
)
def test_bad_input_yields_nothing_and_never_raises(body: Any) -> None:
    with structlog.testing.capture_logs() as logs:
        batch = webhook.to_batch(body)
    assert len(batch) == 0
    assert logs
    assert {e["event"] for e in logs} <= {"webhook_bad_payload", "webhook_ignored"}


# ---------------------------------------------------------------- into PostgreSQL


def settings_for(tmp_path: Path) -> config.Settings:
    path = tmp_path / "collector.toml"
    path.write_text(f'[graph]\napp_secret = "{SECRET}"\n[web]\nport = 0\n')
    return config.load(path, environ={})


@pytest.fixture
async def hook(
    tmp_path: Path, store: store_mod.Store
) -> AsyncIterator[tuple[web.WebServer, aiohttp.ClientSession]]:
    """The web server writing notifications straight to this test's database."""
    server = web.WebServer(
        settings_for(tmp_path),
        telemetry=telemetry.Telemetry(),
        health=lambda: web.Health.assess(database_up=True),
        sink=store.write,
    )
    await server.start()
    session = aiohttp.ClientSession()
    try:
        yield server, session
    finally:
        await session.close()
        await server.stop()


async def post(hook: tuple[web.WebServer, aiohttp.ClientSession], body: bytes) -> int:
    server, session = hook
    headers = {web.SIGNATURE_HEADER: webhooks.sign(SECRET, body)}
    async with session.post(server.url + web.DEFAULT_WEBHOOK_PATH, data=body, headers=headers) as r:
        return r.status


async def rows(db_conn: asyncpg.Connection, media_id: str) -> list[tuple[Any, ...]]:
    found = await db_conn.fetch(
        "select metric, breakdown, dimension, value, captured_at, is_final "
        "from media_metric where media_id = $1 order by metric, dimension",
        media_id,
    )
    return [tuple(r) for r in found]


async def test_reference_notification_is_stored_once(
    hook: tuple[web.WebServer, aiohttp.ClientSession], db_conn: asyncpg.Connection
) -> None:
    for _ in range(3):  # Meta's redeliveries are byte-identical
        assert await post(hook, REFERENCE_BODY) == 200
    stored = await rows(db_conn, "18023345989012587")
    assert stored == [
        ("navigation", NAV, "tap_back", 0, REFERENCE_TIME, True),
        ("navigation", NAV, "tap_exit", 1, REFERENCE_TIME, True),
        ("navigation", NAV, "tap_forward", 12, REFERENCE_TIME, True),
        ("reach", "", "", 17, REFERENCE_TIME, True),
        ("replies", "", "", 0, REFERENCE_TIME, True),
        # impressions, under the name the poller uses for the same figure
        ("views", "", "", 28, REFERENCE_TIME, True),
    ]
    # the delivery is the story's final snapshot (no poll took one), and says so
    media = await db_conn.fetchrow(
        "select final_captured_at, final_source from media where media_id = $1",
        "18023345989012587",
    )
    assert media is not None
    assert (media["final_captured_at"], media["final_source"]) == (REFERENCE_TIME, "webhook")
    media = await db_conn.fetchrow("select * from media where media_id = '18023345989012587'")
    assert media["ig_user_id"] == "17841405309211844"
    assert media["is_story"]
    assert media["first_seen_at"] == media["last_seen_at"] == REFERENCE_TIME
    # an account nobody configured: kept under a placeholder rather than dropped
    account = await db_conn.fetchrow(
        "select name, enabled, status from account where ig_user_id = '17841405309211844'"
    )
    assert tuple(account) == ("17841405309211844", False, "unknown")


async def test_a_story_the_poller_knows_keeps_its_details(
    hook: tuple[web.WebServer, aiohttp.ClientSession],
    store: store_mod.Store,
    db_conn: asyncpg.Connection,
) -> None:
    posted = REFERENCE_TIME - timedelta(hours=24)
    polled = REFERENCE_TIME - timedelta(minutes=20)
    await store.sync_accounts(
        [models.AccountRow(models.IgUserId("17841405309211844"), "acme", True)], posted
    )
    await store.write(
        models.Batch(
            media=[
                models.Media(
                    media_id=models.MediaId("18023345989012587"),
                    ig_user_id=models.IgUserId("17841405309211844"),
                    media_type="IMAGE",
                    media_product_type="STORY",
                    posted_at=posted,
                    permalink="https://www.instagram.com/stories/acme/1/",
                    caption=None,
                    expires_at=REFERENCE_TIME,
                    seen_at=posted,
                )
            ],
            media_metrics=[
                models.MediaMetric(
                    models.MediaId("18023345989012587"),
                    "navigation",
                    NAV,
                    "tap_forward",
                    11,
                    polled,
                    True,
                )
            ],
        )
    )
    assert await post(hook, REFERENCE_BODY) == 200
    media = await db_conn.fetchrow("select * from media where media_id = '18023345989012587'")
    assert media["media_type"] == "IMAGE"
    assert media["posted_at"] == posted
    assert media["expires_at"] == REFERENCE_TIME
    assert media["permalink"] == "https://www.instagram.com/stories/acme/1/"
    assert media["first_seen_at"] == posted
    account = await db_conn.fetchrow("select name, enabled from account")
    assert tuple(account) == ("acme", True)
    # the polled final and the webhook's value sit in one navigation history
    history = await db_conn.fetch(
        "select value, captured_at from media_metric where dimension = 'tap_forward' "
        "order by captured_at"
    )
    assert [tuple(r) for r in history] == [(11, polled), (12, REFERENCE_TIME)]


async def test_below_threshold_values_are_not_stored(
    hook: tuple[web.WebServer, aiohttp.ClientSession], db_conn: asyncpg.Connection
) -> None:
    body = json.dumps(
        payload({"media_id": "77", "reach": 12, "impressions": -1, "exits": -1, "replies": 0})
    ).encode()
    assert await post(hook, body) == 200
    assert [(r[0], r[3]) for r in await rows(db_conn, "77")] == [("reach", 12), ("replies", 0)]


# ---------------------------------------------------------------- the simulator's sender


SimFactory = Callable[..., Any]


async def test_simulator_deliveries_end_to_end(
    hook: tuple[web.WebServer, aiohttp.ClientSession],
    sim_factory: SimFactory,
    fake_clock: clock.FakeClock,
    db_conn: asyncpg.Connection,
) -> None:
    server, _ = hook
    sim: sim_server.Simulator = await sim_factory(
        accounts=2,
        stories_per_account=3,
        stories_per_day=0,
        story_lifetime=timedelta(minutes=10),
        app_secret=SECRET,
        webhook_url=server.url + web.DEFAULT_WEBHOOK_PATH,
    )
    stories = [s for a in sim.world.accounts for s in sim.world.stories_of(a.ig_user_id)]
    assert len(stories) == 6
    fake_clock.advance(11 * 60)
    delivered = await sim.webhooks.deliver_due()
    assert len(delivered) == 6
    assert all(d.delivered and d.status == 200 for d in delivered)
    assert await db_conn.fetchval("select count(*) from media_metric") == 36

    for story in stories:
        values = sim.webhooks.story_values(story)
        assert story.expires is not None
        expected_at = datetime.fromtimestamp(int(story.expires), UTC)
        got = {(r[0], r[2]): (r[3], r[4], r[5]) for r in await rows(db_conn, story.id)}
        assert got == {
            ("views", ""): (values["impressions"], expected_at, True),
            ("reach", ""): (values["reach"], expected_at, True),
            ("replies", ""): (values["replies"], expected_at, True),
            ("navigation", "tap_forward"): (values["taps_forward"], expected_at, True),
            ("navigation", "tap_back"): (values["taps_back"], expected_at, True),
            ("navigation", "tap_exit"): (values["exits"], expected_at, True),
        }
        owner = await db_conn.fetchval("select ig_user_id from media where media_id = $1", story.id)
        assert owner == story.ig_user_id

    # Meta redelivers for up to 36 hours: byte-identical, stored once
    fake_clock.advance(3600)
    replays = [await sim.webhooks.replay(d.id) for d in delivered]
    assert all(r.delivered and r.replay_of is not None for r in replays)
    assert await db_conn.fetchval("select count(*) from media_metric") == 36
    assert await db_conn.fetchval("select count(*) from media") == 6


async def test_simulator_low_values_come_as_minus_one(
    hook: tuple[web.WebServer, aiohttp.ClientSession],
    sim_factory: SimFactory,
    fake_clock: clock.FakeClock,
    db_conn: asyncpg.Connection,
) -> None:
    server, _ = hook
    sim: sim_server.Simulator = await sim_factory(
        accounts=2,
        stories_per_account=3,
        stories_per_day=0,
        story_lifetime=timedelta(minutes=10),
        app_secret=SECRET,
        webhook_url=server.url + web.DEFAULT_WEBHOOK_PATH,
        webhook_low_value=-1,
    )
    fake_clock.advance(11 * 60)
    delivered = await sim.webhooks.deliver_due()
    assert all(d.delivered for d in delivered)
    sent = [
        (d.story_id, key, value)
        for d in delivered
        for key, value in json.loads(d.body)["entry"][0]["changes"][0]["value"].items()
        if key != "media_id"
    ]
    kept = [s for s in sent if s[2] != -1]
    assert len(kept) < len(sent), "the world should have some stories below the threshold"
    assert await db_conn.fetchval("select count(*) from media_metric") == len(kept)
    assert await db_conn.fetchval("select count(*) from media_metric where value < 0") == 0
