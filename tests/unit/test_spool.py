"""The spool file: exact round trips, fsync'd appends, torn records and quarantine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from collector import models, spool

AT = datetime(2026, 6, 15, 12, 0, 0, 123456, tzinfo=UTC)
UID = models.IgUserId("17841400000000001")
MID = models.MediaId("17900000000000001")


def full_batch() -> models.Batch:
    return models.Batch(
        profiles=[models.ProfileSnapshot(UID, AT, "acme", 419, 112, None)],
        media=[
            models.Media(
                MID,
                UID,
                "IMAGE",
                "STORY",
                AT,
                "https://x",
                "ünïcode\ncaption",
                AT + timedelta(hours=24),
                AT,
            )
        ],
        media_metrics=[
            models.MediaMetric(MID, "reach", "", "", 17, AT, True),
            models.MediaMetric(MID, "reels_skip_rate", "", "", 48.4, AT),
            models.MediaMetric(MID, "views", "", "", Decimal("123456789012345678901234567"), AT),
            models.MediaMetric(
                MID, "navigation", "story_navigation_action_type", "tap_forward", 3, AT
            ),
        ],
        media_polls=[
            models.MediaPoll(MID, AT, models.InsightsStatus.BELOW_THRESHOLD, False, "why")
        ],
        account_metrics=[models.AccountMetric(UID, "reach", "day", "", "", AT, 5, AT)],
        errors=[
            models.CollectionError(UID, AT, "profile", None, "TokenInvalid", 190, 463, "m", "Ax")
        ],
        verdicts=[models.MetricVerdict(models.ObjectKind.REELS, "views", "v25.0", False, "no", AT)],
        statuses=[models.AccountStatusChange(UID, models.AccountStatus.THROTTLED, "80002", AT)],
        successes=[models.AccountSuccess(UID, AT)],
        token_checks=[models.TokenCheck(UID, True, AT, None, ("instagram_basic",), AT)],
        usages=[models.AccountUsage(UID, 87.5, AT + timedelta(minutes=5), 2, AT)],
    )


def test_round_trip_is_exact(tmp_path: Path) -> None:
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    batch = full_batch()
    sp.append(batch)
    sp.append(models.Batch(successes=[models.AccountSuccess(UID, AT + timedelta(seconds=1))]))
    got = list(sp.batches())
    assert got[0] == batch
    assert len(got) == 2
    assert sp.count() == 2
    assert (tmp_path / spool.FILENAME).stat().st_mode & 0o777 == 0o600


def test_torn_last_record_is_skipped(tmp_path: Path) -> None:
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    sp.append(full_batch())
    sp.append(full_batch())
    data = sp.path.read_bytes()
    sp.path.write_bytes(data[:-25])  # the process died in the middle of the second write
    assert len(list(sp.batches())) == 1
    sp.path.write_bytes(data[: len(data) // 2 + 3] + b"garbage")
    assert len(list(sp.batches())) == 1


def test_full_clear_and_quarantine(tmp_path: Path) -> None:
    sp = spool.Spool(tmp_path, max_bytes=100)
    empty_full = sp.full
    assert not empty_full
    sp.append(full_batch())
    assert sp.full
    kept = sp.quarantine(full_batch(), "foreign key")
    assert kept.exists()
    assert b"foreign key" in kept.read_bytes()
    sp.clear()
    assert sp.size == 0
    assert list(sp.batches()) == []
    sp.clear()  # clearing an empty spool is fine
