"""Which metrics to ask for, per object kind, and what the API taught us about them.

The default sets follow Meta's tables for the current API versions (v22+: ``impressions``,
``plays`` and ``video_views`` are gone, ``views`` replaces them). Meta changes these every few
versions and some media reject metrics their kind officially supports, so the sets are only a
starting point: a rejected metric is dropped for that kind and version, the verdict is stored,
and later passes do not ask again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from collector import models

Kind = models.ObjectKind

_FEED_COMMON = (
    "reach",
    "views",
    "likes",
    "comments",
    "saved",
    "shares",
    "total_interactions",
    "follows",
    "profile_visits",
    "reposts",
)

#: plain (no breakdown) metrics per media kind
MEDIA_METRICS: Mapping[Kind, tuple[str, ...]] = {
    Kind.FEED_IMAGE: _FEED_COMMON,
    Kind.FEED_VIDEO: _FEED_COMMON,
    Kind.FEED_CAROUSEL: _FEED_COMMON,
    Kind.REELS: (
        "reach",
        "views",
        "likes",
        "comments",
        "saved",
        "shares",
        "total_interactions",
        "reposts",
        "ig_reels_avg_watch_time",
        "ig_reels_video_view_total_time",
        "reels_skip_rate",
    ),
    Kind.STORY: (
        "reach",
        "views",
        "replies",
        "shares",
        "total_interactions",
        "follows",
        "profile_visits",
        "reposts",
    ),
}

#: metrics asked for with a breakdown, in a call of their own: kind -> [(breakdown, metrics)]
MEDIA_BREAKDOWNS: Mapping[Kind, tuple[tuple[str, tuple[str, ...]], ...]] = {
    Kind.STORY: (("story_navigation_action_type", ("navigation",)),),
}


@dataclasses.dataclass(frozen=True, slots=True)
class AccountRequest:
    """One shape of ``/{ig-user-id}/insights`` call.

    ``window`` is how the collector slices time: ``day`` (one call per Pacific day, a
    ``total_value`` per day), ``range`` (one call per ≤ 30-day window, a daily time series) or
    ``none`` (demographics: no since/until, a ``timeframe`` instead).
    """

    name: str
    metrics: tuple[str, ...]
    period: str
    metric_type: str | None
    breakdown: str | None
    window: str


ACCOUNT_REQUESTS: tuple[AccountRequest, ...] = (
    AccountRequest(
        "totals",
        (
            "reach",
            "views",
            "accounts_engaged",
            "total_interactions",
            "likes",
            "comments",
            "shares",
            "saves",
            "replies",
            "reposts",
            "profile_views",
            "website_clicks",
        ),
        "day",
        "total_value",
        None,
        "day",
    ),
    AccountRequest(
        "follows", ("follows_and_unfollows",), "day", "total_value", "follow_type", "day"
    ),
    AccountRequest(
        "profile_links",
        ("profile_links_taps",),
        "day",
        "total_value",
        "contact_button_type",
        "day",
    ),
    AccountRequest("series", ("follower_count",), "day", "time_series", None, "range"),
)

DEMOGRAPHIC_METRICS = ("follower_demographics", "engaged_audience_demographics")

#: metrics only the Instagram API with Facebook Login serves (docs/graph-api-notes.md §2): never
#: asked of an Instagram Login account, even through a metric-set override
FACEBOOK_LOGIN_ONLY = frozenset({"total_likes", "total_comments", "total_views", "link_clicks"})


def version_key(api_version: str, login: str) -> str:
    """The ``metric_support.api_version`` an account's verdicts go under: the API version,
    suffixed for Instagram Login, whose host answers for itself."""
    return api_version if login == "facebook" else f"{api_version}+{login}"


DEMOGRAPHIC_BREAKDOWNS = ("age", "city", "country", "gender")


def demographic_requests() -> tuple[AccountRequest, ...]:
    """One call per breakdown: metrics that share a breakdown travel together."""
    return tuple(
        AccountRequest(
            f"demographics_{b}", DEMOGRAPHIC_METRICS, "lifetime", "total_value", b, "none"
        )
        for b in DEMOGRAPHIC_BREAKDOWNS
    )


class Catalog:
    """The metric sets in force for one API version, minus what the API rejected."""

    def __init__(
        self,
        api_version: str,
        verdicts: Iterable[models.MetricVerdict] = (),
        overrides: Mapping[str, Sequence[str]] | None = None,
        *,
        login: str = "facebook",
    ) -> None:
        #: the key verdicts are stored under: Instagram Login learns apart (its own host)
        self.api_version = version_key(api_version, login)
        self.login = login
        self._unavailable = FACEBOOK_LOGIN_ONLY if login == "instagram" else frozenset()
        self._rejected: dict[Kind, set[str]] = {}
        #: metrics the API answered for, recorded once per process (shared with clones)
        self._accepted: dict[Kind, set[str]] = {}
        self._overrides = {Kind(k): tuple(v) for k, v in (overrides or {}).items()}
        for verdict in verdicts:
            if verdict.api_version == self.api_version and not verdict.supported:
                self._rejected.setdefault(verdict.object_kind, set()).add(verdict.metric)

    def with_overrides(self, overrides: Mapping[str, Sequence[str]] | None) -> Catalog:
        """A view of this catalog with one account's metric-set overrides (shares rejections)."""
        clone = Catalog(self.api_version, overrides=overrides)
        clone.api_version = self.api_version
        clone.login = self.login
        clone._unavailable = self._unavailable
        clone._rejected = self._rejected
        clone._accepted = self._accepted
        return clone

    def rejected(self, kind: Kind) -> frozenset[str]:
        return frozenset(self._rejected.get(kind, ()))

    def _keep(self, kind: Kind, metrics: Iterable[str]) -> tuple[str, ...]:
        gone = self._rejected.get(kind, set())
        return tuple(m for m in metrics if m not in gone and m not in self._unavailable)

    def media_metrics(self, kind: Kind) -> tuple[str, ...]:
        return self._keep(kind, self._overrides.get(kind, MEDIA_METRICS.get(kind, ())))

    def media_breakdowns(self, kind: Kind) -> tuple[tuple[str, tuple[str, ...]], ...]:
        groups = []
        for breakdown, metrics in MEDIA_BREAKDOWNS.get(kind, ()):
            kept = self._keep(kind, metrics)
            if kept:
                groups.append((breakdown, kept))
        return tuple(groups)

    def account_requests(
        self, *, daily: bool = True, demographics: bool
    ) -> tuple[AccountRequest, ...]:
        """The account-insights calls to make, with rejected metrics left out."""
        override = self._overrides.get(Kind.ACCOUNT)
        requests = (ACCOUNT_REQUESTS if daily else ()) + (
            demographic_requests() if demographics else ()
        )
        result = []
        for request in requests:
            metrics = request.metrics
            if override is not None:
                metrics = tuple(m for m in metrics if m in override)
            metrics = self._keep(Kind.ACCOUNT, metrics)
            if metrics:
                result.append(dataclasses.replace(request, metrics=metrics))
        return tuple(result)

    def accept(self, kind: Kind, metrics: Iterable[str]) -> list[str]:
        """Note that the API answered for ``metrics`` of ``kind``; returns those not noted
        before by this process (to record in ``metric_support``)."""
        known = self._accepted.setdefault(kind, set())
        fresh = [m for m in metrics if m not in known and m not in self._rejected.get(kind, ())]
        known.update(fresh)
        return fresh

    def reject(self, kind: Kind, metric: str) -> bool:
        """Remember that ``metric`` is not accepted for ``kind``; False if already known."""
        rejected = self._rejected.setdefault(kind, set())
        if metric in rejected:
            return False
        rejected.add(metric)
        return True
