"""The simulated world: deterministic generation, monotonic counters, story timeline."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from collector import clock
from collector.simulator import world

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def make(**kw: object) -> tuple[world.World, clock.FakeClock]:
    fake = clock.FakeClock(START)
    return world.World(world.WorldConfig(**kw), fake), fake  # type: ignore[arg-type]


def test_same_seed_same_world_and_different_seed_differs() -> None:
    a, _ = make(seed=7, accounts=4)
    b, _ = make(seed=7, accounts=4)
    c, _ = make(seed=8, accounts=4)
    assert [x.ig_user_id for x in a.accounts] == [x.ig_user_id for x in b.accounts]
    assert [x.token for x in a.accounts] == [x.token for x in b.accounts]
    ig = a.accounts[0].ig_user_id
    assert [m.id for m in a.media_of(ig)] == [m.id for m in b.media_of(ig)]
    assert [x.ig_user_id for x in a.accounts] != [x.ig_user_id for x in c.accounts]


def test_identifiers_look_real_and_are_unique() -> None:
    w, _ = make(accounts=20, media_per_account=30)
    igs = [a.ig_user_id for a in w.accounts]
    assert all(len(i) == 17 and i.startswith("1784") and i.isdigit() for i in igs)
    assert len(set(igs)) == 20
    tokens = {a.token for a in w.accounts}
    assert len(tokens) == 20
    assert all(t.startswith("EAAsim") and len(t) > 40 for t in tokens)
    assert [a.username for a in w.accounts][:2] == ["sim_acct_1", "sim_acct_2"]
    ids = [m.id for a in w.accounts for m in w.media_of(a.ig_user_id)]
    assert len(ids) == len(set(ids)) == 600
    assert all(i.isdigit() and len(i) in (17, 18) for i in ids)


def test_media_mix_and_two_year_spread_newest_first() -> None:
    w, _ = make(accounts=3, media_per_account=200)
    media = [m for a in w.accounts for m in w.media_of(a.ig_user_id)]
    kinds = {(m.media_type, m.product_type) for m in media}
    assert kinds == {
        ("IMAGE", "FEED"),
        ("CAROUSEL_ALBUM", "FEED"),
        ("VIDEO", "FEED"),
        ("VIDEO", "REELS"),
    }
    oldest = min(m.posted_at for m in media)
    assert START - timedelta(days=731) < oldest < START - timedelta(days=300)
    listed = w.media_of(w.accounts[0].ig_user_id)
    assert [m.posted for m in listed] == sorted((m.posted for m in listed), reverse=True)


def test_low_follower_fraction() -> None:
    w, _ = make(accounts=40, low_follower_fraction=0.5)
    low = [a for a in w.accounts if w.followers_count(a.ig_user_id, START) < 100]
    assert 10 <= len(low) <= 30
    none, _ = make(accounts=10, low_follower_fraction=0.0)
    assert all(none.followers_count(a.ig_user_id, START) >= 100 for a in none.accounts)


def test_counters_never_decrease_and_move_within_an_hour() -> None:
    w, _ = make(accounts=3, low_follower_fraction=0.0)
    ig = w.accounts[0].ig_user_id
    newest = w.media_of(ig)[0]
    values = []
    for hour in range(0, 72):
        at = START + timedelta(hours=hour)
        values.append(
            (
                w.followers_count(ig, at),
                w.media_metric(newest.id, "views", at),
                w.media_metric(newest.id, "reach", at),
            )
        )
    for earlier, later in itertools.pairwise(values):
        assert all(b >= a for a, b in zip(earlier, later, strict=True))  # type: ignore[operator]
    assert values[1][0] > values[0][0]
    assert values[1][1] != values[0][1]


def test_initial_stories_then_new_ones_appear_and_expire() -> None:
    w, fake = make(accounts=2, stories_per_account=3, story_lifetime=timedelta(minutes=10))
    ig = w.accounts[0].ig_user_id
    first = w.stories_of(ig)
    assert len(first) == 3
    assert all(s.product_type == "STORY" for s in first)
    assert not {s.id for s in first} & {m.id for m in w.media_of(ig)}
    fake.advance(600)
    later = w.stories_of(ig)
    assert not {s.id for s in first} & {s.id for s in later}
    assert 1 <= len(later) <= 6
    # The timeline is a function of the seed and the slot, not of who asked when.
    w2, fake2 = make(accounts=2, stories_per_account=3, story_lifetime=timedelta(minutes=10))
    fake2.advance(600)
    assert [s.id for s in w2.stories_of(ig)] == [s.id for s in later]
    listed = w.stories_between(START - timedelta(minutes=10), START + timedelta(minutes=10))
    assert {s.id for s in first} <= {s.id for s in listed}
    assert all(s.expires_at == s.posted_at + timedelta(minutes=10) for s in listed)


def test_story_values_freeze_at_expiry() -> None:
    w, _ = make(accounts=1, quiet_story_fraction=0.0)
    story = w.stories_of(w.accounts[0].ig_user_id)[0]
    assert story.expires_at is not None
    at_expiry = w.media_metric(story.id, "reach", story.expires_at)
    assert w.media_metric(story.id, "reach", story.expires_at + timedelta(days=3)) == at_expiry


def test_breakdowns_add_up() -> None:
    w, _ = make(accounts=2, low_follower_fraction=0.0, quiet_story_fraction=0.0)
    ig = w.accounts[0].ig_user_id
    story = w.stories_of(ig)[0]
    nav = w.media_breakdown(story.id, "navigation", START)
    assert sum(nav.values()) == w.media_metric(story.id, "navigation", START)
    since = START.timestamp() - 86400 * 3
    parts = w.account_breakdown(ig, "reach", "media_product_type", since, START.timestamp(), START)
    assert sum(parts.values()) == w.account_total(ig, "reach", since, START.timestamp(), START)
    rows = w.demographics(ig, "follower_demographics", ["age", "gender"], "this_month", START)
    assert len(rows) <= 45
    assert all(len(k) == 2 for k in rows)


def test_conversion_fraction_marks_oldest_media() -> None:
    w, _ = make(accounts=20, converted_fraction=1.0)
    for acct in w.accounts:
        assert acct.conversion_at is not None
        media = w.media_of(acct.ig_user_id)
        before = [m for m in media if m.posted_at < acct.conversion_at]
        assert before
        assert before == media[len(media) - len(before) :]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("accounts", 0, "accounts: must be between 1"),
        ("accounts", 10**6, "accounts: must be between 1"),
        ("media_per_account", -1, "media_per_account"),
        ("low_follower_fraction", 1.5, "low_follower_fraction"),
        ("story_lifetime", timedelta(0), "story_lifetime"),
    ],
)
def test_config_rejects_bad_sizes(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        world.WorldConfig(**{field: value})  # type: ignore[arg-type]


def test_graph_time_and_pacific_days() -> None:
    assert (
        world.graph_time(datetime(2024, 6, 17, 19, 39, 18, tzinfo=UTC))
        == "2024-06-17T19:39:18+0000"
    )
    summer = world.pacific_day_bounds(datetime(2026, 6, 1).date())
    winter = world.pacific_day_bounds(datetime(2026, 1, 10).date())
    assert world.graph_time(summer[1]) == "2026-06-02T07:00:00+0000"
    assert world.graph_time(winter[1]) == "2026-01-11T08:00:00+0000"
