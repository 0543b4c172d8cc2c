"""The spool on a real full disk (a 256 KiB tmpfs, as root) and under SIGKILL in mid-append."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector import errors, models, spool

AT = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
UID = models.IgUserId("17841400000000001")
ROOT = Path(__file__).resolve().parents[2]


def batch(n: int, rows: int) -> models.Batch:
    """Batch number ``n`` with ``rows`` metric values (about 110 bytes each in the spool)."""
    return models.Batch(
        media_metrics=[
            models.MediaMetric(models.MediaId(f"179{n:06d}{i:08d}"), "reach", "", "", i, AT)
            for i in range(rows)
        ],
        successes=[models.AccountSuccess(UID, AT + timedelta(seconds=n))],
    )


def number(b: models.Batch) -> int:
    return int((b.successes[0].at - AT).total_seconds())


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_never_leaves_a_torn_or_unacknowledged_record(tiny_disk: Path) -> None:
    sp = spool.Spool(tiny_disk, max_bytes=10**9)
    acknowledged: list[int] = []
    failures: list[errors.SpoolError] = []
    n = 0
    # growing batches, so that one of them is cut short by the disk in mid-write
    while len(failures) < 3:
        before = sp.size
        try:
            size = sp.append(batch(n, rows=50 + 37 * n))
        except errors.SpoolError as exc:
            failures.append(exc)
            assert sp.size == before  # all or nothing
        else:
            acknowledged.append(n)
            assert size == sp.size
        n += 1
        assert n < 500, "the 256 KiB disk never filled up"
    assert all(f.errno == errno.ENOSPC for f in failures), [str(f) for f in failures]
    assert not sp.healthy
    assert "No space left on device" in (sp.last_error or "")
    assert len(acknowledged) >= 3
    # every acknowledged batch is there, exactly, and nothing else
    again = spool.Spool(tiny_disk, max_bytes=10**9)
    assert again.recover() == 0
    got = list(again.batches())
    assert [number(b) for b in got] == acknowledged
    assert got == [batch(k, rows=50 + 37 * k) for k in acknowledged]
    assert again.bad_records == 0
    # once the replay has freed the disk, appending works again
    again.clear()
    assert again.size == 0
    again.append(batch(1000, rows=10))
    assert again.healthy
    assert [number(b) for b in again.batches()] == [1000]


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.hostile.test_spool_disk import batch
    from collector import spool

    sp = spool.Spool(Path(sys.argv[1]), max_bytes=10**12)
    n = int(sys.argv[2])
    while True:
        sp.append(batch(n, rows=3000))  # about 330 KB a record: the kill lands in a write
        print(n, flush=True)
        n += 1
    """
)


async def _append_until_killed(state: Path, first: int, acks: int) -> int:
    """Run a writer appending numbered batches from ``first``; SIGKILL it after ``acks``
    acknowledgements; return the last number it acknowledged."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        str(state),
        str(first),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    last = first - 1
    try:
        for _ in range(acks):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the writer died on its own"
            last = int(line)
        proc.send_signal(signal.SIGKILL)
        # what it printed before dying was acknowledged too
        rest = await asyncio.wait_for(proc.stdout.read(), 60)
        for line in rest.split():
            last = int(line)
        assert await proc.wait() == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return last


async def test_sigkill_during_appends_loses_no_acknowledged_record(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = 0
    for round_ in range(3):
        last = await _append_until_killed(state, first, acks=8 + round_)
        sp = spool.Spool(state, max_bytes=10**12)
        sp.recover()
        got = [number(b) for b in sp.batches()]
        # every acknowledged record, in order; at most one more (written, not yet printed)
        assert got[: last + 1] == list(range(last + 1))
        assert len(got) - (last + 1) in (0, 1)
        assert sp.bad_records == 0
        # the next writer goes on after the last intact record, torn tail or not
        first = len(got)
