"""Insights answers (media and account) built from the world's ground truth."""

from __future__ import annotations

import dataclasses
import json
import math
import urllib.parse
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from collector.simulator import apierror, metrics, stats, world

MAX_RANGE = 30 * 86400
RETENTION_DAYS = 90


def list_param(raw: str | None) -> list[str]:
    """A list parameter given comma-separated or as a JSON array."""
    if raw is None:
        return []
    text = raw.strip()
    if text.startswith("["):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, list):
            return [str(x).strip() for x in loaded if str(x).strip()]
    return [p.strip() for p in text.split(",") if p.strip()]


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclasses.dataclass
class Served:
    """Values collected while building one answer; committed only if the answer succeeds."""

    at: datetime
    values: list[stats.ServedValue] = dataclasses.field(default_factory=list)

    def add(
        self,
        object_id: str,
        account: str,
        metric: str,
        value: int | float,
        *,
        period: str | None = None,
        breakdown: str | None = None,
        dimension: str | None = None,
        end_time: float | None = None,
        source: str = "insights",
    ) -> None:
        self.values.append(
            stats.ServedValue(
                object_id=object_id,
                account=account,
                metric=metric,
                value=value,
                served_at=self.at,
                period=period,
                breakdown=breakdown,
                dimension=dimension,
                end_time=None if end_time is None else _dt(end_time),
                source=source,
            )
        )


# ------------------------------------------------------------------------------ media


def check_media_metrics(w: world.World, media: world.Media, names: list[str], version: int) -> None:
    """Per-object checks: product type, media type, crossposting, impressions cutoff."""
    product = media.product_type
    for name in names:
        if name not in metrics.SUPPORTED[product]:
            raise metrics.unsupported_for_product(name)
        if name == "total_views" and media.media_type != "VIDEO":
            raise metrics.unsupported_for_product(name)
        if name == "video_views" and media.media_type != "VIDEO":
            raise metrics.unsupported_for_product(name)
        if name == "views" and media.rejects_views:
            raise metrics.unsupported_for_product(name)
        if name == "impressions" and media.posted >= metrics.IMPRESSIONS_CUTOFF:
            dep = metrics.media_deprecation(name, 22)
            assert dep is not None
            raise dep
        if name in ("facebook_views", "crossposted_views") and not media.shared_to_facebook:
            raise apierror.fatal()
    acct = w.account(media.ig_user_id)
    if acct.conversion_at is not None and media.posted < acct.conversion_at.timestamp():
        raise apierror.before_conversion()


def media_insights(
    w: world.World,
    media: world.Media,
    names: list[str],
    breakdowns: list[str],
    *,
    version: int,
    now: float,
    served: Served,
) -> list[dict[str, Any]]:
    """``data`` of ``GET /{media-id}/insights`` (validation of names already done)."""
    check_media_metrics(w, media, names, version)
    cfg = w.config
    if media.expires is not None and now >= media.expires:
        if cfg.expired_story_insights == "error":
            raise apierror.object_missing(media.id)
        return []
    values = {name: w.media_metric(media.id, name, now) for name in names}
    if media.is_story:
        checked = names if cfg.story_threshold_metric is None else [cfg.story_threshold_metric]
        for name in checked:
            value = values.get(name)
            if value is None:
                value = w.media_metric(media.id, name, now)
            if value is not None and value < cfg.story_min_value:
                raise apierror.not_enough_viewers()
    data: list[dict[str, Any]] = []
    owner = media.ig_user_id
    for name in names:
        value = values[name]
        assert value is not None
        entry: dict[str, Any] = {
            "name": name,
            "period": "lifetime",
            "values": [{"value": value}],
            "title": metrics.title(name),
            "description": metrics.media_description(name, media.product_type),
        }
        served.add(media.id, owner, name, value, period="lifetime")
        if breakdowns:
            parts = w.media_breakdown(media.id, name, now)
            results = [{"dimension_values": [dim], "value": v} for dim, v in parts.items() if v > 0]
            for dim, v in parts.items():
                if v > 0:
                    served.add(
                        media.id, owner, name, v,
                        period="lifetime", breakdown=breakdowns[0], dimension=dim,
                    )  # fmt: skip
            entry["total_value"] = {
                "value": value,
                "breakdowns": [{"dimension_keys": list(breakdowns), "results": results}],
            }
        entry["id"] = f"{media.id}/insights/{name}/lifetime"
        data.append(entry)
    return data


# ------------------------------------------------------------------------------ account


def parse_time(raw: str | None, name: str) -> float | None:
    """``since``/``until``: Unix seconds, or an ISO date/datetime (strtotime-lite)."""
    if raw is None or raw == "":
        return None
    try:
        return float(int(raw))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise apierror.invalid_param(
            f"The {name} parameter must be a unix timestamp or a strtotime-compatible date"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclasses.dataclass
class AccountQuery:
    """A validated account insights request."""

    names: list[str]
    period: str
    metric_type: str
    breakdowns: list[str]
    timeframe: str | None
    since: float
    until: float
    explicit_range: bool


def account_query(params: dict[str, str], *, version: int, now: float) -> AccountQuery:
    names = list_param(params.get("metric"))
    if not names:
        raise apierror.invalid_param("The parameter metric is required")
    breakdowns = list_param(params.get("breakdown"))
    metric_type = metrics.validate_account_request(
        names,
        version=version,
        period=params.get("period"),
        metric_type=params.get("metric_type"),
        breakdowns=breakdowns,
        timeframe=params.get("timeframe"),
    )
    since = parse_time(params.get("since"), "since")
    until = parse_time(params.get("until"), "until")
    explicit = since is not None or until is not None
    if until is None:
        until = now
    if since is None:
        since = until - 86400
    if until - since > MAX_RANGE:
        raise apierror.invalid_param(
            "There cannot be more than 30 days (2592000 s) between since and until"
        )
    if since > until:
        raise apierror.invalid_param("The since parameter must be earlier than until")
    return AccountQuery(
        names=names,
        period=params["period"],
        metric_type=metric_type,
        breakdowns=breakdowns if metric_type == "total_value" else [],
        timeframe=params.get("timeframe"),
        since=since,
        until=until,
        explicit_range=explicit,
    )


def _day_ends(
    since: float, until: float, zone: ZoneInfo = world.PACIFIC
) -> list[tuple[date, float]]:
    """Days (in ``zone``: the account's day zone) whose end (exclusive cutoff) is in
    (since, until]."""
    out: list[tuple[date, float]] = []
    day = world.local_day(since, zone)
    while True:
        _, end = world.day_bounds(day, zone)
        if end > until:
            return out
        if end > since:
            out.append((day, end))
        day += timedelta(days=1)


def _window(w: world.World, ig: str, name: str, day: date, period: str, now: float) -> int:
    span = {"week": 7, "days_28": 28}.get(period, 1)
    total = sum(w.account_day_value(ig, name, day - timedelta(days=k), now) for k in range(span))
    # Unique-user metrics over several days overlap; the real API de-duplicates.
    return total if span == 1 else math.floor(total * 0.6)


def account_insights(
    w: world.World,
    acct: world.Account,
    q: AccountQuery,
    *,
    now: float,
    served: Served,
) -> list[dict[str, Any]]:
    """``data`` of ``GET /{ig-user-id}/insights``."""
    ig = acct.ig_user_id
    low = w.followers_count(ig, now) < 100
    data: list[dict[str, Any]] = []
    for name in q.names:
        spec = metrics.account_metric(name)
        if spec.follower_gated and low:
            continue
        entry: dict[str, Any] = {"name": name, "period": q.period}
        if q.metric_type == "time_series":
            values: list[dict[str, Any]] = []
            oldest = now - RETENTION_DAYS * 86400
            if name in ("follower_count", "online_followers"):
                oldest = now - 30 * 86400
            for day, end in _day_ends(q.since, q.until, w.day_zone(ig)):
                if end <= oldest:
                    continue
                if name == "online_followers":
                    if end > now:
                        continue
                    hours = w.online_followers(ig, day)
                    values.append({"value": hours, "end_time": world.graph_time(end)})
                    for hour, v in hours.items():
                        served.add(
                            ig, ig, name, v,
                            period=q.period, breakdown="hour", dimension=hour, end_time=end,
                        )  # fmt: skip
                    continue
                value = _window(w, ig, name, day, q.period, now)
                values.append({"value": value, "end_time": world.graph_time(end)})
                served.add(ig, ig, name, value, period=q.period, end_time=end)
            entry["values"] = values
            entry["title"] = metrics.title(name)
            entry["description"] = metrics.account_description(name)
        else:
            entry["title"] = metrics.title(name)
            entry["description"] = metrics.account_description(name)
            entry["total_value"] = _total_value(w, ig, name, q, now, served)
        entry["id"] = f"{ig}/insights/{name}/{q.period}"
        data.append(entry)
    return data


def _total_value(
    w: world.World, ig: str, name: str, q: AccountQuery, now: float, served: Served
) -> dict[str, Any]:
    spec = metrics.account_metric(name)
    if spec.demographic:
        if not q.breakdowns:
            return {}
        rows = w.demographics(ig, name, q.breakdowns, q.timeframe or "this_month", now)
        results = []
        for key, v in rows.items():
            results.append({"dimension_values": list(key), "value": v})
            served.add(
                ig, ig, name, v, period=q.period,
                breakdown=",".join(q.breakdowns), dimension=",".join(key),
            )  # fmt: skip
        return {"breakdowns": [{"dimension_keys": list(q.breakdowns), "results": results}]}
    end = q.until
    out: dict[str, Any] = {}
    if name != "follows_and_unfollows":
        value = w.account_total(ig, name, q.since, end, now)
        out["value"] = value
        served.add(ig, ig, name, value, period=q.period, end_time=end)
    if q.breakdowns:
        bd = q.breakdowns[0]
        parts = w.account_breakdown(ig, name, bd, q.since, end, now)
        results = []
        for dim, v in parts.items():
            if v <= 0:
                continue
            results.append({"dimension_values": [dim], "value": v})
            served.add(ig, ig, name, v, period=q.period, breakdown=bd, dimension=dim, end_time=end)
        out["breakdowns"] = [{"dimension_keys": [bd], "results": results}]
    return out


def account_paging(
    base: str, path: str, params: dict[str, str], q: AccountQuery
) -> dict[str, str] | None:
    """``previous``/``next`` links moving the time window by its own length."""
    if all(metrics.account_metric(n).demographic for n in q.names):
        return None
    span = q.until - q.since
    links = {}
    for key, shift in (("previous", -span), ("next", span)):
        moved = dict(params)
        moved["since"] = str(int(q.since + shift))
        moved["until"] = str(int(q.until + shift))
        links[key] = f"{base}/{path}?{urllib.parse.urlencode(moved)}"
    return links
