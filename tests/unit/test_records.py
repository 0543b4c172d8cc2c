"""The one list of record kinds: it covers the batch, and every kind survives the spool's
encoding exactly."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from collector import models, records, spool

T0 = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
UID = models.IgUserId("17841400000000001")
MID = models.MediaId("18000000000000001")


def _one_of_each() -> models.Batch:
    return models.Batch(
        profiles=[models.ProfileSnapshot(UID, T0, "acme", 10, 2, 3)],
        media=[models.Media(MID, UID, "IMAGE", "FEED", T0, "https://x", "é \ud800", None, T0)],
        media_metrics=[
            models.MediaMetric(MID, "reach", "", "", 12, T0, True),
            models.MediaMetric(MID, "skip_rate", "", "", 0.1, T0),
            models.MediaMetric(MID, "exact", "", "", Decimal("1.25"), T0),
        ],
        media_polls=[
            models.MediaPoll(MID, T0, models.InsightsStatus.BELOW_THRESHOLD, False, "x"),
            models.MediaPoll(MID, T0, models.InsightsStatus.OK, True, None, "webhook"),
        ],
        account_metrics=[
            models.AccountMetric(UID, "reach", "day", "", "", T0 + timedelta(days=1), 5, T0)
        ],
        errors=[
            models.CollectionError(UID, T0, "profile", None, "TransientError", 2, None, "m", "t")
        ],
        verdicts=[
            models.MetricVerdict(models.ObjectKind.STORY, "impressions", "v25.0", False, "gone", T0)
        ],
        statuses=[models.AccountStatusChange(UID, models.AccountStatus.THROTTLED, "r", T0)],
        successes=[models.AccountSuccess(UID, T0)],
        token_checks=[models.TokenCheck(UID, True, T0, None, ("a", "b"), T0)],
        usages=[models.AccountUsage(UID, 12.5, None, 3, T0)],
        misses=[models.StoryMiss(MID, T0, models.MissReason.BELOW_THRESHOLD, "x")],
    )


def test_the_kinds_are_the_batch_fields() -> None:
    parts = [k.part for k in records.KINDS]
    assert sorted(parts) == sorted(f.name for f in dataclasses.fields(models.Batch))
    assert parts[-1] == "statuses"  # a verdict is written after the data it concerns
    batch = _one_of_each()
    assert all(records.counts(batch).get(k.part) for k in records.KINDS)
    assert len(batch) == sum(records.counts(batch).values())


def test_every_kind_survives_the_spool_encoding() -> None:
    batch = _one_of_each()
    assert spool.load(spool.dump(batch)) == batch
    assert spool.dump(batch).isascii()  # a lone surrogate cannot break the file


def test_a_batch_splits_and_joins_back() -> None:
    batch = _one_of_each()
    entries = list(records.items(batch))
    left, right = records.batch_of(entries[:5]), records.batch_of(entries[5:])
    joined = models.Batch()
    joined.extend(left)
    joined.extend(right)
    assert joined == batch
    assert records.account_ids(batch) == [UID]
