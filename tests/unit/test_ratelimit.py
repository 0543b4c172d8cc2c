"""Usage headers parsed (both shapes) and pauses derived from them, on a fake clock."""

from __future__ import annotations

import json
from datetime import timedelta

from collector import clock, errors, ratelimit

# reference §14 J, verbatim
BUC = (
    '{"645699291956344":[{"type":"instagram","call_count":97,"total_cputime":23,"total_time":31,'
    '"estimated_time_to_regain_access":0}],"17841462785487205":[{"type":"instagram","call_count":97,'
    '"total_cputime":23,"total_time":31,"estimated_time_to_regain_access":0}]}'
)
APP = '{"call_count":28,"total_time":25,"total_cputime":25}'


def test_parse_nested_buc_and_flat_app_usage() -> None:
    usage = ratelimit.parse_usage({ratelimit.BUC_HEADER: BUC, ratelimit.APP_HEADER: APP})
    assert len(usage.buc) == 2
    assert usage.account_percent == 97
    assert usage.regain_seconds == 0
    assert usage.app_percent == 28


def test_highest_of_the_three_counters_wins() -> None:
    header = json.dumps(
        {"1": [{"type": "instagram", "call_count": 5, "total_cputime": 61, "total_time": 40}]}
    )
    assert ratelimit.parse_usage({ratelimit.BUC_HEADER: header}).account_percent == 61


def test_absent_or_malformed_headers_are_unknown_not_zero() -> None:
    assert ratelimit.parse_usage({}).account_percent is None
    assert ratelimit.parse_usage({}).app_percent is None
    bad = ratelimit.parse_usage({ratelimit.BUC_HEADER: "{nope", ratelimit.APP_HEADER: "[1]"})
    assert bad.account_percent is None
    assert bad.app_percent is None
    weird = ratelimit.parse_usage(
        {ratelimit.BUC_HEADER: '{"1": [{"type": "instagram", "call_count": "x"}, 7]}'}
    )
    assert weird.account_percent == 0


def test_regain_estimate_pauses_only_that_account() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter()
    header = json.dumps(
        {"1": [{"type": "instagram", "call_count": 100, "estimated_time_to_regain_access": 19}]}
    )
    limiter.observe("1", ratelimit.parse_usage({ratelimit.BUC_HEADER: header}), fake.now())
    assert limiter.blocked_until("1", fake.now()) == fake.now() + timedelta(minutes=19)
    assert limiter.blocked_until("2", fake.now()) is None
    fake.advance(19 * 60)
    assert limiter.blocked_until("1", fake.now()) is None


def test_80002_pauses_the_account_for_at_least_the_floor() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(floor=timedelta(seconds=60))
    limiter.observe_error("1", errors.AccountThrottled("x", code=80002, retry_after=0), fake.now())
    assert limiter.blocked_until("1", fake.now()) == fake.now() + timedelta(seconds=60)
    assert limiter.accounts["1"].throttle_events == 1


def test_app_throttle_backs_off_exponentially_and_is_capped() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(floor=timedelta(seconds=60), app_backoff_max=timedelta(minutes=3))
    waits = []
    for _ in range(4):
        limiter.observe_error(None, errors.AppThrottled("x", code=4), fake.now())
        until = limiter.blocked_until("any", fake.now())
        assert until is not None
        waits.append((until - fake.now()).total_seconds())
        fake.advance(waits[-1])
    assert waits == [60, 120, 180, 180]


def test_high_water_stretches_pacing() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(high_water=80, pause_at=95)
    header = json.dumps({"1": [{"type": "instagram", "call_count": 90}]})
    limiter.observe("1", ratelimit.parse_usage({ratelimit.BUC_HEADER: header}), fake.now())
    assert limiter.blocked_until("1", fake.now()) is None
    assert limiter.level("1") == "high"
    assert limiter.level("2") == "ok"
    assert limiter.pacing_delay("1", timedelta(seconds=10)) > timedelta(0)
    assert limiter.pacing_delay("2", timedelta(seconds=10)) == timedelta(0)
    header = json.dumps({"1": [{"type": "instagram", "call_count": 96}]})
    limiter.observe("1", ratelimit.parse_usage({ratelimit.BUC_HEADER: header}), fake.now())
    # a soft level: the scheduler decides; only a regain estimate or 80002 refuses calls
    assert limiter.level("1") == "pause"
    assert limiter.blocked_until("1", fake.now()) is None


def test_headroom_is_learned_from_successive_headers() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(high_water=80, pause_at=95)

    def see(percent: float, calls: int = 1) -> None:
        header = json.dumps({"1": [{"type": "instagram", "call_count": percent}]})
        limiter.observe(
            "1", ratelimit.parse_usage({ratelimit.BUC_HEADER: header}), fake.now(), calls=calls
        )

    assert limiter.headroom("1") is None  # nothing known yet
    see(10)
    assert limiter.headroom("1") is None  # one reading gives no cost per call
    see(20, calls=5)  # a batch of 5 cost 10 points: 2 per call
    assert limiter.headroom("1") == 30
    see(80)
    assert limiter.headroom("1") == 0


def test_headroom_of_a_large_budget_whose_reading_does_not_move() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(high_water=80)
    header = json.dumps({"1": [{"type": "instagram", "call_count": 0}]})
    usage = ratelimit.parse_usage({ratelimit.BUC_HEADER: header})
    limiter.observe("1", usage, fake.now())
    assert limiter.headroom("1") is None
    for _ in range(4):
        limiter.observe("1", usage, fake.now(), calls=5)
    # 20 calls left 0 % at 0 %: each costs under 1/20 point, so 80 points allow 1,600 calls
    assert limiter.headroom("1") == 1600
