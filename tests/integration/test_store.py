"""The repository against a real PostgreSQL: every write path, replays, revisions and reads."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from collector import errors, models, records, schema
from collector import store as store_mod

T0 = datetime(2026, 11, 3, 14, 5, 0, tzinfo=UTC)
BRAND = models.IgUserId("17841405822304914")
SHOP = models.IgUserId("17841400008460056")
POST = models.MediaId("18027310153508651")
REEL = models.MediaId("17993282576146728")
OLD_POST = models.MediaId("17858893269000123")
STORY = models.MediaId("18052846918190473")
OLD_STORY = models.MediaId("18049950123087710")

TABLE_KEYS = {
    "account": "ig_user_id",
    "account_snapshot": "ig_user_id, captured_at",
    "media": "media_id",
    "media_capture": "media_id, captured_at, key_set_id",
    "media_metric_current": "media_id, key_set_id",
    "media_capture_carried": "media_id, key_set_id",
    "account_metric_value": "ig_user_id, key_id, end_time",
    "metric_key": "key_id",
    "metric_key_set": "key_set_id",
    "metric_support": "object_kind, metric, api_version",
    "collection_error": "id",
}


def media(
    media_id: str,
    *,
    product: str = "FEED",
    media_type: str = "IMAGE",
    posted_at: datetime = T0 - timedelta(days=1),
    caption: str | None = "Autumn drop: 12 new colours",
    seen_at: datetime = T0,
    owner: models.IgUserId = BRAND,
) -> models.Media:
    story = product == "STORY"
    return models.Media(
        media_id=models.MediaId(media_id),
        ig_user_id=owner,
        media_type=media_type,
        media_product_type=product,
        posted_at=posted_at,
        permalink=None if story else f"https://www.instagram.com/p/C{media_id[-8:]}/",
        caption=None if story else caption,
        expires_at=posted_at + timedelta(hours=24) if story else None,
        seen_at=seen_at,
    )


def story_metrics(
    at: datetime, *, final: bool = False, reach: int = 412
) -> list[models.MediaMetric]:
    rows = [
        models.MediaMetric(STORY, "reach", "", "", reach, at, final),
        models.MediaMetric(STORY, "views", "", "", 530, at, final),
        models.MediaMetric(STORY, "replies", "", "", 3, at, final),
        models.MediaMetric(STORY, "navigation", "", "", 388, at, final),
    ]
    for action, n in [
        ("tap_forward", 301),
        ("tap_back", 22),
        ("tap_exit", 41),
        ("swipe_forward", 24),
    ]:
        rows.append(
            models.MediaMetric(
                STORY, "navigation", "story_navigation_action_type", action, n, at, final
            )
        )
    return rows


def full_batch() -> models.Batch:
    """One of everything, as a pass over one account produces it."""
    day_end = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)  # midnight America/Los_Angeles (PST)
    return models.Batch(
        profiles=[models.ProfileSnapshot(BRAND, T0, "northwind.studio", 48213, 312, 1290)],
        media=[
            media(POST),
            media(REEL, product="REELS", media_type="VIDEO", posted_at=T0 - timedelta(hours=5)),
            media(STORY, product="STORY", media_type="VIDEO", posted_at=T0 - timedelta(hours=3)),
        ],
        media_metrics=[
            models.MediaMetric(POST, "reach", "", "", 1840, T0),
            models.MediaMetric(POST, "saved", "", "", 57, T0),
            models.MediaMetric(POST, "like_count", "", "", 233, T0),
            models.MediaMetric(REEL, "views", "", "", 12873, T0),
            models.MediaMetric(REEL, "ig_reels_avg_watch_time", "", "", 5317, T0),
            models.MediaMetric(REEL, "reels_skip_rate", "", "", 0.3125, T0),
            *story_metrics(T0),
        ],
        media_polls=[
            models.MediaPoll(POST, T0, models.InsightsStatus.OK),
            models.MediaPoll(REEL, T0, models.InsightsStatus.OK),
            models.MediaPoll(STORY, T0, models.InsightsStatus.OK),
        ],
        account_metrics=[
            models.AccountMetric(BRAND, "reach", "day", "", "", day_end, 9120, T0),
            models.AccountMetric(BRAND, "follower_count", "day", "", "", day_end, 38, T0),
            models.AccountMetric(
                BRAND, "follower_demographics", "lifetime", "country", "DE", day_end, 11873, T0
            ),
            models.AccountMetric(
                BRAND, "follower_demographics", "lifetime", "country", "AT", day_end, 2040, T0
            ),
        ],
        errors=[
            models.CollectionError(
                BRAND,
                T0,
                "media_insights",
                OLD_POST,
                "BeforeConversion",
                100,
                2108006,
                "Media posted before business account conversion",
                "AbCdEf123",
            ),
            models.CollectionError(
                BRAND, T0, "profile", None, "TransientError", 2, None, "Service unavailable", None
            ),
        ],
        verdicts=[
            models.MetricVerdict(
                models.ObjectKind.STORY,
                "impressions",
                "v23.0",
                False,
                "(#100) metric impressions is no longer supported",
                T0,
            ),
            models.MetricVerdict(models.ObjectKind.REELS, "views", "v23.0", True, "", T0),
        ],
    )


async def dump(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, with xmin: equal dumps mean no row was even rewritten."""
    out = {}
    for table, key in TABLE_KEYS.items():
        rows = await conn.fetch(f"select xmin::text as xmin, * from {table} order by {key}")
        out[table] = [dict(r) for r in rows]
    return out


@pytest.fixture
async def synced(store: store_mod.Store) -> store_mod.Store:
    await store.sync_accounts(
        [
            models.AccountRow(BRAND, "northwind", True),
            models.AccountRow(SHOP, "northwind-shop", True),
        ],
        T0 - timedelta(days=30),
    )
    return store


# --------------------------------------------------------------------------- writes


async def test_write_stores_every_kind_of_record(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await synced.write(full_batch())

    assert await synced.counts() == {
        "account": 2,
        "account_snapshot": 1,
        "media": 3,
        "media_metric": 6 + 8,
        "account_metric": 4,
        "metric_support": 2,
        "collection_error": 2,
    }
    account = await db_conn.fetchrow("select * from account where ig_user_id = $1", BRAND)
    assert account["username"] == "northwind.studio"
    assert account["last_error_at"] == T0
    assert account["last_error"] in {
        "BeforeConversion: Media posted before business account conversion",
        "TransientError: Service unavailable",
    }
    story = await db_conn.fetchrow("select * from media where media_id = $1", STORY)
    assert story["is_story"] is True
    assert story["expires_at"] == T0 + timedelta(hours=21)
    assert story["last_polled_at"] == T0
    assert story["insights_status"] == "ok"
    assert story["final_captured_at"] is None
    assert await db_conn.fetchval("select is_story from media where media_id = $1", REEL) is False
    # a float rate is stored exactly as written, not as its binary expansion
    assert await db_conn.fetchval(
        "select value from media_metric where metric = 'reels_skip_rate'"
    ) == Decimal("0.3125")
    nav = await db_conn.fetch(
        "select dimension, value from media_metric where media_id = $1 "
        "and breakdown = 'story_navigation_action_type' order by dimension",
        STORY,
    )
    assert [(r["dimension"], r["value"]) for r in nav] == [
        ("swipe_forward", 24),
        ("tap_back", 22),
        ("tap_exit", 41),
        ("tap_forward", 301),
    ]
    errs = await db_conn.fetch("select * from collection_error order by job")
    assert [(e["job"], e["object_id"], e["code"], e["subcode"]) for e in errs] == [
        ("media_insights", OLD_POST, 100, 2108006),
        ("profile", None, 2, None),
    ]


async def test_replaying_a_batch_changes_nothing(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    batch = full_batch()
    await synced.write(batch)
    before = await dump(db_conn)
    counts = await synced.counts()

    await synced.write(batch)
    await synced.write(full_batch())

    assert await synced.counts() == counts
    assert await dump(db_conn) == before


async def test_a_batch_with_duplicates_inside_is_stored_once(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    batch = full_batch()
    batch.extend(full_batch())
    await synced.write(batch)
    counts = await synced.counts()
    assert counts["media"] == 3
    assert counts["media_metric"] == 14
    assert counts["account_metric"] == 4
    assert counts["collection_error"] == 2


async def test_write_is_one_transaction(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    batch = full_batch()
    # a metric of a media the database has never seen violates the foreign key …
    batch.media_metrics.append(
        models.MediaMetric(models.MediaId("17999999999999999"), "reach", "", "", 1, T0)
    )
    with pytest.raises(errors.StoreError, match="ForeignKeyViolationError"):
        await synced.write(batch)
    # … and nothing of the batch is kept
    assert await db_conn.fetchval("select count(*) from media") == 0
    assert await db_conn.fetchval("select count(*) from account_snapshot") == 0
    # the connection is usable again (its staging tables are empty)
    await synced.write(full_batch())
    assert (await synced.counts())["media_metric"] == 14


async def test_empty_batch_is_a_no_op(synced: store_mod.Store) -> None:
    await synced.write(models.Batch())
    assert (await synced.counts())["media"] == 0


async def test_account_metric_revision_updates_the_value(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    day_end = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)

    def reach(value: int, at: datetime) -> models.Batch:
        return models.Batch(
            account_metrics=[
                models.AccountMetric(BRAND, "reach", "day", "", "", day_end, value, at)
            ]
        )

    async def row() -> tuple[Any, ...]:
        r = await db_conn.fetchrow(
            "select value, captured_at, first_captured_at from account_metric"
        )
        return (r["value"], r["captured_at"], r["first_captured_at"])

    await synced.write(reach(9120, T0))
    # Meta revised the day: the newer capture wins, the first capture time is kept
    await synced.write(reach(9388, T0 + timedelta(hours=6)))
    assert await row() == (9388, T0 + timedelta(hours=6), T0)
    # the same value confirmed later moves captured_at only
    await synced.write(reach(9388, T0 + timedelta(hours=12)))
    assert await row() == (9388, T0 + timedelta(hours=12), T0)
    # a late replay of an older capture does not roll the value back
    await synced.write(reach(9120, T0))
    assert await row() == (9388, T0 + timedelta(hours=12), T0)
    assert await db_conn.fetchval("select count(*) from account_metric") == 1


async def test_media_upsert_never_replaces_a_value_with_null(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    first = media(POST, seen_at=T0)
    await synced.write(models.Batch(media=[first]))

    # /stories or a sparse field list returns the object without caption and permalink
    sparse = dataclasses.replace(
        first, caption=None, permalink=None, media_type=None, seen_at=T0 + timedelta(hours=1)
    )
    await synced.write(models.Batch(media=[sparse]))
    row = await db_conn.fetchrow("select * from media where media_id = $1", POST)
    assert row["caption"] == first.caption
    assert row["permalink"] == first.permalink
    assert row["media_type"] == "IMAGE"
    assert row["first_seen_at"] == T0
    assert row["last_seen_at"] == T0 + timedelta(hours=1)

    # an edited caption is taken from a newer sighting
    edited = dataclasses.replace(
        first, caption="Autumn drop (sold out)", seen_at=T0 + timedelta(hours=2)
    )
    await synced.write(models.Batch(media=[edited]))
    assert (
        await db_conn.fetchval("select caption from media where media_id = $1", POST)
        == "Autumn drop (sold out)"
    )
    # but not from an older one replayed late
    await synced.write(models.Batch(media=[first]))
    row = await db_conn.fetchrow("select * from media where media_id = $1", POST)
    assert row["caption"] == "Autumn drop (sold out)"
    assert (row["first_seen_at"], row["last_seen_at"]) == (T0, T0 + timedelta(hours=2))


async def test_story_expiry_is_derived_when_missing(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    posted = T0 - timedelta(hours=2)
    story = dataclasses.replace(media(STORY, product="STORY", posted_at=posted), expires_at=None)
    await synced.write(models.Batch(media=[story]))
    row = await db_conn.fetchrow("select is_story, expires_at from media")
    assert (row["is_story"], row["expires_at"]) == (True, posted + timedelta(hours=24))


async def test_media_polls_update_status_final_and_gone(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    story = media(STORY, product="STORY", posted_at=T0)
    await synced.write(models.Batch(media=[story, media(POST), media(OLD_POST)]))
    final_at = T0 + timedelta(hours=23, minutes=40)
    await synced.write(
        models.Batch(
            media_metrics=story_metrics(final_at, final=True),
            media_polls=[
                models.MediaPoll(
                    STORY,
                    T0 + timedelta(hours=2),
                    models.InsightsStatus.BELOW_THRESHOLD,
                    reason="(#10) Not enough viewers for the media to show insights",
                ),
                models.MediaPoll(STORY, final_at, models.InsightsStatus.OK, is_final=True),
                models.MediaPoll(POST, T0, models.InsightsStatus.GONE, reason="100/33"),
                models.MediaPoll(
                    OLD_POST, T0, models.InsightsStatus.BEFORE_CONVERSION, reason="100/2108006"
                ),
            ],
        )
    )
    rows = {
        r["media_id"]: r
        for r in await db_conn.fetch(
            "select media_id, last_polled_at, insights_status, insights_status_reason, "
            "final_captured_at, gone_at from media"
        )
    }
    assert rows[STORY]["insights_status"] == "ok"  # the newest poll wins inside a batch
    assert rows[STORY]["insights_status_reason"] is None
    assert rows[STORY]["last_polled_at"] == final_at
    assert rows[STORY]["final_captured_at"] == final_at
    assert rows[STORY]["gone_at"] is None
    assert (rows[POST]["insights_status"], rows[POST]["gone_at"]) == ("gone", T0)
    assert rows[OLD_POST]["insights_status"] == "before_conversion"

    # a story past its expiry is marked gone; gone_at keeps the first such poll
    gone = T0 + timedelta(hours=24, minutes=5)
    for at in (gone, gone + timedelta(hours=1)):
        await synced.write(
            models.Batch(
                media_polls=[
                    models.MediaPoll(STORY, at, models.InsightsStatus.GONE, reason="expired")
                ]
            )
        )
    row = await db_conn.fetchrow("select * from media where media_id = $1", STORY)
    assert row["gone_at"] == gone
    assert row["final_captured_at"] == final_at
    assert row["last_polled_at"] == gone + timedelta(hours=1)

    # an older poll replayed late changes no status
    await synced.write(
        models.Batch(
            media_polls=[models.MediaPoll(STORY, T0 + timedelta(hours=1), models.InsightsStatus.OK)]
        )
    )
    assert (
        await db_conn.fetchval("select insights_status from media where media_id = $1", STORY)
        == "gone"
    )


async def test_collection_errors_update_the_account(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    def err(at: datetime, message: str) -> models.CollectionError:
        return models.CollectionError(
            SHOP, at, "account", None, "TokenInvalid", 190, 463, message, "A1b2C3"
        )

    await synced.write(models.Batch(errors=[err(T0, "Error validating access token: expired")]))
    await synced.write(models.Batch(errors=[err(T0 - timedelta(hours=1), "older")]))
    row = await db_conn.fetchrow(
        "select last_error, last_error_at from account where ig_user_id = $1", SHOP
    )
    assert row["last_error"] == "TokenInvalid: Error validating access token: expired"
    assert row["last_error_at"] == T0
    assert await db_conn.fetchval("select count(*) from collection_error") == 2


async def test_metric_verdicts_are_upserted(synced: store_mod.Store) -> None:
    def verdict(supported: bool, at: datetime) -> models.MetricVerdict:
        return models.MetricVerdict(
            models.ObjectKind.FEED_IMAGE, "impressions", "v23.0", supported, "why", at
        )

    await synced.write(models.Batch(verdicts=[verdict(False, T0)]))
    await synced.write(models.Batch(verdicts=[verdict(True, T0 + timedelta(days=1))]))
    await synced.write(models.Batch(verdicts=[verdict(False, T0)]))  # late replay
    assert await synced.metric_verdicts("v23.0") == [verdict(True, T0 + timedelta(days=1))]
    assert await synced.metric_verdicts("v24.0") == []


async def test_a_batch_for_an_unknown_account_keeps_the_data(
    store: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await store.write(models.Batch(profiles=[models.ProfileSnapshot(SHOP, T0, "shop", 10, 1, 2)]))
    row = await db_conn.fetchrow("select name, status, enabled, username from account")
    assert dict(row) == {"name": SHOP, "status": "unknown", "enabled": False, "username": "shop"}
    # the next configuration sync adopts it
    await store.sync_accounts([models.AccountRow(SHOP, "northwind-shop", True)], T0)
    row = await db_conn.fetchrow("select name, status, enabled from account")
    assert dict(row) == {"name": "northwind-shop", "status": "unknown", "enabled": True}


async def test_profiles_keep_history_and_the_newest_username(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await synced.write(
        models.Batch(
            profiles=[
                models.ProfileSnapshot(BRAND, T0, "northwind.studio", 48213, 312, 1290),
                models.ProfileSnapshot(
                    BRAND, T0 + timedelta(hours=1), "northwind", 48240, 312, 1291
                ),
            ]
        )
    )
    await synced.write(
        models.Batch(
            profiles=[models.ProfileSnapshot(BRAND, T0 - timedelta(hours=1), "old.name", 1, 1, 1)]
        )
    )
    assert (
        await db_conn.fetchval("select username from account where ig_user_id = $1", BRAND)
        == "northwind"
    )
    assert await db_conn.fetchval("select count(*) from account_snapshot") == 3


# --------------------------------------------------------------------------- accounts


async def test_sync_accounts_removes_and_readds(
    store: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    await store.sync_accounts(
        [models.AccountRow(BRAND, "northwind", True), models.AccountRow(SHOP, "shop", False)], t1
    )
    await store.write(models.Batch(media=[media(POST)]))

    async def state() -> dict[str, tuple[Any, ...]]:
        rows = await db_conn.fetch("select * from account")
        return {
            r["ig_user_id"]: (
                r["name"],
                r["enabled"],
                r["status"],
                r["removed_at"],
                r["status_changed_at"],
            )
            for r in rows
        }

    assert await state() == {
        BRAND: ("northwind", True, "unknown", None, t1),
        SHOP: ("shop", False, "disabled", None, t1),
    }
    await store.sync_accounts([models.AccountRow(SHOP, "shop", True)], t2)
    assert await state() == {
        BRAND: ("northwind", False, "removed", t2, t2),
        SHOP: ("shop", True, "unknown", None, t2),
    }
    assert await db_conn.fetchval("select count(*) from media") == 1  # data kept
    # syncing the same configuration again changes nothing
    await store.sync_accounts([models.AccountRow(SHOP, "shop", True)], t3)
    assert (await state())[BRAND] == ("northwind", False, "removed", t2, t2)

    await store.sync_accounts(
        [models.AccountRow(BRAND, "northwind-studio", True), models.AccountRow(SHOP, "shop", True)],
        t3,
    )
    assert await state() == {
        BRAND: ("northwind-studio", True, "unknown", None, t3),
        SHOP: ("shop", True, "unknown", None, t2),
    }
    assert (
        await db_conn.fetchval(
            "select first_configured_at from account where ig_user_id = $1", BRAND
        )
        == t1
    )


async def test_status_success_and_token_info(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await synced.record_success(BRAND, T0)
    row = await db_conn.fetchrow("select * from account where ig_user_id = $1", BRAND)
    assert (row["status"], row["last_success_at"], row["status_changed_at"]) == ("ok", T0, T0)

    reason = "code=190 subcode=463 Error validating access token: Session has expired"
    await synced.set_account_status(
        BRAND, models.AccountStatus.UNHEALTHY, reason, T0 + timedelta(hours=1)
    )
    await synced.set_account_status(
        BRAND, models.AccountStatus.UNHEALTHY, reason, T0 + timedelta(hours=2)
    )
    row = await db_conn.fetchrow("select * from account where ig_user_id = $1", BRAND)
    assert (row["status"], row["status_reason"]) == ("unhealthy", reason)
    assert row["status_changed_at"] == T0 + timedelta(hours=1)  # unchanged by the repeat

    await synced.set_token_info(
        BRAND,
        valid=True,
        expires_at=T0 + timedelta(days=60),
        data_access_expires_at=T0 + timedelta(days=90),
        scopes=["instagram_basic", "instagram_manage_insights", "pages_read_engagement"],
        checked_at=T0,
    )
    row = await db_conn.fetchrow("select * from account where ig_user_id = $1", BRAND)
    assert row["token_valid"] is True
    assert row["token_expires_at"] == T0 + timedelta(days=60)
    assert row["data_access_expires_at"] == T0 + timedelta(days=90)
    assert row["token_scopes"] == [
        "instagram_basic",
        "instagram_manage_insights",
        "pages_read_engagement",
    ]
    assert row["token_checked_at"] == T0

    states = {a.ig_user_id: a for a in await synced.accounts()}
    assert states[BRAND].status == "unhealthy"
    assert states[BRAND].token_valid is True
    assert states[SHOP].name == "northwind-shop"

    for call in (
        synced.record_success("17841499999999999", T0),
        synced.set_account_status("17841499999999999", models.AccountStatus.OK, None, T0),
    ):
        with pytest.raises(errors.StoreError, match="unknown account 17841499999999999"):
            await call


async def test_a_job_finishing_late_does_not_revive_a_removed_account(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await synced.sync_accounts([models.AccountRow(SHOP, "northwind-shop", True)], T0)
    await synced.set_account_status(BRAND, models.AccountStatus.OK, None, T0 + timedelta(minutes=1))
    await synced.record_success(BRAND, T0 + timedelta(minutes=1))
    row = await db_conn.fetchrow("select * from account where ig_user_id = $1", BRAND)
    assert (row["status"], row["last_success_at"]) == ("removed", T0 + timedelta(minutes=1))


# --------------------------------------------------------------------------- reads


async def test_reads_for_the_collection_pass(synced: store_mod.Store) -> None:
    story = media(STORY, product="STORY", posted_at=T0 - timedelta(hours=3))
    old_story = media(OLD_STORY, product="STORY", posted_at=T0 - timedelta(hours=30))
    feed = [
        media(POST, posted_at=T0 - timedelta(days=1)),
        media(REEL, product="REELS", media_type="VIDEO", posted_at=T0 - timedelta(hours=5)),
        media(OLD_POST, posted_at=T0 - timedelta(days=800)),
        media("17900000000000001", posted_at=T0 - timedelta(days=2)),  # gone
        media("17900000000000002", posted_at=T0 - timedelta(days=3)),  # before conversion
        media("17900000000000003", posted_at=T0 - timedelta(days=4), media_type="CAROUSEL_ALBUM"),
        media("17900000000000004", posted_at=T0, owner=SHOP),
    ]
    await synced.write(
        models.Batch(
            media=[story, old_story, *feed],
            media_polls=[
                models.MediaPoll(
                    models.MediaId("17900000000000001"), T0, models.InsightsStatus.GONE
                ),
                models.MediaPoll(
                    models.MediaId("17900000000000002"), T0, models.InsightsStatus.BEFORE_CONVERSION
                ),
                models.MediaPoll(
                    models.MediaId("17900000000000003"), T0, models.InsightsStatus.BELOW_THRESHOLD
                ),
                models.MediaPoll(POST, T0 - timedelta(hours=1), models.InsightsStatus.OK),
            ],
        )
    )

    assert await synced.known_media_ids(BRAND) == {
        STORY,
        OLD_STORY,
        POST,
        REEL,
        OLD_POST,
        "17900000000000001",
        "17900000000000002",
        "17900000000000003",
    }
    found = await synced.media_for_insights(BRAND, posted_after=T0 - timedelta(days=730))
    assert [m.media_id for m in found] == [REEL, POST, "17900000000000003"]
    assert found[0] == dataclasses.replace(feed[1])
    assert [m.kind for m in found] == [
        models.ObjectKind.REELS,
        models.ObjectKind.FEED_IMAGE,
        models.ObjectKind.FEED_CAROUSEL,
    ]
    assert await synced.live_stories(BRAND, now=T0) == [story]
    assert await synced.live_stories(BRAND, now=T0 + timedelta(hours=21)) == []
    assert await synced.media_last_polled(BRAND) == {
        "17900000000000001": T0,
        "17900000000000002": T0,
        "17900000000000003": T0,
        POST: T0 - timedelta(hours=1),
    }
    assert await synced.known_media_ids("17841499999999999") == set()


async def test_last_account_metric_end_considers_day_buckets_only(synced: store_mod.Store) -> None:
    assert await synced.last_account_metric_end(BRAND) is None
    end = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    await synced.write(
        models.Batch(
            account_metrics=[
                models.AccountMetric(BRAND, "reach", "day", "", "", end - timedelta(days=1), 1, T0),
                models.AccountMetric(BRAND, "reach", "day", "", "", end, 2, T0),
                models.AccountMetric(
                    BRAND,
                    "follower_demographics",
                    "lifetime",
                    "city",
                    "Berlin, Germany",
                    end + timedelta(days=1),
                    3,
                    T0,
                ),
                models.AccountMetric(SHOP, "reach", "day", "", "", end + timedelta(days=5), 2, T0),
            ]
        )
    )
    assert await synced.last_account_metric_end(BRAND) == end


# --------------------------------------------------------------------------- connection


async def test_open_on_a_closed_port_is_database_unavailable() -> None:
    dsn = "postgresql://collector:s3cr%40t-pw@127.0.0.1:1/insights"
    with pytest.raises(errors.DatabaseUnavailable) as caught:
        await store_mod.Store.open(dsn, connect_timeout=2)
    message = str(caught.value)
    assert "127.0.0.1:1/insights" in message
    assert "s3cr" not in message
    assert "s3cr@t-pw" not in message
    assert caught.value.__cause__ is None  # asyncpg's exception may carry the DSN


async def test_a_lost_connection_is_database_unavailable(
    store: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await store.ping()
    # Park the store's query behind a lock, then kill its backend: deterministic, unlike
    # killing an idle connection (the pool may notice first and quietly reconnect).
    async with db_conn.transaction():
        await db_conn.execute("lock table account in access exclusive mode")
        counting = asyncio.ensure_future(store.counts())
        for _ in range(1000):  # until the query waits on the lock (bounded by the timeout)
            if await db_conn.fetchval(
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and application_name = 'collector' and wait_event_type = 'Lock'"
            ):
                break
            await asyncio.sleep(0.01)
        await db_conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = current_database() and application_name = 'collector'"
        )
        with pytest.raises(errors.DatabaseUnavailable, match="lost PostgreSQL at"):
            await counting
    await store.ping()  # and the pool recovers by itself


def test_dsn_helpers_never_show_the_password() -> None:
    dsn = "postgresql://collector:p%40ss@db.internal:6432/insights?sslmode=require"
    assert store_mod.dsn_password(dsn) == "p@ss"
    assert store_mod.describe_dsn(dsn) == "PostgreSQL at db.internal:6432/insights"
    assert store_mod.describe_dsn("postgresql:///insights?host=/run/postgresql") == (
        "PostgreSQL at /run/postgresql:5432/insights"
    )
    assert store_mod.dsn_password("postgresql://u@h/db?password=pw") == "pw"
    assert store_mod.dsn_password("postgresql://u@h/db") is None
    assert "secret" not in store_mod.describe_dsn("host=h password=secret")


async def test_a_large_batch_is_written_in_one_go(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    posts = [media(f"1790000000{i:07d}", posted_at=T0 - timedelta(hours=i)) for i in range(500)]
    metrics = [
        models.MediaMetric(p.media_id, name, "", "", i * 7 + j, T0)
        for i, p in enumerate(posts)
        for j, name in enumerate(("reach", "views", "saved", "shares", "total_interactions"))
    ]
    batch = models.Batch(media=posts, media_metrics=metrics)
    await synced.write(batch)
    await synced.write(batch)
    counts = await synced.counts()
    assert (counts["media"], counts["media_metric"]) == (500, 2500)


async def test_media_schedule_lists_what_is_worth_polling(synced: store_mod.Store) -> None:
    live = media(STORY, product="STORY", posted_at=T0 - timedelta(hours=3))
    expired = media(OLD_STORY, product="STORY", posted_at=T0 - timedelta(hours=30))
    gone = models.MediaId("17900000000000001")
    converted = models.MediaId("17900000000000002")
    final_at = T0 - timedelta(minutes=5)
    await synced.write(
        models.Batch(
            media=[
                live,
                expired,
                media(POST, posted_at=T0 - timedelta(days=1)),
                media(OLD_POST, posted_at=T0 - timedelta(days=800)),
                media(gone, posted_at=T0 - timedelta(days=2)),
                media(converted, posted_at=T0 - timedelta(days=3)),
            ],
            media_polls=[
                models.MediaPoll(STORY, final_at, models.InsightsStatus.OK, is_final=True),
                models.MediaPoll(gone, T0, models.InsightsStatus.GONE),
                models.MediaPoll(converted, T0, models.InsightsStatus.BEFORE_CONVERSION),
            ],
        )
    )
    rows = await synced.media_schedule(BRAND, now=T0)
    assert [r.media_id for r in rows] == [STORY, POST, OLD_POST]
    assert rows[0] == models.MediaSchedule(
        media_id=STORY,
        ig_user_id=BRAND,
        media_type="IMAGE",
        media_product_type="STORY",
        posted_at=T0 - timedelta(hours=3),
        expires_at=T0 + timedelta(hours=21),
        last_polled_at=final_at,
        final_captured_at=final_at,
        insights_status=models.InsightsStatus.OK,
    )
    assert rows[1].insights_status is None
    assert rows[1].last_polled_at is None


async def test_last_captures_per_job(synced: store_mod.Store) -> None:
    assert await synced.last_captures(BRAND) == {}
    await synced.write(full_batch())
    await synced.set_token_info(
        BRAND,
        valid=True,
        expires_at=None,
        data_access_expires_at=None,
        scopes=[],
        checked_at=T0 - timedelta(minutes=1),
    )
    assert await synced.last_captures(BRAND) == {
        "token_check": T0 - timedelta(minutes=1),
        "profile": T0,
        "media_discovery": T0,
        "story_discovery": T0,
        "account_insights": T0,
        "demographics": T0,
    }
    assert await synced.last_captures(SHOP) == {}


async def test_close_cuts_queries_that_outlast_the_grace(
    db_dsn: str, db_conn: asyncpg.Connection
) -> None:
    st = await store_mod.Store.open(db_dsn)
    async with db_conn.transaction():
        await db_conn.execute("lock table account in access exclusive mode")
        counting = asyncio.ensure_future(st.counts())
        await asyncio.sleep(0)  # let the query start and block on the lock
        await st.close(grace=0.2)
        with pytest.raises(errors.StoreError):
            await counting


async def test_every_named_query_is_valid_sql(db_conn: asyncpg.Connection) -> None:
    queries = dict(schema.named_queries("queries.sql"))
    await db_conn.execute(queries.pop("create_stage_tables"))
    for name, sql in queries.items():
        try:
            if "$1" in sql:
                await db_conn.prepare(sql)
            else:
                # a parameterless block may be a script (several statements): run it on the
                # empty stage tables and roll back
                tr = db_conn.transaction()
                await tr.start()
                try:
                    await db_conn.execute(sql)
                finally:
                    await tr.rollback()
        except asyncpg.PostgresError as exc:
            pytest.fail(f"query {name}: {exc}")


def test_every_named_query_is_used() -> None:
    # the store runs them: by name in store.py, and per record kind from records.py
    used = pathlib.Path(store_mod.__file__).read_text() + pathlib.Path(records.__file__).read_text()
    assert [n for n in schema.named_queries("queries.sql") if f'"{n}"' not in used] == []
