"""What the simulator did: a request log, counters, and every value it served (ground truth)."""

from __future__ import annotations

import collections
import dataclasses
from datetime import datetime


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API call (a batch counts once for itself and once per operation inside it)."""

    at: datetime
    method: str
    path: str
    kind: str
    account: str | None
    status: int
    error: str | None
    fault: str | None
    in_batch: bool
    #: "facebook" (graph.facebook.com) or "instagram" (graph.instagram.com)
    host: str = "facebook"
    #: the query parameters, credentials left out (``access_token``, ``appsecret_proof``)
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)


@dataclasses.dataclass(frozen=True, slots=True)
class ServedValue:
    """A value that left the simulator in a successful response."""

    object_id: str
    account: str
    metric: str
    value: int | float
    served_at: datetime
    period: str | None = None
    breakdown: str | None = None
    dimension: str | None = None
    end_time: datetime | None = None
    #: "insights", "field" or "webhook"
    source: str = "insights"


class Stats:
    """Request log, counters and the served-values log."""

    def enter(self, account: str | None) -> None:
        """A request for ``account`` (by its token) arrived; it is in flight until ``leave``."""
        if account is None:
            return
        now = self.in_flight[account] = self.in_flight[account] + 1
        self.max_in_flight[account] = max(self.max_in_flight[account], now)

    def leave(self, account: str | None) -> None:
        if account is not None:
            self.in_flight[account] -= 1

    def __init__(self, limit: int | None = None) -> None:
        self.requests: collections.deque[RequestRecord] = collections.deque(maxlen=limit)
        self.served: collections.deque[ServedValue] = collections.deque(maxlen=limit)
        self.calls_by_kind: collections.Counter[str] = collections.Counter()
        self.calls_by_account: collections.Counter[str] = collections.Counter()
        #: requests in flight per account now, and the most there ever were at once
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.max_in_flight: collections.Counter[str] = collections.Counter()
        self.errors_by_class: collections.Counter[str] = collections.Counter()
        self.total_requests = 0

    def record(self, rec: RequestRecord) -> None:
        self.total_requests += 1
        self.requests.append(rec)
        self.calls_by_kind[rec.kind] += 1
        if rec.account is not None:
            self.calls_by_account[rec.account] += 1
        if rec.fault is not None:
            self.errors_by_class[f"fault:{rec.fault}"] += 1
        elif rec.error is not None:
            self.errors_by_class[rec.error] += 1

    def serve(self, values: list[ServedValue]) -> None:
        self.served.extend(values)

    def served_for(
        self, object_id: str | None = None, metric: str | None = None
    ) -> list[ServedValue]:
        """Served values, optionally only one object's and/or one metric's."""
        return [
            v
            for v in self.served
            if (object_id is None or v.object_id == object_id)
            and (metric is None or v.metric == metric)
        ]

    def reset(self) -> None:
        self.requests.clear()
        self.served.clear()
        self.calls_by_kind.clear()
        self.calls_by_account.clear()
        self.errors_by_class.clear()
        self.max_in_flight.clear()
        self.total_requests = 0
