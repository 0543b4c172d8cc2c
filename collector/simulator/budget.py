"""Rate limits: per-account Business Use Case budgets and the app-wide budget, on simulated time."""

from __future__ import annotations

import collections
import json
import math

from collector.simulator import world

_BUCKETS = 60


class RollingCounter:
    """Calls in a rolling window, kept in ``_BUCKETS`` time buckets so it stays cheap."""

    def __init__(self, capacity: int, window: float) -> None:
        self.capacity = capacity
        self.window = window
        self._width = window / _BUCKETS
        self._buckets: collections.deque[list[float]] = collections.deque()  # [index, count]
        self._used = 0.0

    def _evict(self, now: float) -> None:
        oldest_kept = math.floor(now / self._width) - _BUCKETS + 1
        while self._buckets and self._buckets[0][0] < oldest_kept:
            self._used -= self._buckets.popleft()[1]

    def used(self, now: float) -> int:
        self._evict(now)
        return int(self._used)

    def add(self, now: float, n: int = 1) -> None:
        self._evict(now)
        index = math.floor(now / self._width)
        if self._buckets and self._buckets[-1][0] == index:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([float(index), float(n)])
        self._used += n

    def blocked(self, now: float) -> bool:
        return self.used(now) >= self.capacity

    def percent(self, now: float) -> int:
        return min(100, math.floor(self.used(now) * 100 / self.capacity))

    def regain_seconds(self, now: float) -> float:
        """Seconds until a call would be accepted again (0 when not blocked)."""
        used = self.used(now)
        if used < self.capacity:
            return 0.0
        for index, count in self._buckets:
            used -= int(count)
            if used < self.capacity:
                return max(0.0, (index + _BUCKETS) * self._width - now)
        return self.window


class Budgets:
    """Every budget of a world, and the usage headers derived from them."""

    def __init__(self, config: world.WorldConfig) -> None:
        self.config = config
        self._accounts: dict[str, RollingCounter] = {}
        self.app = (
            RollingCounter(config.app_budget, config.app_window.total_seconds())
            if config.app_budget is not None
            else None
        )
        self._app_calls = 0

    def account(self, ig_user_id: str) -> RollingCounter:
        counter = self._accounts.get(ig_user_id)
        if counter is None:
            counter = RollingCounter(
                self.config.account_budget, self.config.account_window.total_seconds()
            )
            self._accounts[ig_user_id] = counter
        return counter

    def charge_app(self, now: float, n: int = 1) -> bool:
        """Count app calls; False (and nothing counted) when the app budget is exhausted."""
        self._app_calls += n
        if self.app is None:
            return True
        if self.app.blocked(now):
            return False
        self.app.add(now, n)
        return True

    def buc_header(self, acct: world.Account, now: float) -> str:
        """``X-Business-Use-Case-Usage`` for an account: business id and IG id, nested format."""
        counter = self.account(acct.ig_user_id)
        pct = counter.percent(now)
        regain = counter.regain_seconds(now)
        pool = [
            {
                "type": "instagram",
                "call_count": pct,
                # CPU/time shares track the call share so all three reach 100 together.
                "total_cputime": pct * 23 // 100,
                "total_time": pct * 31 // 100,
                "estimated_time_to_regain_access": math.ceil(regain / 60) if regain else 0,
            }
        ]
        return json.dumps({acct.business_id: pool, acct.ig_user_id: pool}, separators=(",", ":"))

    def app_header(self, now: float) -> str:
        """``X-App-Usage``: percentages of the app's rolling allowance."""
        pct = self.app.percent(now) if self.app is not None else 0
        return json.dumps(
            {"call_count": pct, "total_time": pct * 9 // 10, "total_cputime": pct * 8 // 10},
            separators=(",", ":"),
        )
