"""The spool file: exact round trips, fsync'd appends, torn records and quarantine."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from collector import errors, models, spool

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
    assert len(list(sp.batches())) == 1  # a replay reads, then clears what it read
    sp.clear()
    assert sp.size == 0
    assert list(sp.batches()) == []
    sp.clear()  # clearing an empty spool is fine


# --------------------------------------------------------------------------- finding 3 (issue 10)


class FaultyOs:
    """The ``os`` module as the spool sees it, with scripted write and fsync faults.

    ``writes`` lists what each ``os.write`` call does in turn: an int writes at most that many
    bytes (a short write), an ``OSError`` is raised, ``None`` writes normally.
    """

    def __init__(
        self, writes: list[int | OSError | None] | None = None, fsync_errno: int | None = None
    ) -> None:
        self.writes = list(writes or [])
        self.fsync_errno = fsync_errno

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.writes:
            step = self.writes.pop(0)
            if isinstance(step, OSError):
                raise step
            if step is not None:
                return os.write(fd, bytes(data)[:step])
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_errno is not None:
            errno_, self.fsync_errno = self.fsync_errno, None
            raise OSError(errno_, os.strerror(errno_))
        os.fsync(fd)


def small(n: int) -> models.Batch:
    return models.Batch(successes=[models.AccountSuccess(UID, AT + timedelta(seconds=n))])


def seconds_of(batches: list[models.Batch]) -> list[int]:
    return [int((b.successes[0].at - AT).total_seconds()) for b in batches]


def test_a_short_write_is_never_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 3: a short write was logged as spooled and silently dropped at replay."""
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    acknowledged = []
    # the third append writes 7 bytes and then nothing more (0: the disk takes no more)
    monkeypatch.setattr(spool, "os", FaultyOs([None, None, 7, 0]))
    for n in range(5):
        before = sp.size
        if n == 2:
            with pytest.raises(errors.SpoolError, match="short write"):
                sp.append(small(n))
            assert sp.size == before  # all or nothing: the torn bytes were cut again
            assert not sp.healthy
            assert sp.last_error is not None
            continue
        sp.append(small(n))
        acknowledged.append(n)
        assert sp.healthy
    assert acknowledged == [0, 1, 3, 4]
    assert seconds_of(list(sp.batches())) == acknowledged
    assert sp.count() == 4


def test_enospc_and_eio_leave_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    sp.append(small(0))
    intact = sp.path.read_bytes()
    # half the record reaches the disk, then the disk is full
    monkeypatch.setattr(
        spool, "os", FaultyOs([30, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))])
    )
    with pytest.raises(errors.SpoolError, match="No space left on device"):
        sp.append(full_batch())
    assert sp.path.read_bytes() == intact
    # the record is written, but fsync reports an I/O error: it is not durable, so not kept
    monkeypatch.setattr(spool, "os", FaultyOs(fsync_errno=errno.EIO))
    with pytest.raises(errors.SpoolError, match="Input/output error"):
        sp.append(full_batch())
    assert sp.path.read_bytes() == intact
    monkeypatch.setattr(spool, "os", os)
    sp.append(small(1))
    assert sp.healthy
    assert seconds_of(list(sp.batches())) == [0, 1]


def test_a_torn_tail_is_cut_at_start_and_never_hides_later_records(tmp_path: Path) -> None:
    """Finding 3: records appended after a torn one could never be read."""
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    sp.append(small(0))
    sp.append(small(1))
    good = sp.size
    with sp.path.open("ab") as f:  # a process died in the middle of its write
        f.write(spool.frame(spool.dump(full_batch()))[:40])
    restarted = spool.Spool(tmp_path, max_bytes=10**6)
    with structlog.testing.capture_logs() as logs:
        assert restarted.recover() == 40
    assert restarted.size == good
    assert next(e for e in logs if e["event"] == "spool_tail_cut")["bytes"] == 40
    restarted.append(small(2))
    assert seconds_of(list(restarted.batches())) == [0, 1, 2]


def test_append_without_recover_still_cuts_the_torn_tail_first(tmp_path: Path) -> None:
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    sp.append(small(0))
    with sp.path.open("ab") as f:
        f.write(b'123 0badc0de {"succ')
    spool.Spool(tmp_path, max_bytes=10**6).append(small(1))
    assert seconds_of(list(sp.batches())) == [0, 1]


def test_a_bad_record_in_the_middle_is_reported_and_reading_goes_on(tmp_path: Path) -> None:
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    for n in range(3):
        sp.append(small(n))
    data = bytearray(sp.path.read_bytes())
    second = data.index(b"\n") + 1
    data[second + 30] ^= 0x01  # one flipped bit inside the second record
    sp.path.write_bytes(bytes(data))
    with structlog.testing.capture_logs() as logs:
        got = seconds_of(list(sp.batches()))
    assert got == [0, 2]
    assert sp.bad_records == 1
    bad = [e for e in logs if e["event"] == "spool_record_unreadable"]
    assert bad[0]["offset"] == second
    assert sp.count() == 2
    # clearing after the replay keeps the unreadable record aside, never deletes it
    sp.clear()
    assert sp.size == 0
    rejected = (tmp_path / "spool.rejected").read_bytes()
    assert bytes(data[second : data.index(b"\n", second) + 1]) in rejected


def test_records_after_a_torn_one_written_by_older_versions_are_salvaged(tmp_path: Path) -> None:
    """An older collector appended after a torn record: the record after it is still read."""
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    sp.path.write_bytes(
        spool.frame(spool.dump(small(0)))
        + spool.frame(spool.dump(full_batch()))[:55]  # torn, no newline
        + spool.frame(spool.dump(small(1)))
        + spool.frame(spool.dump(small(2)))
    )
    assert seconds_of(list(sp.batches())) == [0, 1, 2]
    assert sp.bad_records == 1


def test_a_checksummed_record_that_is_not_a_batch_is_set_aside(tmp_path: Path) -> None:
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    sp.append(small(0))
    with sp.path.open("ab") as f:
        f.write(spool.frame(b'{"successes":[{"nope":1}]}'))
        f.write(spool.frame(b"[" * 100_000 + b"]" * 100_000))
    sp.append(small(1))
    assert seconds_of(list(sp.batches())) == [0, 1]
    assert sp.bad_records == 2


def test_clear_forgets_only_what_was_read(tmp_path: Path) -> None:
    """Finding 3: clear() deleted records that had never been read."""
    sp = spool.Spool(tmp_path, max_bytes=10**6)
    sp.append(small(0))
    sp.clear()  # nothing was read: nothing is forgotten
    assert sp.count() == 1
    replay = sp.batches()
    assert seconds_of([next(replay)]) == [0]
    sp.append(small(1))  # arrives while the replay is writing
    assert list(replay) == []  # the replay's view ends where it started
    sp.clear()
    assert seconds_of(list(sp.batches())) == [1]
    sp.clear()
    assert sp.size == 0
    assert list(sp.batches()) == []


def test_a_spool_that_cannot_be_created_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sp = spool.Spool(blocker / "state", max_bytes=10**6)  # a file where a directory should be
    assert not sp.healthy
    assert sp.size == 0
    assert sp.count() == 0
    with pytest.raises(errors.SpoolError):
        sp.append(small(0))
