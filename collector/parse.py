"""Graph API JSON turned into records, defensively.

Whatever Meta (or a broken proxy) sends, nothing here raises on bad data: a field of the wrong
type, a missing id, an unparsable timestamp or an absurd number is reported through ``skipped``
and left out, so one bad object never costs the rest of the page or corrupts a row.

The bounds, checked here once so that nothing past this module has to:

- Text (captions, usernames, permalinks, dimension values, error messages) is made storable:
  PostgreSQL's UTF-8 ``text`` cannot hold NUL nor a lone surrogate (the JSON escape ``\ud800``
  decodes to one), so each such code point becomes U+FFFD (the Unicode replacement character),
  reported as ``text_replaced``; the text is then cut to the field's length limit.
- A metric value is an int or a float, not a bool, finite, and between 0 and 2^63 - 1 (what
  PostgreSQL's bigint holds). None of the metrics Meta documents for Instagram can be negative
  (``follows_and_unfollows`` reports unfollows as a count of its own, ``follower_count`` new
  followers per day), so a negative value is bad data, skipped and reported like a huge one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from collector import models

PACIFIC = ZoneInfo("America/Los_Angeles")
BIGINT_MAX = 2**63 - 1
#: what replaces a code point PostgreSQL cannot store (NUL, a lone surrogate)
REPLACEMENT = "\ufffd"
#: NUL, and the surrogates: in a Python ``str`` they can only be lone ones (JSON decoding joins
#: valid pairs), and UTF-8 cannot encode them
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_DIGITS = re.compile(r"^\d{1,30}$")
#: enum-like breakdowns whose values Meta sends in varying case
_CASE_FOLDED_BREAKDOWNS = frozenset({"story_navigation_action_type", "action_type"})
_MAX_TEXT = 10_000

Skip = Callable[[str, str], None]


def _ignore(reason: str, detail: str) -> None:
    """Default ``skipped`` callback."""


def object_id(value: Any) -> str | None:
    """A Graph object id: a string (or int) of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        value = str(value)
    if isinstance(value, str) and _DIGITS.match(value):
        return value
    return None


def timestamp(value: Any) -> datetime | None:
    """Meta's ``2024-06-17T19:39:18+0000`` (or ISO with a colon) as an aware UTC datetime."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    if len(value) == 24 and value[10] == "T" and value[19] in "+-":
        # the common spelling, parsed by the C fromisoformat (strptime is Python)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(value, fmt).astimezone(UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def number(value: Any) -> int | float | None:
    """A metric value: finite, between 0 and ``BIGINT_MAX``; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= BIGINT_MAX else None
    if isinstance(value, float):
        return value if math.isfinite(value) and 0.0 <= value <= BIGINT_MAX else None
    return None


def count(value: Any) -> int | None:
    """A non-negative integer that fits PostgreSQL's bigint."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= BIGINT_MAX else None


def storable(value: str) -> str:
    """``value`` with every code point PostgreSQL cannot store replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, value)


def text(
    value: Any, limit: int = _MAX_TEXT, *, field: str = "text", skipped: Skip = _ignore
) -> str | None:
    """A storable string of at most ``limit`` characters, or None when ``value`` is no string."""
    if not isinstance(value, str):
        return None
    cleaned = storable(value[:limit])
    if cleaned != value[:limit]:
        skipped("text_replaced", field)
    return cleaned


def pacific_day_end(moment: datetime) -> datetime:
    """The exclusive end (next Pacific midnight, in UTC) of the Pacific day holding ``moment``."""
    local = moment.astimezone(PACIFIC)
    next_day = (local + timedelta(days=1)).date()
    return datetime(next_day.year, next_day.month, next_day.day, tzinfo=PACIFIC).astimezone(UTC)


def pacific_day_start(moment: datetime) -> datetime:
    local = moment.astimezone(PACIFIC).date()
    return datetime(local.year, local.month, local.day, tzinfo=PACIFIC).astimezone(UTC)


def profile(
    body: Any, ig_user_id: models.IgUserId, captured_at: datetime, skipped: Skip = _ignore
) -> models.ProfileSnapshot | None:
    if not isinstance(body, dict):
        skipped("profile_not_an_object", type(body).__name__)
        return None
    values = {}
    for field in ("followers_count", "follows_count", "media_count"):
        raw = body.get(field)
        values[field] = count(raw)
        if raw is not None and values[field] is None:
            skipped("bad_field", field)
    return models.ProfileSnapshot(
        ig_user_id=ig_user_id,
        captured_at=captured_at,
        username=text(body.get("username"), 200, field="username", skipped=skipped),
        followers_count=values["followers_count"],
        follows_count=values["follows_count"],
        media_count=values["media_count"],
    )


def media_item(
    item: Any,
    ig_user_id: models.IgUserId,
    seen_at: datetime,
    *,
    story_lifetime: timedelta | None = None,
    skipped: Skip = _ignore,
) -> models.Media | None:
    """One element of ``/media`` or ``/stories``; stories get ``expires_at``."""
    if not isinstance(item, dict):
        skipped("media_not_an_object", type(item).__name__)
        return None
    media_id = object_id(item.get("id"))
    if media_id is None:
        skipped("media_without_id", repr(item.get("id"))[:40])
        return None
    posted_at = timestamp(item.get("timestamp"))
    product = text(item.get("media_product_type"), 40, field="media_product_type", skipped=skipped)
    if story_lifetime is not None and product is None:
        product = "STORY"
    expires_at = None
    if product == "STORY":
        if posted_at is None:
            skipped("story_without_timestamp", media_id)
            return None
        expires_at = posted_at + (story_lifetime or timedelta(hours=24))
    return models.Media(
        media_id=models.MediaId(media_id),
        ig_user_id=ig_user_id,
        media_type=text(item.get("media_type"), 40, field="media_type", skipped=skipped),
        media_product_type=product,
        posted_at=posted_at,
        permalink=text(item.get("permalink"), 2000, field="permalink", skipped=skipped),
        caption=text(item.get("caption"), field="caption", skipped=skipped),
        expires_at=expires_at,
        seen_at=seen_at,
    )


def media_field_metrics(
    item: dict[str, Any],
    media_id: models.MediaId,
    captured_at: datetime,
    skipped: Skip = _ignore,
) -> list[models.MediaMetric]:
    """Counters that come as fields of the media object (``like_count``, ``comments_count``)."""
    rows = []
    for field in ("like_count", "comments_count"):
        raw = item.get(field)
        value = count(raw)
        if value is not None:
            rows.append(models.MediaMetric(media_id, field, "", "", value, captured_at))
        elif raw is not None:
            skipped("bad_value", field)
    return rows


def _dimension(breakdown: str, value: Any) -> str | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    result = storable(str(value)[:200])
    return result.lower() if breakdown in _CASE_FOLDED_BREAKDOWNS else result


def _breakdown_rows(total_value: Any, skipped: Skip) -> list[tuple[str, str, int | float]]:
    """(breakdown, dimension, value) triples from ``total_value.breakdowns``."""
    rows: list[tuple[str, str, int | float]] = []
    if not isinstance(total_value, dict):
        return rows
    for group in total_value.get("breakdowns") or ():
        if not isinstance(group, dict):
            continue
        keys = group.get("dimension_keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            skipped("bad_breakdown", "dimension_keys")
            continue
        # Demographics may carry the timeframe as an extra key; it is not a dimension.
        positions = [i for i, k in enumerate(keys) if k != "timeframe"]
        name = storable(",".join(keys[i] for i in positions))[:200]
        for result in group.get("results") or ():
            if not isinstance(result, dict):
                continue
            values = result.get("dimension_values")
            value = number(result.get("value"))
            if not isinstance(values, list) or len(values) != len(keys) or value is None:
                skipped("bad_breakdown_result", name)
                continue
            dims = [_dimension(keys[i], values[i]) for i in positions]
            if any(d is None for d in dims):
                skipped("bad_breakdown_result", name)
                continue
            rows.append((name, ",".join(d for d in dims if d is not None), value))
    return rows


def _insight_items(body: Any, requested: Iterable[str], skipped: Skip) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        skipped("insights_without_data", type(body).__name__)
        return []
    wanted = set(requested)
    items = []
    for item in body["data"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            skipped("bad_insight", "no name")
            continue
        if item["name"] not in wanted:
            skipped("unrequested_metric", storable(item["name"][:80]))
            continue
        items.append(item)
    return items


def media_insights(
    body: Any,
    media_id: models.MediaId,
    requested: Sequence[str],
    captured_at: datetime,
    *,
    is_final: bool = False,
    with_totals: bool = True,
    skipped: Skip = _ignore,
) -> list[models.MediaMetric]:
    """Rows from ``/{media-id}/insights``; breakdown rows too when the answer has them."""
    rows: list[models.MediaMetric] = []
    for item in _insight_items(body, requested, skipped):
        name = item["name"]
        value: int | float | None = None
        values = item.get("values")
        if isinstance(values, list) and values and isinstance(values[0], dict):
            value = number(values[0].get("value"))
        total_value = item.get("total_value")
        if value is None and isinstance(total_value, dict):
            value = number(total_value.get("value"))
        if with_totals:
            if value is not None:
                rows.append(
                    models.MediaMetric(media_id, name, "", "", value, captured_at, is_final)
                )
            elif values or total_value:
                skipped("bad_value", name)
        for breakdown, dimension, bvalue in _breakdown_rows(total_value, skipped):
            rows.append(
                models.MediaMetric(
                    media_id, name, breakdown, dimension, bvalue, captured_at, is_final
                )
            )
    return rows


def account_insights(
    body: Any,
    ig_user_id: models.IgUserId,
    requested: Sequence[str],
    captured_at: datetime,
    *,
    period: str,
    end_time: datetime | None,
    skipped: Skip = _ignore,
) -> list[models.AccountMetric]:
    """Rows from ``/{ig-user-id}/insights``.

    ``end_time`` is the bucket end for ``total_value`` answers (the request's ``until``, or the
    capture day's end for demographics); time-series values carry their own ``end_time``.
    """
    rows: list[models.AccountMetric] = []

    def add(metric: str, breakdown: str, dimension: str, end: datetime, value: Any) -> None:
        parsed = number(value)
        if parsed is None:
            skipped("bad_value", metric)
            return
        rows.append(
            models.AccountMetric(
                ig_user_id, metric, period, breakdown, dimension, end, parsed, captured_at
            )
        )

    for item in _insight_items(body, requested, skipped):
        name = item["name"]
        total_value = item.get("total_value")
        if isinstance(total_value, dict):
            if end_time is None:
                skipped("total_value_without_window", name)
                continue
            if "value" in total_value:
                add(name, "", "", end_time, total_value["value"])
            for breakdown, dimension, value in _breakdown_rows(total_value, skipped):
                add(name, breakdown, dimension, end_time, value)
            continue
        for point in item.get("values") or ():
            if not isinstance(point, dict):
                continue
            end = timestamp(point.get("end_time")) or end_time
            if end is None:
                skipped("value_without_end_time", name)
                continue
            raw = point.get("value")
            if isinstance(raw, dict):
                # online_followers: {"0": 159, "1": 157, …} hour -> followers online
                for key, sub in raw.items():
                    add(name, "hour", storable(str(key)[:20]), end, sub)
            else:
                add(name, "", "", end, raw)
    return rows
