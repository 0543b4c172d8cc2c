"""Graph JSON to records: the reference's example bodies, and bad data skipped, never raised."""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector import graph, jobs, metrics_catalog, models, parse

AT = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
UID = models.IgUserId("17841462785487205")


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, reason: str, detail: str) -> None:
        self.seen.append((reason, detail))


def test_timestamp_formats() -> None:
    assert parse.timestamp("2024-06-17T19:39:18+0000") == datetime(
        2024, 6, 17, 19, 39, 18, tzinfo=UTC
    )
    assert parse.timestamp("2024-06-17T19:39:18+02:00") == datetime(
        2024, 6, 17, 17, 39, 18, tzinfo=UTC
    )
    assert parse.timestamp("yesterday") is None
    assert parse.timestamp("2024-06-17T19:39:18") is None  # naive: refuse to guess
    assert parse.timestamp(12345) is None


def test_numbers_and_counts() -> None:
    assert parse.number(3) == 3
    assert parse.number(48.4) == 48.4
    assert parse.number(True) is None
    assert parse.number(float("inf")) is None
    assert parse.number(10**40) is None
    assert parse.number("12") is None
    assert parse.count(2**63) is None
    assert parse.count(-1) is None
    assert parse.count(419) == 419


def test_profile_with_bad_fields_keeps_the_good_ones() -> None:
    rec = Recorder()
    snap = parse.profile(
        {
            "id": "1",
            "username": "acme",
            "followers_count": 2**70,
            "follows_count": 112,
            "media_count": "x",
        },
        UID,
        AT,
        rec,
    )
    assert snap is not None
    assert snap.followers_count is None
    assert snap.follows_count == 112
    assert snap.media_count is None
    assert ("bad_field", "followers_count") in rec.seen


def test_media_items_and_stories() -> None:
    rec = Recorder()
    item = {
        "id": "18246395218306388",
        "media_type": "VIDEO",
        "media_product_type": "REELS",
        "timestamp": "2026-05-07T13:00:34+0000",
        "permalink": "https://www.instagram.com/reel/DYCdDzPjXGK/",
        "like_count": 11,
        "comments_count": 0,
    }
    media = parse.media_item(item, UID, AT, skipped=rec)
    assert media is not None
    assert media.kind is models.ObjectKind.REELS
    assert media.expires_at is None
    assert [m.metric for m in parse.media_field_metrics(item, media.media_id, AT)] == [
        "like_count",
        "comments_count",
    ]
    story = parse.media_item(
        {"id": "17969782069736348", "media_type": "IMAGE", "timestamp": "2026-06-15T10:00:00+0000"},
        UID,
        AT,
        story_lifetime=timedelta(hours=24),
    )
    assert story is not None
    assert story.media_product_type == "STORY"
    assert story.expires_at == datetime(2026, 6, 16, 10, 0, tzinfo=UTC)
    assert parse.media_item({"id": "abc"}, UID, AT, skipped=rec) is None
    assert parse.media_item("junk", UID, AT, skipped=rec) is None
    assert ("media_without_id", "'abc'") in rec.seen


def test_media_insights_example_d() -> None:
    body = {
        "data": [
            {
                "name": "reach",
                "period": "lifetime",
                "values": [{"value": 763}],
                "title": "Accounts reached",
                "id": "x/insights/reach/lifetime",
            },
            {
                "name": "reels_skip_rate",
                "period": "lifetime",
                "values": [{"value": 48.4}],
                "id": "x",
            },
        ]
    }
    rows = parse.media_insights(body, models.MediaId("1"), ["reach", "reels_skip_rate"], AT)
    assert [(r.metric, r.value) for r in rows] == [("reach", 763), ("reels_skip_rate", 48.4)]


def test_story_navigation_breakdown_example_e_is_lowercased() -> None:
    body = {
        "data": [
            {
                "name": "navigation",
                "period": "lifetime",
                "values": [{"value": 25}],
                "total_value": {
                    "value": 25,
                    "breakdowns": [
                        {
                            "dimension_keys": ["story_navigation_action_type"],
                            "results": [
                                {"dimension_values": ["TAP_FORWARD"], "value": 19},
                                {"dimension_values": ["tap_back"], "value": 4},
                                {"dimension_values": ["tap_exit"], "value": 1},
                                {"dimension_values": ["swipe_forward"], "value": 1},
                            ],
                        }
                    ],
                },
            }
        ]
    }
    rows = parse.media_insights(body, models.MediaId("1"), ["navigation"], AT, is_final=True)
    assert [(r.breakdown, r.dimension, r.value) for r in rows] == [
        ("", "", 25),
        ("story_navigation_action_type", "tap_forward", 19),
        ("story_navigation_action_type", "tap_back", 4),
        ("story_navigation_action_type", "tap_exit", 1),
        ("story_navigation_action_type", "swipe_forward", 1),
    ]
    assert all(r.is_final for r in rows)


def test_unrequested_and_malformed_metrics_are_skipped() -> None:
    rec = Recorder()
    body: dict[str, Any] = {
        "data": [
            {"name": "reach", "values": [{"value": "lots"}]},
            {"name": "surprise", "values": [{"value": 1}]},
            {"values": [{"value": 1}]},
            {"name": "views", "values": [{"value": 5}]},
        ]
    }
    rows = parse.media_insights(body, models.MediaId("1"), ["reach", "views"], AT, skipped=rec)
    assert [(r.metric, r.value) for r in rows] == [("views", 5)]
    assert ("unrequested_metric", "surprise") in rec.seen
    assert ("bad_value", "reach") in rec.seen
    assert (
        parse.media_insights({"data": "x"}, models.MediaId("1"), ["reach"], AT, skipped=rec) == []
    )


def test_account_time_series_example_f() -> None:
    body = {
        "data": [
            {
                "name": "reach",
                "period": "day",
                "values": [
                    {"value": 212, "end_time": "2026-06-01T07:00:00+0000"},
                    {"value": 187, "end_time": "2026-06-02T07:00:00+0000"},
                ],
            }
        ]
    }
    rows = parse.account_insights(body, UID, ["reach"], AT, period="day", end_time=None)
    assert [(r.end_time.day, r.value) for r in rows] == [(1, 212), (2, 187)]


def test_account_total_value_with_breakdown_example_g() -> None:
    end = datetime(2026, 6, 2, 7, tzinfo=UTC)
    body = {
        "data": [
            {
                "name": "views",
                "period": "day",
                "total_value": {
                    "value": 3410,
                    "breakdowns": [
                        {
                            "dimension_keys": ["follow_type"],
                            "results": [
                                {"dimension_values": ["FOLLOWER"], "value": 1220},
                                {"dimension_values": ["NON_FOLLOWER"], "value": 2190},
                            ],
                        }
                    ],
                },
            },
            {
                "name": "follows_and_unfollows",
                "period": "day",
                "total_value": {
                    "breakdowns": [
                        {
                            "dimension_keys": ["follow_type"],
                            "results": [
                                {"dimension_values": ["FOLLOWER"], "value": 14},
                                {"dimension_values": ["NON_FOLLOWER"], "value": 3},
                            ],
                        }
                    ]
                },
            },
        ]
    }
    rows = parse.account_insights(
        body, UID, ["views", "follows_and_unfollows"], AT, period="day", end_time=end
    )
    assert [(r.metric, r.breakdown, r.dimension, r.value) for r in rows] == [
        ("views", "", "", 3410),
        ("views", "follow_type", "FOLLOWER", 1220),
        ("views", "follow_type", "NON_FOLLOWER", 2190),
        ("follows_and_unfollows", "follow_type", "FOLLOWER", 14),
        ("follows_and_unfollows", "follow_type", "NON_FOLLOWER", 3),
    ]
    assert all(r.end_time == end for r in rows)


def test_demographics_drop_the_timeframe_key_and_empty_total_value_is_no_data() -> None:
    end = datetime(2026, 6, 16, 7, tzinfo=UTC)
    body = {
        "data": [
            {
                "name": "follower_demographics",
                "period": "lifetime",
                "total_value": {
                    "breakdowns": [
                        {
                            "dimension_keys": ["timeframe", "country"],
                            "results": [{"dimension_values": ["LAST_90_DAYS", "US"], "value": 181}],
                        }
                    ]
                },
            },
            {"name": "engaged_audience_demographics", "period": "lifetime", "total_value": {}},
        ]
    }
    rows = parse.account_insights(
        body,
        UID,
        ["follower_demographics", "engaged_audience_demographics"],
        AT,
        period="lifetime",
        end_time=end,
    )
    assert [(r.metric, r.breakdown, r.dimension, r.value) for r in rows] == [
        ("follower_demographics", "country", "US", 181)
    ]


def test_online_followers_hour_map() -> None:
    body = {
        "data": [
            {
                "name": "online_followers",
                "period": "lifetime",
                "values": [{"value": {"0": 159, "1": 157}, "end_time": "2026-06-01T07:00:00+0000"}],
            }
        ]
    }
    rows = parse.account_insights(
        body, UID, ["online_followers"], AT, period="lifetime", end_time=None
    )
    assert [(r.breakdown, r.dimension, r.value) for r in rows] == [
        ("hour", "0", 159),
        ("hour", "1", 157),
    ]


def test_pacific_days_follow_daylight_saving() -> None:
    summer = datetime(2026, 6, 1, 12, tzinfo=UTC)
    winter = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse.pacific_day_end(summer) == datetime(2026, 6, 2, 7, tzinfo=UTC)
    assert parse.pacific_day_end(winter) == datetime(2026, 12, 2, 8, tzinfo=UTC)
    assert parse.pacific_day_start(summer) == datetime(2026, 6, 1, 7, tzinfo=UTC)


def test_day_and_range_windows() -> None:
    now = datetime(2026, 6, 15, 12, tzinfo=UTC)
    days = jobs.day_windows(now - timedelta(days=3), now)
    assert len(days) == 4
    assert all(end - start == timedelta(days=1) for start, end in days)
    assert days[-1][1] > now  # today's bucket is open and gets revised later
    ranges = jobs.range_windows(now - timedelta(days=75), now)
    assert [round((e - s).total_seconds() / 86400) for s, e in ranges] == [30, 30, 15]


def test_catalog_learns_and_respects_overrides() -> None:
    verdict = models.MetricVerdict(models.ObjectKind.REELS, "views", "v25.0", False, "no", AT)
    catalog = metrics_catalog.Catalog("v25.0", [verdict])
    assert "views" not in catalog.media_metrics(models.ObjectKind.REELS)
    assert "views" in catalog.media_metrics(models.ObjectKind.FEED_IMAGE)
    assert catalog.reject(models.ObjectKind.FEED_IMAGE, "views")
    assert not catalog.reject(models.ObjectKind.FEED_IMAGE, "views")
    other_version = metrics_catalog.Catalog("v21.0", [verdict])
    assert "views" in other_version.media_metrics(models.ObjectKind.REELS)
    custom = catalog.with_overrides({"story": ["reach", "replies"], "account": ["reach"]})
    assert custom.media_metrics(models.ObjectKind.STORY) == ("reach", "replies")
    assert [r.name for r in custom.account_requests(demographics=False)] == ["totals"]
    # the clone shares what was learned
    custom.reject(models.ObjectKind.STORY, "replies")
    assert "replies" not in catalog.media_metrics(models.ObjectKind.STORY)


def test_values_outside_the_sane_range_are_not_numbers() -> None:
    for bad in (-11, -0.5, 2**63, 2**70, float("nan"), float("-inf"), 1e300, True, None, "3"):
        assert parse.number(bad) is None, bad
    assert parse.number(0) == 0
    assert parse.number(2**63 - 1) == 2**63 - 1
    assert parse.number(0.0) == 0.0


def test_text_is_made_storable_and_reported() -> None:
    rec = Recorder()
    assert (
        parse.text("a\ud800b\x00c\udfff", field="caption", skipped=rec) == "a\ufffdb\ufffdc\ufffd"
    )
    assert rec.seen == [("text_replaced", "caption")]
    assert parse.text("\U0001f600 fine", skipped=rec) == "\U0001f600 fine"  # a valid pair
    assert len(rec.seen) == 1
    assert parse.text("x" * 50, 10) == "x" * 10
    assert parse.text(5) is None


def test_bad_dimensions_and_hour_keys_are_storable() -> None:
    body = {
        "data": [
            {
                "name": "follower_demographics",
                "total_value": {
                    "breakdowns": [
                        {
                            "dimension_keys": ["city"],
                            "results": [
                                {"dimension_values": ["Lyon\ud800"], "value": 3},
                                {"dimension_values": ["Paris"], "value": -4},
                            ],
                        }
                    ]
                },
            }
        ]
    }
    rec = Recorder()
    end = datetime(2026, 6, 2, 7, tzinfo=UTC)
    rows = parse.account_insights(
        body, UID, ["follower_demographics"], AT, period="lifetime", end_time=end, skipped=rec
    )
    assert [(r.dimension, r.value) for r in rows] == [("Lyon\ufffd", 3)]
    assert ("bad_breakdown_result", "city") in rec.seen


# ---------------------------------------------------------------------------- wire encoding


@pytest.mark.parametrize(
    "form",
    [
        {"access_token": "EAAB+x/y=z", "batch": '[{"method":"GET","relative_url":"a?b=c,d"}]'},
        {"k y": "spaces and ~_.- kept, %&+= quoted", "empty": ""},
        {"unicode": "caf\u00e9 \u2603 \U0001f600", "ctrl": "\x00\x01\x7f\n"},
    ],
)
def test_form_bodies_are_what_urlencode_makes(form: dict[str, str]) -> None:
    assert graph.form_body(form) == urllib.parse.urlencode(form).encode("ascii")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"data": [{"name": "reach", "values": [{"value": 12}]}]}',
        b"NaN",
        b'{"a": Infinity}',
        b'"\\ud800"',
        b'{"a": 1, "a": 2}',
        b"[9223372036854775807, -9223372036854775808, 0.1, 1e300]",
        "[\u00e9]".encode(),
    ],
)
def test_json_answers_decode_as_the_standard_library_decodes_them(raw: bytes) -> None:
    def attempt(decode: Any) -> Any:
        try:
            value = decode(raw)
        except ValueError:  # both decoders' errors are ValueErrors
            return "refused"
        return repr(value)  # NaN != NaN: compare spellings

    assert attempt(graph.loads) == attempt(json.loads)


def test_timestamps_in_meta_spelling_and_iso() -> None:
    want = datetime(2024, 6, 17, 19, 39, 18, tzinfo=UTC)
    assert parse.timestamp("2024-06-17T19:39:18+0000") == want
    assert parse.timestamp("2024-06-17T21:39:18+0200") == want
    assert parse.timestamp("2024-06-17T19:39:18.000+0000") == want
    assert parse.timestamp("2024-06-17T19:39:18+00:00") == want
    assert parse.timestamp("2024-06-17T19:39:18") is None  # no offset: not a point in time
    assert parse.timestamp("2024-13-17T19:39:18+0000") is None
