"""The analyst views, and every query of ``sql/examples.sql`` exactly as the README quotes it."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from collector import models, schema
from collector import store as store_mod

PACIFIC = zoneinfo.ZoneInfo("America/Los_Angeles")

BRAND = models.IgUserId("17841405822304914")
SHOP = models.IgUserId("17841400008460056")
CAFE = models.IgUserId("17841463521907310")
ARCHIVE = models.IgUserId("17841401234567890")

POST = models.MediaId("18027310153508651")
REEL = models.MediaId("17993282576146728")
OLD_POST = models.MediaId("17858893269000123")
SHOP_POST = models.MediaId("18011122233344455")
S_FINAL = models.MediaId("18052846918190473")
S_UNFINISHED = models.MediaId("18049950123087710")
S_BELOW = models.MediaId("18031234567890123")
S_LIVE = models.MediaId("18067890123456789")
S_SHOP = models.MediaId("18098765432109876")
BELOW = models.MissReason.BELOW_THRESHOLD
DOWN = models.MissReason.PROCESS_DOWN

NAVIGATION = {"tap_forward": 301, "tap_back": 22, "tap_exit": 41, "swipe_forward": 24}


def pacific_midnight_after(day: date) -> datetime:
    """The end_time Meta gives the day bucket of ``day``."""
    return datetime.combine(day + timedelta(days=1), time(), PACIFIC).astimezone(UTC)


def post(
    media_id: str,
    owner: str,
    posted_at: datetime,
    product: str = "FEED",
    seen: datetime | None = None,
) -> models.Media:
    return models.Media(
        media_id=models.MediaId(media_id),
        ig_user_id=models.IgUserId(owner),
        media_type="VIDEO" if product == "REELS" else "IMAGE",
        media_product_type=product,
        posted_at=posted_at,
        permalink=f"https://www.instagram.com/p/C{media_id[-8:]}/",
        caption="caption",
        expires_at=None,
        seen_at=seen or posted_at + timedelta(minutes=30),
    )


def story(media_id: str, owner: str, posted_at: datetime) -> models.Media:
    return models.Media(
        media_id=models.MediaId(media_id),
        ig_user_id=models.IgUserId(owner),
        media_type="IMAGE",
        media_product_type="STORY",
        posted_at=posted_at,
        permalink=None,
        caption=None,
        expires_at=posted_at + timedelta(hours=24),
        seen_at=posted_at + timedelta(minutes=10),
    )


def story_capture(
    media_id: str, at: datetime, *, reach: int, final: bool = False, navigation: bool = False
) -> list[models.MediaMetric]:
    mid = models.MediaId(media_id)
    rows = [
        models.MediaMetric(mid, "reach", "", "", reach, at, final),
        models.MediaMetric(mid, "views", "", "", reach + 118, at, final),
    ]
    if navigation:
        rows += [
            models.MediaMetric(mid, "navigation", "story_navigation_action_type", k, v, at, final)
            for k, v in NAVIGATION.items()
        ]
    return rows


def feed_capture(media_id: str, at: datetime, **values: int) -> list[models.MediaMetric]:
    return [
        models.MediaMetric(models.MediaId(media_id), name, "", "", value, at)
        for name, value in values.items()
    ]


class World:
    """What the populated database holds, relative to ``now``."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.today = now.astimezone(PACIFIC).date()
        self.s_final_posted = now - timedelta(days=3)
        self.s_unfinished_posted = now - timedelta(days=2)
        self.s_below_posted = now - timedelta(hours=30)
        self.s_shop_posted = now - timedelta(days=4)


@pytest.fixture
async def world(store: store_mod.Store) -> World:
    now = datetime.now(UTC).replace(microsecond=0)
    w = World(now)
    await store.sync_accounts(
        [
            models.AccountRow(BRAND, "northwind", True),
            models.AccountRow(SHOP, "northwind-shop", True),
            models.AccountRow(CAFE, "corner-cafe", True),
            models.AccountRow(ARCHIVE, "archive", False),
        ],
        now - timedelta(days=60),
    )
    batch = models.Batch()
    batch.profiles += [
        models.ProfileSnapshot(
            BRAND, now - timedelta(hours=2), "northwind.studio", 48000, 312, 1289
        ),
        models.ProfileSnapshot(
            BRAND, now - timedelta(hours=1), "northwind.studio", 48213, 312, 1290
        ),
        models.ProfileSnapshot(SHOP, now - timedelta(hours=5), "northwind.shop", 9120, 80, 310),
        models.ProfileSnapshot(CAFE, now - timedelta(hours=1), "corner.cafe", 1502, 200, 88),
    ]
    # feed: two captures of POST (the latest must win), one of the others
    batch.media += [
        post(POST, BRAND, now - timedelta(days=2)),
        post(REEL, BRAND, now - timedelta(days=5), product="REELS"),
        post(OLD_POST, BRAND, now - timedelta(days=40)),
        post(SHOP_POST, SHOP, now - timedelta(days=10)),
    ]
    batch.media_metrics += feed_capture(
        POST, now - timedelta(days=1), views=1000, reach=800, saved=20
    )
    batch.media_metrics += feed_capture(
        POST, now - timedelta(hours=1), views=1500, reach=1200, saved=31
    )
    batch.media_metrics += feed_capture(
        REEL, now - timedelta(hours=3), views=20000, reach=15000, saved=400
    )
    batch.media_metrics += feed_capture(OLD_POST, now - timedelta(hours=3), views=99999, reach=1)
    # older captures, for "value at t" and series: the reel 8 days ago, the old post 10 days ago
    batch.media_metrics += feed_capture(REEL, now - timedelta(days=8), views=5000, reach=4000)
    batch.media_metrics += feed_capture(OLD_POST, now - timedelta(days=10), views=90000, reach=1)
    batch.media_metrics += feed_capture(SHOP_POST, now - timedelta(hours=3), views=700, reach=650)
    # stories: finalised 20 min before expiry; captured but never finalised; below the viewer
    # threshold (no metrics); still live; and one of the shop, finalised 10 min before expiry
    batch.media += [
        story(S_FINAL, BRAND, w.s_final_posted),
        story(S_UNFINISHED, BRAND, w.s_unfinished_posted),
        story(S_BELOW, BRAND, w.s_below_posted),
        story(S_LIVE, BRAND, now - timedelta(hours=2)),
        story(S_SHOP, SHOP, w.s_shop_posted),
    ]
    final_at = w.s_final_posted + timedelta(hours=23, minutes=40)
    batch.media_metrics += story_capture(S_FINAL, w.s_final_posted + timedelta(hours=1), reach=100)
    batch.media_metrics += story_capture(S_FINAL, final_at, reach=412, final=True, navigation=True)
    batch.media_metrics += story_capture(
        S_UNFINISHED, w.s_unfinished_posted + timedelta(hours=2), reach=57
    )
    batch.media_metrics += story_capture(S_LIVE, now - timedelta(hours=1), reach=12)
    batch.media_metrics += story_capture(
        S_SHOP, w.s_shop_posted + timedelta(hours=23, minutes=50), reach=980, final=True
    )
    batch.media_polls += [
        models.MediaPoll(S_FINAL, final_at, models.InsightsStatus.OK, is_final=True),
        models.MediaPoll(
            S_BELOW,
            w.s_below_posted + timedelta(hours=23, minutes=40),
            models.InsightsStatus.BELOW_THRESHOLD,
            reason="(#10) Not enough viewers for the media to show insights",
        ),
        models.MediaPoll(
            S_SHOP,
            w.s_shop_posted + timedelta(hours=23, minutes=50),
            models.InsightsStatus.OK,
            is_final=True,
        ),
    ]
    # why the two others have no final snapshot
    batch.misses += [
        models.StoryMiss(S_BELOW, w.s_below_posted + timedelta(hours=24), BELOW),
        models.StoryMiss(S_UNFINISHED, w.s_unfinished_posted + timedelta(hours=24), DOWN),
    ]
    # account metrics: 20 Pacific days of reach, and a demographic snapshot
    for back in range(1, 21):
        day = w.today - timedelta(days=back)
        batch.account_metrics.append(
            models.AccountMetric(
                BRAND, "reach", "day", "", "", pacific_midnight_after(day), 5000 + back, now
            )
        )
    batch.account_metrics.append(
        models.AccountMetric(
            BRAND,
            "follower_demographics",
            "lifetime",
            "country",
            "DE",
            pacific_midnight_after(w.today),
            11873,
            now,
        )
    )
    batch.errors += [
        models.CollectionError(
            BRAND,
            now - timedelta(days=2),
            "profile",
            None,
            "TransientError",
            2,
            None,
            "Service temporarily unavailable",
            None,
        ),
        models.CollectionError(
            SHOP,
            now - timedelta(hours=3),
            "media_insights",
            SHOP_POST,
            "TransientError",
            1,
            None,
            "An unknown error occurred",
            "AxY1",
        ),
        models.CollectionError(
            SHOP,
            now - timedelta(hours=1),
            "account",
            None,
            "TokenInvalid",
            190,
            463,
            "Error validating access token: Session has expired",
            "BzQ2",
        ),
    ]
    await store.write(batch)

    await store.record_success(BRAND, now - timedelta(minutes=50))
    await store.record_success(CAFE, now - timedelta(minutes=40))
    await store.record_success(SHOP, now - timedelta(days=1))
    await store.set_account_status(
        SHOP,
        models.AccountStatus.UNHEALTHY,
        "code=190 subcode=463 Session has expired",
        now - timedelta(hours=1),
    )
    for uid, valid, expires in [
        (BRAND, True, now + timedelta(days=50)),
        (SHOP, False, now - timedelta(hours=2)),
        (CAFE, True, now + timedelta(days=3)),
    ]:
        await store.set_token_info(
            uid,
            valid=valid,
            expires_at=expires,
            data_access_expires_at=None,
            scopes=["instagram_basic", "instagram_manage_insights"],
            checked_at=now,
        )
    return w


def plain(rows: list[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]


# --------------------------------------------------------------------------- the views


async def test_media_metric_latest_keeps_the_newest_capture(
    world: World, db_conn: asyncpg.Connection
) -> None:
    rows = await db_conn.fetch(
        "select metric, value, captured_at, account_name, username, media_product_type "
        "from media_metric_latest where media_id = $1 order by metric",
        POST,
    )
    latest = world.now - timedelta(hours=1)
    assert plain(rows) == [
        {
            "metric": m,
            "value": v,
            "captured_at": latest,
            "account_name": "northwind",
            "username": "northwind.studio",
            "media_product_type": "FEED",
        }
        for m, v in [("reach", 1200), ("saved", 31), ("views", 1500)]
    ]
    # one row per media, metric, breakdown and dimension
    assert await db_conn.fetchval(
        "select count(*) = count(distinct (media_id, metric, breakdown, dimension)) "
        "from media_metric_latest"
    )


async def test_story_final_metrics(world: World, db_conn: asyncpg.Connection) -> None:
    rows = await db_conn.fetch(
        "select * from story_final_metrics where media_id = $1 order by metric, dimension",
        S_FINAL,
    )
    assert [(r["metric"], r["dimension"], r["value"]) for r in rows] == [
        ("navigation", "swipe_forward", 24),
        ("navigation", "tap_back", 22),
        ("navigation", "tap_exit", 41),
        ("navigation", "tap_forward", 301),
        ("reach", "", 412),
        ("views", "", 530),
    ]
    assert {r["lead_before_expiry"] for r in rows} == {timedelta(minutes=20)}
    assert {r["is_final"] for r in rows} == {True}
    assert {r["insights_status"] for r in rows} == {"ok"}
    assert rows[0]["final_captured_at"] == world.s_final_posted + timedelta(hours=23, minutes=40)
    assert rows[0]["account_name"] == "northwind"

    assert {r["final_source"] for r in rows} == {"poll"}
    below = await db_conn.fetch("select * from story_final_metrics where media_id = $1", S_BELOW)
    assert len(below) == 1
    assert below[0]["metric"] is None
    assert below[0]["is_final"] is False
    assert below[0]["insights_status"] == "below_threshold"
    assert below[0]["missed_reason"] == "below_threshold"

    unfinished = await db_conn.fetch(
        "select distinct is_final, lead_before_expiry from story_final_metrics where media_id = $1",
        S_UNFINISHED,
    )
    assert plain(unfinished) == [{"is_final": False, "lead_before_expiry": timedelta(hours=22)}]
    # only stories
    assert (
        await db_conn.fetchval(
            "select count(*) from story_final_metrics where media_id = any($1::text[])",
            [POST, REEL],
        )
        == 0
    )


async def test_a_final_snapshot_is_one_capture_never_a_mix(
    world: World, store: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    # Meta's webhook arrives after the poll's final with part of the figures: kept in the
    # history, but the final snapshot stays the poll's capture, whole
    expiry = world.s_final_posted + timedelta(hours=24)
    batch = models.Batch(
        media_metrics=[
            models.MediaMetric(S_FINAL, "reach", "", "", 999, expiry, True),
            models.MediaMetric(
                S_FINAL,
                "navigation",
                "story_navigation_action_type",
                "tap_forward",
                7,
                expiry,
                True,
            ),
        ],
        media_polls=[
            models.MediaPoll(S_FINAL, expiry, models.InsightsStatus.OK, True, None, "webhook")
        ],
    )
    await store.write(batch)
    rows = await db_conn.fetch(
        "select metric, dimension, value, captured_at, final_source from story_final_metrics"
        " where media_id = $1 order by metric, dimension",
        S_FINAL,
    )
    final_at = world.s_final_posted + timedelta(hours=23, minutes=40)
    assert {r["captured_at"] for r in rows} == {final_at}
    assert {r["final_source"] for r in rows} == {"poll"}
    assert ("reach", "", 412) in [(r["metric"], r["dimension"], r["value"]) for r in rows]
    # the later values are history
    later = await db_conn.fetchval(
        "select value from media_metric where media_id = $1 and metric = 'reach'"
        " and captured_at = $2",
        S_FINAL,
        expiry,
    )
    assert later == 999


async def test_account_metric_daily_uses_the_pacific_day(
    store: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await store.sync_accounts([models.AccountRow(BRAND, "northwind", True)], datetime.now(UTC))
    captured = datetime(2026, 11, 3, 12, tzinfo=UTC)
    ends = {
        datetime(2026, 11, 3, 8, tzinfo=UTC): date(2026, 11, 2),  # PST: UTC-8
        datetime(2026, 7, 2, 7, tzinfo=UTC): date(2026, 7, 1),  # PDT: UTC-7
        datetime(2026, 11, 1, 7, tzinfo=UTC): date(2026, 10, 31),  # the night DST ends
    }
    await store.write(
        models.Batch(
            account_metrics=[
                models.AccountMetric(BRAND, "reach", "day", "", "", end, 1, captured)
                for end in ends
            ]
        )
    )
    rows = await db_conn.fetch("select end_time, day, account_name from account_metric_daily")
    assert {r["end_time"]: r["day"] for r in rows} == ends
    assert {r["account_name"] for r in rows} == {"northwind"}


async def test_account_health(world: World, db_conn: asyncpg.Connection) -> None:
    rows = {r["name"]: r for r in await db_conn.fetch("select * from account_health")}
    assert set(rows) == {"northwind", "northwind-shop", "corner-cafe", "archive"}
    brand = rows["northwind"]
    assert (brand["status"], brand["errors_24h"], brand["followers_count"]) == ("ok", 0, 48213)
    assert brand["followers_captured_at"] == world.now - timedelta(hours=1)
    assert brand["last_error"] == "TransientError: Service temporarily unavailable"
    shop = rows["northwind-shop"]
    assert (shop["status"], shop["errors_24h"], shop["token_valid"]) == ("unhealthy", 2, False)
    assert shop["last_error_at"] == world.now - timedelta(hours=1)
    assert rows["archive"]["status"] == "disabled"
    assert rows["archive"]["followers_count"] is None


# --------------------------------------------------------------------------- sql/examples.sql


def example(name: str) -> str:
    return schema.parse_named(schema.read_sql("examples.sql"))[name]


def test_examples_are_the_ones_tested_here() -> None:
    assert set(schema.parse_named(schema.read_sql("examples.sql"))) == {
        "top_media_last_30_days",
        "story_capture_report",
        "daily_reach_last_14_days",
        "accounts_needing_attention",
        "views_a_week_ago",
        "reach_changes_last_30_days",
    }


async def test_example_top_media_last_30_days(world: World, db_conn: asyncpg.Connection) -> None:
    rows = await db_conn.fetch(example("top_media_last_30_days"))
    assert [
        (r["account_name"], r["media_id"], r["views"], r["reach"], r["saved"]) for r in rows
    ] == [
        ("northwind", REEL, 20000, 15000, 400),
        ("northwind", POST, 1500, 1200, 31),
        ("northwind-shop", SHOP_POST, 700, 650, None),
    ]


async def test_example_story_capture_report(world: World, db_conn: asyncpg.Connection) -> None:
    rows = await db_conn.fetch(example("story_capture_report"))
    assert plain(rows) == [
        {
            "account_name": "northwind",
            "stories": 3,
            "final_by_poll": 1,
            "final_by_webhook": 0,
            "missed": 2,
            "missed_below_threshold": 1,
            "missed_paused": 0,
            "missed_process_down": 1,
            "missed_otherwise": 0,
            "avg_final_lead": timedelta(minutes=20),
        },
        {
            "account_name": "northwind-shop",
            "stories": 1,
            "final_by_poll": 1,
            "final_by_webhook": 0,
            "missed": 0,
            "missed_below_threshold": 0,
            "missed_paused": 0,
            "missed_process_down": 0,
            "missed_otherwise": 0,
            "avg_final_lead": timedelta(minutes=10),
        },
    ]


async def test_example_daily_reach_last_14_days(world: World, db_conn: asyncpg.Connection) -> None:
    rows = await db_conn.fetch(example("daily_reach_last_14_days"))
    assert [(r["day"], r["account_name"], r["reach"]) for r in rows] == [
        (world.today - timedelta(days=back), "northwind", Decimal(5000 + back))
        for back in range(14, 0, -1)
    ]


async def test_example_accounts_needing_attention(
    world: World, db_conn: asyncpg.Connection
) -> None:
    rows = await db_conn.fetch(example("accounts_needing_attention"))
    assert [(r["name"], r["status"], r["errors_24h"]) for r in rows] == [
        ("corner-cafe", "ok", 0),  # token expires in 3 days
        ("northwind-shop", "unhealthy", 2),
    ]
    assert rows[1]["status_reason"] == "code=190 subcode=463 Session has expired"
    assert rows[0]["token_expires_at"] == world.now + timedelta(days=3)


async def test_example_views_a_week_ago(world: World, db_conn: asyncpg.Connection) -> None:
    rows = await db_conn.fetch(example("views_a_week_ago"))
    ten_days, eight_days = world.now - timedelta(days=10), world.now - timedelta(days=8)
    assert [tuple(r) for r in rows] == [
        (OLD_POST, "reach", 1, ten_days, 1, world.now - timedelta(hours=3)),
        (OLD_POST, "views", 90000, ten_days, 99999, world.now - timedelta(hours=3)),
        (REEL, "reach", 4000, eight_days, 15000, world.now - timedelta(hours=3)),
        (REEL, "views", 5000, eight_days, 20000, world.now - timedelta(hours=3)),
    ]


async def test_example_reach_changes_last_30_days(
    world: World, db_conn: asyncpg.Connection
) -> None:
    rows = await db_conn.fetch(example("reach_changes_last_30_days"))
    now = world.now
    # (media, the value before, the value, from, until): the first capture has none before
    assert [tuple(r) for r in rows] == [
        (OLD_POST, None, 1, now - timedelta(days=10), None),
        (REEL, None, 4000, now - timedelta(days=8), now - timedelta(hours=3)),
        (REEL, 4000, 15000, now - timedelta(hours=3), None),
        (POST, None, 800, now - timedelta(days=1), now - timedelta(hours=1)),
        (POST, 800, 1200, now - timedelta(hours=1), None),
    ]


async def test_media_metric_keeps_every_capture(world: World, db_conn: asyncpg.Connection) -> None:
    # the per-poll view repeats an unchanged value at each capture; the history stores it once
    rows = await db_conn.fetch(
        "select captured_at, value from media_metric where media_id = $1 and metric = 'reach' "
        "order by captured_at",
        OLD_POST,
    )
    assert [tuple(r) for r in rows] == [
        (world.now - timedelta(days=10), 1),
        (world.now - timedelta(hours=3), 1),
    ]
    assert (
        await db_conn.fetchval(
            "select count(*) from media_metric_history where media_id = $1 and metric = 'reach'",
            OLD_POST,
        )
        == 1
    )
