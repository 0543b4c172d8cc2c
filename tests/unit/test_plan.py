"""The plan built from the settings, and the story rules every part reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector import config, plan, stories

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def test_tiers_are_cut_at_the_max_age() -> None:
    tiers = ((2 * DAY, timedelta(hours=1)), (14 * DAY, 6 * timedelta(hours=1)), (730 * DAY, DAY))
    assert plan.cut_tiers(tiers, 30 * DAY) == (
        (2 * DAY, timedelta(hours=1)),
        (14 * DAY, timedelta(hours=6)),
        (30 * DAY, DAY),
    )
    assert plan.cut_tiers(tiers, DAY) == ((DAY, timedelta(hours=1)),)
    assert plan.cut_tiers(tiers, 1000 * DAY) == tiers


def test_plan_from_settings_carries_every_knob(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        """
[database]
dsn = "postgresql://collector@localhost/collector"
[graph]
page_size = 25
[limits]
max_in_flight = 3
per_account_in_flight = 2
[schedule]
story_final_lead = "10m"
media_insights_max_age = "45d"
story_poll_every = "1h"
demographics_timeframe = "this_week"
[[accounts]]
name = "a"
ig_user_id = "17841400000000001"
token_env = "T"
"""
    )
    settings = config.load(path, environ={"T": "x" * 40})
    built = plan.Plan.from_settings(settings)
    assert built.page_size == 25
    assert built.max_in_flight == 3
    assert built.per_account_in_flight == 2
    assert built.story_final_lead == timedelta(minutes=10)
    assert built.story_poll == timedelta(hours=1)
    assert built.demographics_timeframe == "this_week"
    assert built.media_max_age == 45 * DAY
    assert built.media_tiers[-1][0] == 45 * DAY


def test_story_windows() -> None:
    expires = T0 + DAY
    lead = timedelta(minutes=25)
    assert stories.final_start(expires, lead) == expires - lead
    assert not stories.in_final_window(expires - lead - timedelta(seconds=1), expires, lead)
    assert stories.in_final_window(expires - lead, expires, lead)
    assert stories.in_final_window(expires - timedelta(seconds=1), expires, lead)
    assert not stories.in_final_window(expires, expires, lead)
    assert stories.past_final_start(expires + DAY, expires, lead)
    assert stories.expired(expires, expires)
    assert not stories.expired(expires - timedelta(microseconds=1), expires)
    # a feed post has no expiry: none of the story rules apply
    assert not stories.in_final_window(T0, None, lead)
    assert not stories.past_final_start(T0, None, lead)
    assert not stories.expired(T0, None)
