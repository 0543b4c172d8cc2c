"""Rows per second of ``Store.write`` against a raw asyncpg COPY of the same rows.

Usage: ``.venv/bin/python bench/write_path.py [--rows 200000] [--batch 2000]``.

A fresh migrated database ``bench_write``; accounts and media first (through ``Store.write``,
not timed), then N ``media_metric`` rows (17-digit media ids, 8 metrics per media, one capture)
through ``Store.write`` in batches of ``--batch`` (each batch is what the collector writes: one
transaction, COPY into the session's stage table, INSERT … ON CONFLICT DO NOTHING into the
real table). Then the same rows by ``copy_records_to_table`` into an identical fresh table
(same columns, primary key and foreign key to ``media``), once in batches of the same size
(one transaction each) and once as one COPY. Same process, same database, same run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import common

from collector import models, schema, store

DB = "bench_write"
METRICS = (
    "reach",
    "views",
    "saved",
    "shares",
    "likes",
    "comments",
    "total_interactions",
    "follows",
)
ACCOUNTS = 100


def make_rows(n: int) -> tuple[list[models.Media], list[models.MediaMetric]]:
    rng = random.Random(6)
    captured = datetime(2026, 11, 1, 12, tzinfo=UTC)
    media: list[models.Media] = []
    rows: list[models.MediaMetric] = []
    for i in range((n + len(METRICS) - 1) // len(METRICS)):
        account = models.IgUserId(f"178414{i % ACCOUNTS:011d}")
        media_id = models.MediaId(f"{17900000000000000 + i * 7919}")
        media.append(
            models.Media(
                media_id=media_id,
                ig_user_id=account,
                media_type="IMAGE",
                media_product_type="FEED",
                posted_at=captured - timedelta(days=i % 700),
                permalink=f"https://www.instagram.com/p/{media_id}/",
                caption="a caption of ordinary length for a post, with a #tag",
                expires_at=None,
                seen_at=captured,
            )
        )
        for metric in METRICS:
            if len(rows) < n:
                rows.append(
                    models.MediaMetric(
                        media_id, metric, "", "", rng.randrange(0, 200_000), captured, False
                    )
                )
    return media, rows


def records(rows: list[models.MediaMetric]) -> list[tuple[object, ...]]:
    return [
        (r.media_id, r.metric, r.breakdown, r.dimension, Decimal(r.value), r.captured_at, False)
        for r in rows
    ]


async def run(n: int, size: int) -> dict[str, float]:
    dsn = await common.fresh_database(DB)
    conn = await asyncpg.connect(dsn)
    try:
        await schema.migrate(conn)
        media, rows = make_rows(n)
        st = await store.Store.open(dsn)
        try:
            for i in range(0, len(media), 5000):
                await st.write(models.Batch(media=media[i : i + 5000]))
            await conn.execute("checkpoint")
            started = time.perf_counter()
            for i in range(0, len(rows), size):
                await st.write(models.Batch(media_metrics=rows[i : i + size]))
            store_s = time.perf_counter() - started
        finally:
            await st.close()
        assert await conn.fetchval("select count(*) from media_metric") == n
        columns = ["media_id", "metric", "breakdown", "dimension", "value", "captured_at"]
        columns.append("is_final")
        results = {"store": n / store_s}
        for label, chunk in (("copy_batched", size), ("copy_one", n)):
            await conn.execute("drop table if exists media_metric_raw")
            await conn.execute(
                "create table media_metric_raw (like media_metric including all, "
                "foreign key (media_id) references media)"
            )
            await conn.execute("checkpoint")
            recs = records(rows)  # built outside the timing, as the store's tuples are not
            started = time.perf_counter()
            for i in range(0, len(recs), chunk):
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "media_metric_raw", records=recs[i : i + chunk], columns=columns
                    )
            results[label] = n / (time.perf_counter() - started)
        await conn.execute("drop table media_metric_raw")
    finally:
        await conn.close()
        await common.drop_database(DB)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"# {common.machine()}; commit {common.git_commit()}", flush=True)
    best: dict[str, float] = {}
    for attempt in range(1, args.repeat + 1):
        res = asyncio.run(run(args.rows, args.batch))
        for k, v in res.items():
            best[k] = max(best.get(k, 0.0), v)
        print(
            f"run {attempt}: Store.write {res['store']:,.0f} rows/s; raw COPY in batches of "
            f"{args.batch} {res['copy_batched']:,.0f} rows/s; one COPY {res['copy_one']:,.0f} "
            f"rows/s; Store.write = {res['store'] / res['copy_batched']:.0%} of batched COPY, "
            f"{res['store'] / res['copy_one']:.0%} of one COPY",
            flush=True,
        )
    print(
        f"best of {args.repeat}: Store.write {best['store']:,.0f} rows/s = "
        f"{best['store'] / best['copy_batched']:.0%} of batched COPY "
        f"({best['copy_batched']:,.0f}), {best['store'] / best['copy_one']:.0%} of one COPY "
        f"({best['copy_one']:,.0f}); target >= 50%"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
