"""The writer never drops a batch it was handed: cancelled flushes, refused records, a spool
that cannot take rows, and the memory bound past which rows are dropped (counted, logged)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import structlog

from collector import models, spool, writer
from collector import store as store_mod

from ..pgproxy import PgProxy

T0 = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
UID = models.IgUserId("17841400000000001")


def _batch(media_id: str, metrics: int, *, caption: str | None = "ok") -> models.Batch:
    mid = models.MediaId(media_id)
    return models.Batch(
        media=[
            models.Media(mid, UID, "IMAGE", "FEED", T0, None, caption, None, T0),
        ],
        media_metrics=[
            models.MediaMetric(mid, f"m{i}", "", "", i, T0 + timedelta(seconds=i))
            for i in range(metrics)
        ],
    )


def _writer(
    st: store_mod.Store,
    directory: Path,
    *,
    flush_rows: int = 2000,
    memory_max_rows: int = writer.MEMORY_MAX_ROWS,
) -> writer.Writer:
    return writer.Writer(
        st,
        spool.Spool(directory, max_bytes=10**9),
        flush_rows=flush_rows,
        memory_max_rows=memory_max_rows,
    )


async def _metric_rows(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval("select count(*) from media_metric")
    return n


async def test_a_cancelled_flush_keeps_every_row(
    store: store_mod.Store, db_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    wr = _writer(store, tmp_path, flush_rows=10**6)
    await wr.write(_batch("1", 500))
    assert wr.pending_rows == 501
    flushing = asyncio.create_task(wr.flush())
    await asyncio.sleep(0)  # the flush has taken the buffer and is writing
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    # nothing was written and nothing was lost: it is all still there
    assert await _metric_rows(db_conn) + wr.pending_rows - 1 == 500
    await wr.flush()
    assert wr.pending_rows == 0
    assert await _metric_rows(db_conn) == 500


@pytest.mark.parametrize("yields", [1, 2, 3, 5, 8, 13, 21])
async def test_a_flush_cancelled_anywhere_loses_nothing(
    store: store_mod.Store, db_conn: asyncpg.Connection, tmp_path: Path, yields: int
) -> None:
    wr = _writer(store, tmp_path, flush_rows=10**6)
    await wr.write(_batch("1", 300))
    flushing = asyncio.create_task(wr.flush())
    for _ in range(yields):
        await asyncio.sleep(0)
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    if wr.pending_rows:  # cancelled before the commit: the batch waits whole
        assert wr.pending_rows == 301
        assert await _metric_rows(db_conn) == 0
    await wr.close()
    assert await _metric_rows(db_conn) == 300


async def test_a_refused_record_is_set_aside_and_the_rest_lands(
    store: store_mod.Store, db_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    wr = _writer(store, tmp_path)
    batch = _batch("1", 200)
    batch.extend(_batch("2", 3, caption="a lone surrogate \ud800 in a caption"))
    batch.extend(_batch("3", 4, caption="a NUL \x00 byte"))
    with structlog.testing.capture_logs() as logs:
        await wr.write(batch)
        await wr.flush()
    # the two media rows PostgreSQL cannot take are set aside, with their metrics (whose media
    # row is missing); every other record landed
    assert await _metric_rows(db_conn) == 200
    stored = await db_conn.fetch("select media_id from media order by media_id")
    assert [r["media_id"] for r in stored] == ["1"]
    kept = [json.loads(line) for line in wr.rejected_path.read_text().splitlines()]
    assert {k["kind"] for k in kept} == {"media", "media_metrics"}
    assert len(kept) == 2 + 3 + 4
    assert wr.rows_quarantined == 9
    assert all(k["error"] for k in kept)
    assert any(e["event"] == "record_rejected" for e in logs)
    assert wr.pending_rows == 0


async def test_a_spool_that_refuses_rows_keeps_them_in_memory_until_it_or_the_database_is_back(
    proxy: PgProxy, db_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    st = await store_mod.Store.open(proxy.dsn, connect_timeout=1, command_timeout=3)
    try:
        wr = _writer(st, tmp_path)
        await proxy.cut()
        # the spool file cannot be opened for writing (a directory stands in its place): the
        # same failure a full or read-only disk gives the append
        wr.spool.path.mkdir()
        with structlog.testing.capture_logs() as logs:
            await wr.write(_batch("1", 50))
            await wr.flush()
            await wr.write(_batch("2", 50))
            await wr.flush()
        assert wr.degraded
        assert wr.backpressure
        assert wr.pending_rows == 102
        assert not any(e["event"] == "batch_spooled" for e in logs)
        assert sum(e["event"] == "spool_write_failed" for e in logs) == 1
        # the disk is back: the rows go to the spool, in order
        wr.spool.path.rmdir()
        await wr.flush()
        assert (wr.degraded, wr.pending_rows, wr.spool.count()) == (False, 0, 2)
        # and the database: the spool is replayed
        await proxy.restore()
        assert await wr.replay()
        assert await _metric_rows(db_conn) == 100
    finally:
        await st.close()


async def test_past_the_memory_bound_the_oldest_rows_are_dropped_and_counted(
    proxy: PgProxy, tmp_path: Path
) -> None:
    st = await store_mod.Store.open(proxy.dsn, connect_timeout=1, command_timeout=3)
    try:
        wr = _writer(st, tmp_path, memory_max_rows=120)
        await proxy.cut()
        wr.spool.path.mkdir()
        with structlog.testing.capture_logs() as logs:
            for n in range(3):
                await wr.write(_batch(str(n), 50))
                await wr.flush()
        assert wr.pending_rows <= 120
        assert wr.rows_dropped == 51
        dropped = [e for e in logs if e["event"] == "rows_dropped"]
        assert len(dropped) == 1
        assert dropped[0]["rows"] == 51
    finally:
        await st.close()
