"""Rate limits: Meta's usage headers parsed, and per-account and app-wide pauses derived from them.

Meta meters Instagram calls per (app, IG account) pair and reports the usage on every response in
``X-Business-Use-Case-Usage`` (nested, percentages, regain estimate in minutes) and the app's
platform usage in ``X-App-Usage`` (flat). Calling a throttled account extends the block, so the
limiter refuses calls until the pause it derived has passed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from collector import errors

BUC_HEADER = "X-Business-Use-Case-Usage"
#: calls with an unchanged reading before they say something about the cost of one call
PROBE_CALLS = 20
APP_HEADER = "X-App-Usage"


@dataclasses.dataclass(frozen=True, slots=True)
class BucEntry:
    """One pool of ``X-Business-Use-Case-Usage`` for one business object."""

    object_id: str
    type: str
    call_count: float
    total_cputime: float
    total_time: float
    regain_minutes: float

    @property
    def percent(self) -> float:
        return max(self.call_count, self.total_cputime, self.total_time)


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """What one response said about usage; ``None`` where a header was absent (unknown, not 0)."""

    buc: tuple[BucEntry, ...] = ()
    app_call_count: float | None = None
    app_total_time: float | None = None
    app_total_cputime: float | None = None

    @property
    def account_percent(self) -> float | None:
        """The highest of call_count, total_cputime, total_time across the Instagram pools."""
        values = [e.percent for e in self.buc if e.type in ("instagram", "")]
        return max(values) if values else None

    @property
    def regain_seconds(self) -> float:
        minutes = [e.regain_minutes for e in self.buc]
        return max(minutes) * 60.0 if minutes else 0.0

    @property
    def app_percent(self) -> float | None:
        values = [
            v
            for v in (self.app_call_count, self.app_total_time, self.app_total_cputime)
            if v is not None
        ]
        return max(values) if values else None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    result = float(value)
    return result if math.isfinite(result) and result >= 0 else 0.0


def parse_usage(headers: Mapping[str, str]) -> Usage:
    """Parse both usage headers; malformed headers count as absent, never as an error."""
    buc: list[BucEntry] = []
    raw = headers.get(BUC_HEADER)
    if raw:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for object_id, pools in doc.items():
                # Older captures show a single object instead of a list.
                items = pools if isinstance(pools, list) else [pools]
                for pool in items:
                    if not isinstance(pool, dict):
                        continue
                    buc.append(
                        BucEntry(
                            object_id=str(object_id),
                            type=str(pool.get("type") or ""),
                            call_count=_number(pool.get("call_count")),
                            total_cputime=_number(pool.get("total_cputime")),
                            total_time=_number(pool.get("total_time")),
                            regain_minutes=_number(pool.get("estimated_time_to_regain_access")),
                        )
                    )
    app: dict[str, float] = {}
    raw_app = headers.get(APP_HEADER)
    if raw_app:
        try:
            doc_app = json.loads(raw_app)
        except ValueError:
            doc_app = None
        if isinstance(doc_app, dict):
            for key in ("call_count", "total_time", "total_cputime"):
                if key in doc_app:
                    app[key] = _number(doc_app[key])
    return Usage(
        buc=tuple(buc),
        app_call_count=app.get("call_count"),
        app_total_time=app.get("total_time"),
        app_total_cputime=app.get("total_cputime"),
    )


@dataclasses.dataclass(slots=True)
class AccountState:
    percent: float | None = None
    #: how many percentage points one call costs, learned from successive headers
    percent_per_call: float | None = None
    #: calls made since the reading last changed (a large budget moves it rarely)
    calls_at_reading: int = 0
    paused_until: datetime | None = None
    reason: str | None = None
    throttle_events: int = 0


class Limiter:
    """Per-account and app-wide pauses, fed by usage headers and throttling errors.

    Two kinds of stop: a *hard* block (Meta gave a regain estimate, refused with 80002, or the
    app is throttled) refuses every call until it passes; a *soft* level (:meth:`level`: usage
    above ``high_water`` or ``pause_at``) is for the scheduler, which then starts only the
    urgent jobs (final story snapshots) so the remaining budget goes where it matters most.
    """

    def __init__(
        self,
        *,
        high_water: float = 80.0,
        pause_at: float = 95.0,
        floor: timedelta = timedelta(seconds=60),
        app_backoff_max: timedelta = timedelta(minutes=15),
    ) -> None:
        self.high_water = high_water
        self.pause_at = pause_at
        self.floor = floor
        self.app_backoff_max = app_backoff_max
        self.accounts: dict[str, AccountState] = {}
        self.app_percent: float | None = None
        self.app_paused_until: datetime | None = None
        self.app_reason: str | None = None
        self._app_strikes = 0

    def _state(self, account: str) -> AccountState:
        state = self.accounts.get(account)
        if state is None:
            state = self.accounts[account] = AccountState()
        return state

    def observe(self, account: str | None, usage: Usage, now: datetime, *, calls: int = 1) -> None:
        """Take in the usage headers of one response made for ``account`` (``calls``: how many
        metered calls it carried, e.g. the operations of a batch)."""
        if usage.app_percent is not None:
            self.app_percent = usage.app_percent
            if usage.app_percent >= self.pause_at:
                self._pause_app(now, f"app usage at {usage.app_percent:.0f}%")
            elif usage.app_percent < self.high_water:
                self._app_strikes = 0
        if account is None:
            return
        percent = usage.account_percent
        if percent is None:
            return
        state = self._state(account)
        state.calls_at_reading = state.calls_at_reading + calls if percent == state.percent else 0
        if state.percent is not None and percent > state.percent and calls > 0:
            cost = (percent - state.percent) / calls
            previous = state.percent_per_call
            # a moving estimate: the window also slides, so single readings are noisy
            state.percent_per_call = cost if previous is None else 0.7 * previous + 0.3 * cost
        state.percent = percent
        regain = usage.regain_seconds
        if regain > 0:
            self._pause_account(state, now + timedelta(seconds=regain), "regain estimate")

    def observe_error(self, account: str | None, exc: errors.GraphError, now: datetime) -> None:
        """Take in a throttling error (80002 pauses the account, 4/17/… the app)."""
        if isinstance(exc, errors.AccountThrottled) and account is not None:
            wait = max(exc.retry_after or 0.0, self.floor.total_seconds())
            self._pause_account(
                self._state(account), now + timedelta(seconds=wait), f"code {exc.code}"
            )
        elif isinstance(exc, errors.AppThrottled):
            self._pause_app(now, f"code {exc.code}")

    def _pause_account(self, state: AccountState, until: datetime, reason: str) -> None:
        if state.paused_until is None or until > state.paused_until:
            state.paused_until = until
            state.reason = reason
            state.throttle_events += 1

    def _pause_app(self, now: datetime, reason: str) -> None:
        self._app_strikes += 1
        wait = min(
            self.floor.total_seconds() * 2 ** (self._app_strikes - 1),
            self.app_backoff_max.total_seconds(),
        )
        until = now + timedelta(seconds=wait)
        if self.app_paused_until is None or until > self.app_paused_until:
            self.app_paused_until = until
            self.app_reason = reason

    def share_app_pause(self, until: datetime, reason: str | None) -> bool:
        """An app-level pause another collector process saw (cluster mode); True if it is
        later than the one known here."""
        if self.app_paused_until is not None and until <= self.app_paused_until:
            return False
        self.app_paused_until = until
        self.app_reason = reason
        return True

    def blocked_until(self, account: str | None, now: datetime) -> datetime | None:
        """When calls for ``account`` may go out again, or ``None`` if they may now."""
        until: datetime | None = None
        if self.app_paused_until is not None and self.app_paused_until > now:
            until = self.app_paused_until
        if account is not None:
            state = self.accounts.get(account)
            if (
                state is not None
                and state.paused_until is not None
                and state.paused_until > now
                and (until is None or state.paused_until > until)
            ):
                until = state.paused_until
        return until

    def headroom(self, account: str) -> int | None:
        """Calls ``account`` can still make before its high-water mark, if that is known yet."""
        state = self.accounts.get(account)
        if state is None or state.percent is None:
            return None
        if state.percent >= self.high_water:
            return 0
        cost = state.percent_per_call
        if not cost and state.calls_at_reading >= PROBE_CALLS:
            # N calls that left the reading unchanged cost under 1/N point each: an upper
            # bound, so the estimate errs on the side of smaller batches
            cost = 1.0 / state.calls_at_reading
        if not cost:
            return None
        return int((self.high_water - state.percent) / cost)

    def level(self, account: str) -> str:
        """``"ok"``, ``"high"`` (above high water) or ``"pause"`` (above the pause mark)."""
        state = self.accounts.get(account)
        percent = state.percent if state is not None else None
        if percent is None or percent < self.high_water:
            return "ok"
        return "pause" if percent >= self.pause_at else "high"

    def pacing_delay(self, account: str, base: timedelta) -> timedelta:
        """How much to stretch ``base`` spacing for an account above the high-water mark."""
        state = self.accounts.get(account)
        if state is None or state.percent is None or state.percent < self.high_water:
            return timedelta(0)
        span = max(self.pause_at - self.high_water, 1.0)
        factor = min((state.percent - self.high_water) / span, 1.0)
        return base * (1 + 4 * factor)
