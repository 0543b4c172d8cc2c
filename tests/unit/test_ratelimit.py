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


def test_one_app_throttling_event_is_one_step_however_many_answers_report_it() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(floor=timedelta(seconds=60), app_backoff_max=timedelta(minutes=15))
    # 44 operations of one batch answer (#4), as do two calls that were in flight
    for _ in range(44):
        limiter.observe_error("1", errors.AppThrottled("x", code=4), fake.now())
    fake.advance(0.5)
    limiter.observe_error("2", errors.AppThrottled("x", code=4), fake.now())
    assert limiter.app_events == 1
    assert limiter.blocked_until("3", fake.now()) == fake.now() + timedelta(seconds=59.5)


def test_after_an_app_block_one_probe_goes_first() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(floor=timedelta(seconds=60), probe_timeout=timedelta(seconds=30))
    limiter.observe_error(None, errors.AppThrottled("x", code=4), fake.now())
    assert limiter.admit("1", fake.now()) == (fake.now() + timedelta(seconds=60), True)
    fake.advance(60)
    assert limiter.admit("1", fake.now()) is None  # the probe
    held = limiter.admit("2", fake.now())  # the others wait for its answer
    assert held == (fake.now() + timedelta(seconds=30), True)
    # the probe is throttled again: the next step of the backoff
    limiter.observe_error("1", errors.AppThrottled("x", code=4), fake.now())
    assert limiter.app_events == 2
    assert limiter.blocked_until("2", fake.now()) == fake.now() + timedelta(seconds=120)
    fake.advance(120)
    assert limiter.admit("1", fake.now()) is None
    limiter.observe_success(fake.now())  # the probe went through: the backoff is over
    assert limiter.app_events == 0
    assert limiter.admit("2", fake.now()) is None
    assert limiter.admit("3", fake.now()) is None
    # the next event starts from the floor again
    limiter.observe_error(None, errors.AppThrottled("x", code=4), fake.now())
    assert limiter.blocked_until("2", fake.now()) == fake.now() + timedelta(seconds=60)


def test_a_probe_without_an_answer_hands_over_to_the_next_call() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(floor=timedelta(seconds=60))
    limiter.observe_error(None, errors.AppThrottled("x", code=4), fake.now())
    fake.advance(60)
    assert limiter.admit("1", fake.now()) is None
    limiter.release_probe()  # the probe's connection was reset
    assert limiter.admit("2", fake.now()) is None


def test_app_block_follows_the_regain_estimate() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(floor=timedelta(seconds=60))
    limiter.observe_error(None, errors.AppThrottled("x", code=4, retry_after=600), fake.now())
    assert limiter.blocked_until(None, fake.now()) == fake.now() + timedelta(seconds=600)
    # another answer of the same event with a longer estimate: followed, still one step
    limiter.observe_error(None, errors.AppThrottled("x", code=4, retry_after=900), fake.now())
    assert limiter.blocked_until(None, fake.now()) == fake.now() + timedelta(seconds=900)
    assert limiter.app_events == 1
    # under the floor: the floor
    fresh = ratelimit.Limiter(floor=timedelta(seconds=60))
    fresh.observe_error(None, errors.AppThrottled("x", code=4, retry_after=5), fake.now())
    assert fresh.blocked_until(None, fake.now()) == fake.now() + timedelta(seconds=60)


def test_one_account_throttling_event_counts_once() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(floor=timedelta(seconds=60))
    for i in range(30):  # every operation of a batch after the budget ran out
        fake.advance(0.01 * i)
        limiter.observe_error("1", errors.AccountThrottled("x", code=80002), fake.now())
    assert limiter.accounts["1"].throttle_events == 1
    fake.advance(120)
    limiter.observe_error("1", errors.AccountThrottled("x", code=80002), fake.now())
    assert limiter.accounts["1"].throttle_events == 2


def test_a_usage_reading_alone_never_blocks_and_never_escalates() -> None:
    fake = clock.FakeClock()
    limiter = ratelimit.Limiter(high_water=80, pause_at=95, floor=timedelta(seconds=60))
    reading = ratelimit.parse_usage({ratelimit.APP_HEADER: '{"call_count": 99}'})
    for _ in range(5):  # debug_token answers, one after the other
        limiter.observe(None, reading, fake.now())
    assert limiter.blocked_until("1", fake.now()) is None
    assert limiter.admit("1", fake.now()) is None
    assert limiter.app_events == 0
    # every account is held to story work (finals and polls) while the reading is fresh
    assert limiter.level("1", fake.now()) == "high"
    assert limiter.level("2", fake.now()) == "high"
    fake.advance(60)
    assert limiter.level("1", fake.now()) == "ok"  # the next reading decides
    # an account's own reading at the pause mark keeps final story snapshots going
    own = ratelimit.parse_usage(
        {ratelimit.BUC_HEADER: json.dumps({"1": [{"type": "instagram", "call_count": 97}]})}
    )
    limiter.observe("1", own, fake.now())
    assert limiter.level("1", fake.now()) == "pause"
    assert limiter.blocked_until("1", fake.now()) is None
