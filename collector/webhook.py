"""``story_insights`` webhook payloads → records for the store.

Meta posts a story's final metrics when it expires, with the legacy keys only (``impressions``,
``reach``, ``taps_forward``, ``taps_back``, ``exits``, ``replies``), and retries a delivery for up
to 36 hours. ``impressions`` is stored as ``views``, the name the poller uses for the same figure
since v22. A delivery is one capture of its own (a media poll with ``source = 'webhook'``): the
story's final snapshot only when the collector took none (its own final poll, with the
navigation breakdown, wins), and never mixed with a poll's values.

Every record is keyed on the entry's ``time`` (when Meta produced the notification),
never on the arrival time, so a retried delivery yields the same rows and the store's
``ON CONFLICT DO NOTHING`` keeps one copy. Bad input is logged and skipped, never raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from collector import models

FIELD = "story_insights"
NAVIGATION = "navigation"
NAVIGATION_BREAKDOWN = "story_navigation_action_type"

#: webhook key → plain metric name
PLAIN_METRICS: Mapping[str, str] = {
    # the same figure the poller stores as views (Meta renamed impressions to views in v22)
    "impressions": "views",
    "reach": "reach",
    "replies": "replies",
}
#: webhook key → dimension of ``navigation`` by ``story_navigation_action_type``, the names the
#: insights endpoint uses, so webhook values sit in the same history as polled ones
NAVIGATION_KEYS: Mapping[str, str] = {
    "taps_forward": "tap_forward",
    "taps_back": "tap_back",
    "exits": "tap_exit",
}

# 1970 .. 2100: a "time" outside is not a Unix timestamp in seconds
_MAX_TIME = 4102444800


def to_batch(payload: object, *, log: Any = None) -> models.Batch:
    """The ``media`` and final ``media_metric`` rows of every story_insights change in a payload.

    Values below Meta's privacy threshold arrive as ``-1`` (or ``0``, which cannot be told from a
    real zero and is kept); negative values are skipped. Other fields and unknown keys are ignored.
    """
    logger = log if log is not None else structlog.get_logger()
    batch = models.Batch()
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        logger.warning("webhook_bad_payload", reason="no entry list")
        return batch
    if payload.get("object") not in (None, "instagram"):
        logger.info("webhook_ignored", reason=f"object {str(payload.get('object'))[:40]!r}")
        return batch
    for index, entry in enumerate(payload["entry"]):
        _entry(entry, index, batch, logger)
    return batch


def _entry(entry: object, index: int, batch: models.Batch, log: Any) -> None:
    if not isinstance(entry, dict):
        log.warning("webhook_bad_payload", entry=index, reason="entry is not an object")
        return
    ig_user_id = _digits(entry.get("id"))
    at = _time(entry.get("time"))
    changes = entry.get("changes")
    if ig_user_id is None or at is None or not isinstance(changes, list):
        log.warning(
            "webhook_bad_payload",
            entry=index,
            reason="entry needs a numeric id, a Unix time and a changes list",
        )
        return
    for change in changes:
        if not isinstance(change, dict):
            log.warning("webhook_bad_payload", entry=index, reason="change is not an object")
            continue
        if change.get("field") != FIELD:
            log.info("webhook_ignored", entry=index, field=str(change.get("field"))[:40])
            continue
        value = change.get("value")
        media_id = _digits(value.get("media_id")) if isinstance(value, dict) else None
        if not isinstance(value, dict) or media_id is None:
            log.warning("webhook_bad_payload", entry=index, reason="value needs a numeric media_id")
            continue
        _story(models.IgUserId(ig_user_id), models.MediaId(media_id), value, at, batch, log)


def _story(
    ig_user_id: models.IgUserId,
    media_id: models.MediaId,
    value: Mapping[str, object],
    at: datetime,
    batch: models.Batch,
    log: Any,
) -> None:
    # The media row keeps the foreign key valid for a story the poller never saw. seen_at is the
    # entry time (the story's expiry), not the arrival: a redelivery then changes nothing, and a
    # late retry does not make the story look freshly listed.
    batch.media.append(
        models.Media(
            media_id=media_id,
            ig_user_id=ig_user_id,
            media_type=None,
            media_product_type="STORY",
            posted_at=None,
            permalink=None,
            caption=None,
            expires_at=None,
            seen_at=at,
        )
    )
    skipped = []
    for key, raw in value.items():
        if key in PLAIN_METRICS:
            metric, breakdown, dimension = PLAIN_METRICS[key], "", ""
        elif key in NAVIGATION_KEYS:
            metric, breakdown, dimension = NAVIGATION, NAVIGATION_BREAKDOWN, NAVIGATION_KEYS[key]
        else:
            continue
        number = _count(raw)
        if number is None:
            skipped.append(key)
            continue
        batch.media_metrics.append(
            models.MediaMetric(
                media_id=media_id,
                metric=metric,
                breakdown=breakdown,
                dimension=dimension,
                value=number,
                captured_at=at,
                is_final=True,
            )
        )
    if any(m.media_id == media_id for m in batch.media_metrics):
        # a final capture of its own: the story's final snapshot when no poll was final
        batch.media_polls.append(
            models.MediaPoll(
                media_id, at, models.InsightsStatus.OK, is_final=True, source="webhook"
            )
        )
    if skipped:
        log.debug("webhook_values_skipped", media_id=media_id, keys=sorted(skipped))


def _digits(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return value
    return None


def _time(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 < value < _MAX_TIME:
        return None
    return datetime.fromtimestamp(value, UTC)


def _count(value: object) -> int | None:
    """A non-negative integer count, else ``None`` (below threshold, or not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value >= 0:
        return value
    return None
