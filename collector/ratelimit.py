"""Rate limits: Meta's usage headers parsed, and per-account and app-wide pauses derived from them.

Meta meters Instagram calls per (app, IG account) pair and reports the usage on every response in
``X-Business-Use-Case-Usage`` (nested, percentages, regain estimate in minutes) and the app's
platform usage in ``X-App-Usage`` (flat). Calling a throttled account extends the block, so the
limiter refuses calls until the pause it derived has passed.
"""

from __future__ import annotations

import dataclasses
import functools
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
    return _parse_usage(headers.get(BUC_HEADER), headers.get(APP_HEADER))


@functools.lru_cache(maxsize=1024)
def _parse_usage(raw: str | None, raw_app: str | None) -> Usage:
    # cached: the answers of one batch, and of one account between two readings, repeat the
    # same headers, and Usage is immutable
    buc: list[BucEntry] = []
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

    Two kinds of stop: a *hard* block refuses every call until it passes; a *soft* level
    (:meth:`level`: usage above ``high_water`` or ``pause_at``) is for the scheduler, which then
    starts only the urgent jobs (final story snapshots) so the remaining budget goes where it
    matters most. The rules:

    - A hard block comes only from Meta saying so: a regain estimate or ``80002`` blocks that
      account (for the estimate, at least ``floor``); an app throttling code (4, 17, 32, 341,
      368, 613) blocks the app for the regain estimate if one came, else for the floor doubled
      at each throttling event in a row, capped at ``app_backoff_max``.
    - One throttling event is one step: answers reporting it while the block it started is
      on (the other operations of the same batch, calls that were in flight) change nothing.
    - After an app block one call goes out alone, a probe: its success ends the backoff (the
      next event starts again from the floor); its throttling error is the next step.
    - A usage reading alone never blocks. An account's own ``X-Business-Use-Case-Usage`` at
      ``high_water`` holds it to story work, at ``pause_at`` to final story snapshots; an
      ``X-App-Usage`` reading at ``high_water`` or above holds every account to story work
      (finals and polls) for ``floor`` after it was read, then the next reading decides. A
      reading never starts nor lengthens the app backoff.
    """

    #: the longest a regain estimate is followed (a hostile header cannot stop us for days)
    MAX_REGAIN = timedelta(hours=24)

    def __init__(
        self,
        *,
        high_water: float = 80.0,
        pause_at: float = 95.0,
        floor: timedelta = timedelta(seconds=60),
        app_backoff_max: timedelta = timedelta(minutes=15),
        probe_timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self.high_water = high_water
        self.pause_at = pause_at
        self.floor = floor
        self.app_backoff_max = app_backoff_max
        #: how long the other calls wait for the probe's answer at most
        self.probe_timeout = probe_timeout
        self.accounts: dict[str, AccountState] = {}
        self.app_percent: float | None = None
        self.app_percent_at: datetime | None = None
        self.app_paused_until: datetime | None = None
        self.app_reason: str | None = None
        #: app throttling events in a row (reset by a success after the block)
        self.app_events = 0
        self._probe_since: datetime | None = None

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
            self.app_percent_at = now
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
            self._pause_account(state, now, regain, "regain estimate")

    def observe_error(self, account: str | None, exc: errors.GraphError, now: datetime) -> None:
        """Take in a throttling error (80002 pauses the account, 4/17/… the app)."""
        if isinstance(exc, errors.AccountThrottled) and account is not None:
            self._pause_account(
                self._state(account), now, exc.retry_after or 0.0, f"code {exc.code}"
            )
        elif isinstance(exc, errors.AppThrottled):
            self._pause_app(now, exc.retry_after or 0.0, f"code {exc.code}")

    def observe_success(self, now: datetime) -> None:
        """A call succeeded: once an app block is over, that ends the backoff."""
        if self.app_paused_until is not None and self.app_paused_until > now:
            return  # an answer to a call sent before the block began
        self.app_events = 0
        self._probe_since = None

    def release_probe(self) -> None:
        """The probe got no answer worth a verdict (a network error): the next call probes."""
        self._probe_since = None

    def _regain(self, seconds: float) -> float:
        return min(max(seconds, self.floor.total_seconds()), self.MAX_REGAIN.total_seconds())

    def _pause_account(
        self, state: AccountState, now: datetime, seconds: float, reason: str
    ) -> None:
        until = now + timedelta(seconds=self._regain(seconds))
        if state.paused_until is None or state.paused_until <= now:
            state.throttle_events += 1  # a new event; reports during the block are the same one
        if state.paused_until is None or until > state.paused_until:
            state.paused_until = until
            state.reason = reason

    def _pause_app(self, now: datetime, regain: float, reason: str) -> None:
        if self.app_paused_until is not None and self.app_paused_until > now:
            # the same event, told by another answer of the batch or another call in flight;
            # a regain estimate may still say the block is longer
            if regain > 0:
                until = now + timedelta(seconds=self._regain(regain))
                self.app_paused_until = max(self.app_paused_until, until)
            return
        self.app_events += 1
        self._probe_since = None
        backoff = min(
            self.floor.total_seconds() * 2 ** min(self.app_events - 1, 30),
            self.app_backoff_max.total_seconds(),
        )
        wait = self._regain(regain) if regain > 0 else backoff
        self.app_paused_until = now + timedelta(seconds=wait)
        self.app_reason = reason

    def _app_hold(self, now: datetime) -> datetime | None:
        """When the app may call again: the block, then the probe's answer."""
        if self.app_paused_until is not None and self.app_paused_until > now:
            return self.app_paused_until
        if self.app_events and self._probe_since is not None:
            probe_end = self._probe_since + self.probe_timeout
            if probe_end > now:
                return probe_end
        return None

    def admit(self, account: str | None, now: datetime) -> tuple[datetime, bool] | None:
        """Whether a call for ``account`` may go out now: None if it may (after an app block
        the first one becomes the probe), else until when it may not and whether the app's
        block is the reason."""
        app = self._app_hold(now)
        own = self._account_hold(account, now)
        if own is not None and (app is None or own > app):
            return own, False
        if app is not None:
            return app, True
        if self.app_events and self._probe_since is None:
            self._probe_since = now
        return None

    def _account_hold(self, account: str | None, now: datetime) -> datetime | None:
        if account is None:
            return None
        state = self.accounts.get(account)
        if state is not None and state.paused_until is not None and state.paused_until > now:
            return state.paused_until
        return None

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
        holds = [h for h in (self._app_hold(now), self._account_hold(account, now)) if h]
        return max(holds) if holds else None

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

    def level(self, account: str, now: datetime | None = None) -> str:
        """``"ok"``, ``"high"`` (above high water) or ``"pause"`` (above the pause mark).

        The account's own reading decides; with ``now``, an ``X-App-Usage`` reading at the
        high-water mark seen within ``floor`` makes it at least ``"high"`` (never ``"pause"``:
        the app's reading alone holds no account to final snapshots only).
        """
        state = self.accounts.get(account)
        percent = state.percent if state is not None else None
        if percent is not None and percent >= self.pause_at:
            return "pause"
        if percent is not None and percent >= self.high_water:
            return "high"
        if (
            now is not None
            and self.app_percent is not None
            and self.app_percent >= self.high_water
            and self.app_percent_at is not None
            and now - self.app_percent_at < self.floor
        ):
            return "high"
        return "ok"

    def pacing_delay(self, account: str, base: timedelta) -> timedelta:
        """How much to stretch ``base`` spacing for an account above the high-water mark."""
        state = self.accounts.get(account)
        if state is None or state.percent is None or state.percent < self.high_water:
            return timedelta(0)
        span = max(self.pause_at - self.high_water, 1.0)
        factor = min((state.percent - self.high_water) / span, 1.0)
        return base * (1 + 4 * factor)
