"""A year of metric history for N accounts, generated in SQL: its size and how fast it reads.

Usage: ``.venv/bin/python bench/history.py [--accounts 100] [--days 365] [--repeat 5]
[--keep] [--variants] [--reads-only]``.

A fresh database ``bench_history`` (plus ``$BENCH_DB_SUFFIX``) is migrated, then filled by
``generate_series`` (no polling, no Python per row) with what the default cadences would have
written over ``--days`` days ending now:

- per account one post a day, over the window and the two years before it (media are polled
  until they are two years old), a third of them reels; three stories a day in the window;
- post insights at the default media tiers (< 2 d hourly, < 14 d every 6 h, < 90 d daily,
  < 2 y weekly), 10 metrics each; story insights at discovery (+5 min), every 2 h and a final
  snapshot 25 min before expiry, 8 metrics, plus the 4 navigation breakdown values at the final;
- values as lifetime counters do: most of the growth in the first days (1 - e^(-age/36h)), then a
  slow logarithmic tail, scaled per media and metric (views up to ~21,000, follows a few), so
  big counters change at most polls and small ones rarely, as in the issue's measurements;
- account insights: 17 day metrics and 200 demographic values (2 metrics by age, gender, 45
  countries, 45 cities) per account and day.

Rows go in month by month in capture order, with every index in place, as the collector would
write them: one ``media_capture`` row per capture with all its values. Then: rows, bytes
per polled value (tables and indexes), table and index sizes, and the time (median and worst of
``--repeat`` runs, after one warm-up) of every view read for one account (``northwind``) and of
every query of ``sql/examples.sql`` as written. ``--variants`` also measures the storage choices
one by one on 10^6 rows. ``--keep`` leaves the database for exploring; ``--reads-only`` times
the reads again on a database an earlier ``--keep`` left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import common

from collector import schema, store

DB = "bench_history"

SETUP = """
create table bench_tier (period_h double precision, start_h double precision, polls integer);
insert into bench_tier values (1, 0, 48), (6, 48, 48), (24, 336, 76), (168, 2160, 91);

create table bench_metric (no integer, kind text, metric text, breakdown text, dimension text,
                           factor double precision);
-- no = the key_id: a story's reach is the same key as a post's
insert into bench_metric values
    (1, 'post', 'views', '', '', 1.0), (2, 'post', 'reach', '', '', 0.7),
    (3, 'post', 'likes', '', '', 0.05), (4, 'post', 'comments', '', '', 0.005),
    (5, 'post', 'saved', '', '', 0.01), (6, 'post', 'shares', '', '', 0.005),
    (7, 'post', 'total_interactions', '', '', 0.07), (8, 'post', 'follows', '', '', 0.001),
    (9, 'post', 'profile_visits', '', '', 0.01), (10, 'post', 'profile_activity', '', '', 0.012),
    (2, 'story', 'reach', '', '', 0.8), (1, 'story', 'views', '', '', 1.0),
    (11, 'story', 'replies', '', '', 0.01), (6, 'story', 'shares', '', '', 0.005),
    (7, 'story', 'total_interactions', '', '', 0.02), (8, 'story', 'follows', '', '', 0.002),
    (9, 'story', 'profile_visits', '', '', 0.02), (12, 'story', 'navigation', '', '', 0.8),
    (13, 'final', 'navigation', 'story_navigation_action_type', 'tap_forward', 0.6),
    (14, 'final', 'navigation', 'story_navigation_action_type', 'tap_back', 0.05),
    (15, 'final', 'navigation', 'story_navigation_action_type', 'tap_exit', 0.08),
    (16, 'final', 'navigation', 'story_navigation_action_type', 'swipe_forward', 0.05);

-- key ids equal bench_metric.no (the dictionary is empty after the migration)
insert into metric_key (key_id, metric, period, breakdown, dimension) overriding system value
select distinct on (no) no, metric, '', breakdown, dimension from bench_metric order by no;
insert into metric_key_set (key_set_id, key_ids) overriding system value values
    (1, array(select no from bench_metric where kind = 'post' order by no)),
    (2, array(select no from bench_metric where kind = 'story' order by no)),
    (3, array(select no from bench_metric where kind in ('story', 'final') order by no));
-- account keys: 17 day metrics, 2 demographic metrics x (7 ages, 3 genders, 45 countries,
-- 45 cities)
insert into metric_key (key_id, metric, period, breakdown, dimension) overriding system value
select 100 + n, case when n = 1 then 'reach' else 'day_metric_' || n end, 'day', '', ''
from generate_series(1, 17) n;
insert into metric_key (key_id, metric, period, breakdown, dimension) overriding system value
select 200 + row_number() over (), m, 'lifetime', b, d
from unnest(array['follower_demographics', 'engaged_audience_demographics']) m,
     lateral (
         select 'age', 'age_' || n from generate_series(1, 7) n
         union all select 'gender', g from unnest(array['F', 'M', 'U']) g
         union all select 'country', 'C' || n from generate_series(1, 45) n
         union all select 'city', 'City ' || n from generate_series(1, 45) n
     ) x (b, d);
select setval(pg_get_serial_sequence('metric_key', 'key_id'), 1000);
select setval(pg_get_serial_sequence('metric_key_set', 'key_set_id'), 100);

-- a lifetime counter: fast growth in the first days, then a slow tail (ages in hours)
create function bench_value(scale double precision, factor double precision,
                            age_h double precision, tau_h double precision)
returns integer language sql immutable as $$
    select floor(scale * factor * (1 - exp(-age_h / tau_h))
                 + case when tau_h > 12 then scale * factor * 0.02 * ln(1 + age_h / 168) else 0 end
           )::integer
$$;

insert into account (ig_user_id, name, enabled, status)
select (17841400000000000 + a)::text,
       case when a = 1 then 'northwind' else 'acct_' || lpad(a::text, 4, '0') end, true, 'ok'
from generate_series(1, $1::integer) a;

-- posts: one a day per account from two years before the window to its end
create table bench_post as
select a, j, (17900000000000000 + a::bigint * 100000 + j) as media_id,
       (a * 4000 + j) * 32 as series_base,
       $2::timestamptz - make_interval(days => 730 + $3::integer - j)
           + make_interval(mins => (a * 37) % 1440) as posted_at,
       1000 + (hashint8(a::bigint * 100000 + j) & 16383) + (hashint4(j) & 4095) as scale
from generate_series(1, $1::integer) a, generate_series(0, 730 + $3::integer - 1) j;
-- stories: three a day per account inside the window
create table bench_story as
select a, j, (18900000000000000 + a::bigint * 100000 + j) as media_id,
       (a * 4000 + 2000 + j) * 32 as series_base,
       $2::timestamptz - make_interval(days => $3::integer) + make_interval(hours => j * 8)
           + make_interval(mins => (a * 53) % 480) as posted_at,
       200 + (hashint8(a::bigint * 100000 + j) & 2047) as scale
from generate_series(1, $1::integer) a, generate_series(0, 3 * $3::integer - 1) j;

insert into media (media_id, ig_user_id, media_type, media_product_type, posted_at, permalink,
                   caption, first_seen_at, last_seen_at, last_polled_at, insights_status)
select media_id::text, (17841400000000000 + a)::text,
       case when j % 3 = 0 then 'VIDEO' else 'IMAGE' end,
       case when j % 3 = 0 then 'REELS' else 'FEED' end,
       posted_at, 'https://www.instagram.com/p/' || media_id || '/', 'a caption',
       posted_at, posted_at, posted_at, 'ok'
from bench_post;
insert into media (media_id, ig_user_id, media_type, media_product_type, posted_at,
                   expires_at, first_seen_at, last_seen_at, last_polled_at, insights_status,
                   final_captured_at)
select media_id::text, (17841400000000000 + a)::text, 'IMAGE', 'STORY', posted_at,
       posted_at + interval '24 hours', posted_at, posted_at, posted_at, 'ok',
       posted_at + interval '23 hours 35 minutes'
from bench_story;

-- every poll of every post and story inside the window
create table bench_poll (media_id bigint, series_base integer, scale integer,
                         captured_at timestamptz, age_h double precision,
                         prev_h double precision, first boolean, kind text, is_final boolean);
create function bench_story_ages() returns double precision[] language sql immutable as $$
    select array[5.0 / 60] || array(select 2.0 * n from generate_series(1, 11) n)
           || array[23 + 35.0 / 60]
$$;
"""

POLLS_OF_MONTH = """
insert into bench_poll
select p.media_id, p.series_base, p.scale, p.posted_at + make_interval(secs => age_h * 3600),
       age_h, age_h - t.period_h,
       p.posted_at + make_interval(secs => (age_h - t.period_h) * 3600) < $3 or age_h = 1,
       'post', false
from bench_post p
cross join bench_tier t
cross join lateral generate_series(
    greatest(1, ceil((extract(epoch from $1 - p.posted_at) / 3600 - t.start_h) / t.period_h)::int),
    least(t.polls, floor((extract(epoch from $2 - p.posted_at) / 3600 - t.start_h)
                         / t.period_h - 1e-9)::int)
) k
cross join lateral (select t.start_h + k * t.period_h as age_h) g
where p.posted_at < $2 and p.posted_at > $1 - interval '731 days'
union all
select s.media_id, s.series_base, s.scale, s.posted_at + make_interval(secs => ages[i] * 3600),
       ages[i], case when i > 1 then ages[i - 1] end, i = 1, 'story', i = cardinality(ages)
from bench_story s
cross join lateral (select bench_story_ages() as ages) a
cross join lateral generate_subscripts(a.ages, 1) i
where s.posted_at + make_interval(secs => ages[i] * 3600) >= $1
  and s.posted_at + make_interval(secs => ages[i] * 3600) < $2;
"""

CAPTURES = """
insert into media_capture (captured_at, media_id, key_set_id, is_final, vals)
select p.captured_at, p.media_id,
       case when p.kind = 'post' then 1 when p.is_final then 3 else 2 end, p.is_final,
       -- aligned with the key set: its key_ids are the bench_metric numbers in order
       array_agg(bench_value(p.scale, m.factor, p.age_h, p.tau) order by m.no)
from (select *, case when kind = 'post' then 36.0 else 4.0 end as tau from bench_poll) p
join bench_metric m
  on m.kind = p.kind or (m.kind = 'final' and p.kind = 'story' and p.is_final)
group by p.captured_at, p.media_id, p.kind, p.is_final
order by p.captured_at, p.media_id;
"""

#: how many polled values repeated the previous value of their series (reported, not stored
#: differently: every capture keeps all its values)
CHANGED = """
select count(*) filter (where p.first or m.kind = 'final'
                        or bench_value(p.scale, m.factor, p.age_h, p.tau)
                           <> bench_value(p.scale, m.factor, p.prev_h, p.tau))
from (select *, case when kind = 'post' then 36.0 else 4.0 end as tau from bench_poll) p
join bench_metric m
  on m.kind = p.kind or (m.kind = 'final' and p.kind = 'story' and p.is_final)
"""

POLLED = """
select sum(case when kind = 'post' then 10 when is_final then 12 else 8 end) from bench_poll
"""

ACCOUNT_OF_MONTH = """
insert into account_metric_value (ig_user_id, end_time, captured_at, first_captured_at, key_id,
                                  value)
select 17841400000000000 + a, d, d + interval '6 hours', d + interval '1 hour', k.key_id,
       (hashint8(a * 1000 + k.key_id + extract(epoch from d)::bigint) & 65535)
from generate_series(1, $3::integer) a
cross join generate_series($1::timestamptz, $2::timestamptz - interval '1 second',
                           interval '1 day') d
cross join metric_key k
where k.period <> ''
order by d;
"""

CURRENT = """
insert into media_metric_current (media_id, key_set_id, captured_at, first_captured_at, is_final,
                                  vals, wide)
select distinct on (media_id, key_set_id)
       media_id, key_set_id, captured_at,
       min(captured_at) over (partition by media_id, key_set_id), is_final, vals, wide
from media_capture
order by media_id, key_set_id, captured_at desc;
"""


def views(end: datetime) -> dict[str, tuple[str, list[Any]]]:
    """Every view read for one account (``northwind``): the SQL and its parameters."""
    week, month = end - timedelta(days=7), end - timedelta(days=30)
    half_year = end - timedelta(days=182)
    some_post = (
        "(select min(media_id) from media "
        "where ig_user_id = '17841400000000001' and posted_at > $1)"
    )
    return {
        "media_metric_latest (account)": (
            "select * from media_metric_latest where account_name = 'northwind'",
            [],
        ),
        "media_metric_latest (account, posts of 30 days, totals)": (
            "select * from media_metric_latest where account_name = 'northwind' "
            "and not is_story and breakdown = '' and posted_at > $1",
            [month],
        ),
        "media_metric_at(t - 7 d) (account)": (
            "select * from media_metric_at($1) where account_name = 'northwind'",
            [week],
        ),
        "media_metric_at(t - 182 d) (account)": (
            "select * from media_metric_at($1) where account_name = 'northwind'",
            [half_year],
        ),
        "media_metric_changes(t - 30 d, t) (account)": (
            "select * from media_metric_changes($1, $2) where account_name = 'northwind'",
            [month, end],
        ),
        "media_metric_changes(t - 30 d, t) (account, reach of posts)": (
            "select * from media_metric_changes($1, $2, array['reach']) "
            "where account_name = 'northwind' and not is_story and breakdown = ''",
            [month, end],
        ),
        "media_metric_changes(t - 30 d, t) (one post, no account filter)": (
            f"select * from media_metric_changes($1, $2) where media_id = {some_post}",
            [month, end],
        ),
        "media_metric_at(t - 7 d) (one post, no account filter)": (
            f"select * from media_metric_at($2) where media_id = {some_post}",
            [month, week],
        ),
        "media_metric_history (one post, all)": (
            f"select * from media_metric_history where media_id = {some_post}",
            [month],
        ),
        "media_metric (one post, every poll)": (
            f"select * from media_metric where media_id = {some_post}",
            [month],
        ),
        "story_final_metrics (account, 7 days)": (
            "select * from story_final_metrics where account_name = 'northwind' and posted_at > $1",
            [week],
        ),
        "account_metric_daily (account, 30 days)": (
            "select * from account_metric_daily where account_name = 'northwind' and end_time > $1",
            [month],
        ),
        "account_metric (account, 30 days)": (
            "select * from account_metric where ig_user_id = '17841400000000001' and end_time > $1",
            [month],
        ),
        "account_health (account)": (
            "select * from account_health where name = 'northwind'",
            [],
        ),
    }


SIZES = """
select parent, sum(pg_relation_size(relid)) as heap,
       sum(pg_indexes_size(relid)) as indexes,
       sum(pg_total_relation_size(relid)) as total,
       sum(greatest(c.reltuples, 0))::bigint as rows
from (
    -- a partitioned table is the sum of its partitions; a plain table is itself
    select t as parent, coalesce(pt.relid, t::regclass) as relid
    from unnest(array['media_capture', 'account_metric_value', 'media_metric_current',
                      'media_capture_carried', 'metric_key', 'metric_key_set', 'media',
                      'account']) t
    left join lateral (
        select relid from pg_partition_tree(t::regclass) where isleaf
    ) pt on true
) p
join pg_class c on c.oid = p.relid
group by parent
order by total desc
"""

#: row s of every variant: series s % 100000 (media series / 10, metric series % 10), captured
#: (s / 100000) hours after the start: time order, the way the collector writes
_ROW = "s % 100000 / 10 as m, s % 10 as k, (hashint4(s) & 65535) as val, \
$1::timestamptz + make_interval(hours => s / 100000) as at, s % 100000 as series"
VARIANTS = {
    "text ids, text names, numeric, 5-column key (the old media_metric)": (
        "create table v (media_id text, metric text, breakdown text, dimension text, "
        "value numeric, captured_at timestamptz, is_final boolean, "
        "primary key (media_id, metric, breakdown, dimension, captured_at))",
        "(17900000000000000 + m)::text, 'metric_' || k, '', '', val, at, false",
    ),
    "bigint media id, text names, numeric": (
        "create table v (media_id bigint, metric text, breakdown text, dimension text, "
        "value numeric, captured_at timestamptz, is_final boolean, "
        "primary key (media_id, metric, breakdown, dimension, captured_at))",
        "17900000000000000 + m, 'metric_' || k, '', '', val, at, false",
    ),
    "bigint media id, key_id (dictionary), numeric": (
        "create table v (media_id bigint, key_id integer, value numeric, "
        "captured_at timestamptz, primary key (media_id, key_id, captured_at))",
        "17900000000000000 + m, k, val, at",
    ),
    "series_id (current table), bigint value": (
        "create table v (captured_at timestamptz, value bigint, series_id integer, "
        "primary key (series_id, captured_at))",
        "at, val, series",
    ),
    "series_id, integer value + numeric fallback (0007: change rows)": (
        "create table v (captured_at timestamptz, series_id integer, value integer, "
        "value_wide numeric, primary key (series_id, captured_at))",
        "at, series, val",
    ),
}


def month_starts(start: datetime, end: datetime) -> list[datetime]:
    first = datetime(start.year, start.month, 1, tzinfo=UTC)
    months = []
    while first < end:
        months.append(first)
        first = (first + timedelta(days=32)).replace(day=1)
    return months


async def timed(
    conn: asyncpg.Connection, sql: str, args: list[Any], repeat: int
) -> tuple[float, float, int, float]:
    """Client-side median and worst ms (rows fetched and decoded), rows, and the server's
    median execution time (EXPLAIN ANALYZE, no rows sent)."""
    await conn.fetch(sql, *args)  # warm-up (plans, cache)
    times, server, n = [], [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        n = len(await conn.fetch(sql, *args))
        times.append((time.perf_counter() - began) * 1000)
        plan = await conn.fetchval(f"explain (analyze, timing off, format json) {sql}", *args)
        server.append(float(json.loads(plan)[0]["Execution Time"]))
    return statistics.median(times), max(times), n, statistics.median(server)


async def variants(conn: asyncpg.Connection, rows: int) -> None:
    print(
        f"\n# storage choices, {rows:,} rows each, written in capture order with the key in place"
    )
    print("\n| layout | heap B/row | index B/row | total B/row | total after REINDEX |")
    print("|---|---:|---:|---:|---:|")
    for label, (create, select) in VARIANTS.items():
        await conn.execute("drop table if exists v")
        await conn.execute(create)
        await conn.execute(
            f"insert into v select {select} from (select {_ROW} "
            "from generate_series(0, $2::integer - 1) s) r order by at, series",
            datetime(2026, 1, 1, tzinfo=UTC),
            rows,
        )
        await conn.execute("vacuum analyze v")
        heap = await conn.fetchval("select pg_relation_size('v')")
        index = await conn.fetchval("select pg_indexes_size('v')")
        await conn.execute("reindex table v")
        packed = await conn.fetchval("select pg_indexes_size('v')")
        print(
            f"| {label} | {heap / rows:.1f} | {index / rows:.1f} | {(heap + index) / rows:.1f} | "
            f"{(heap + packed) / rows:.1f} |"
        )
    # Chosen (0009): no change detection at all, one row per capture with its values in an
    # array aligned to the capture's key set (per value: the row divided by 10)
    await conn.execute("drop table v")
    await conn.execute(
        "create table v (captured_at timestamptz, media_id bigint, key_set_id integer, "
        "is_final boolean, vals integer[], wide numeric[], "
        "primary key (media_id, captured_at, key_set_id))"
    )
    await conn.execute(
        "insert into v select $1::timestamptz + make_interval(hours => c / 10000), "
        "17900000000000000 + c % 10000, 1, false, "
        "array(select (hashint4(c * 10 + i) & 65535) from generate_series(1, 10) i) "
        "from generate_series(0, $2::integer / 10 - 1) c order by c",
        datetime(2026, 1, 1, tzinfo=UTC),
        rows,
    )
    await conn.execute("vacuum analyze v")
    heap = await conn.fetchval("select pg_relation_size('v')")
    index = await conn.fetchval("select pg_indexes_size('v')")
    await conn.execute("reindex table v")
    packed = await conn.fetchval("select pg_indexes_size('v')")
    print(
        f"| a row per capture, 10 values in an integer[] (chosen, 0009; per value) | "
        f"{heap / rows:.1f} | {index / rows:.1f} | {(heap + index) / rows:.1f} | "
        f"{(heap + packed) / rows:.1f} |"
    )
    await conn.execute("drop table v")


async def report_sizes(
    conn: asyncpg.Connection, counts: dict[str, int], polled: int, accounts: int, title: str
) -> None:
    sizes = {r["parent"]: r for r in await conn.fetch(SIZES)}
    print(f"\n## sizes: {title}")
    print("\n| table | rows | heap MB | indexes MB | total MB | bytes per row |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in sizes.items():
        rows = counts.get(name, r["rows"])
        print(
            f"| {name} | {rows:,} | {r['heap'] / 2**20:,.1f} | {r['indexes'] / 2**20:,.1f} | "
            f"{r['total'] / 2**20:,.1f} | {r['total'] / max(rows, 1):,.1f} |"
        )
    media_bytes = sum(
        sizes[t]["total"]
        for t in (
            "media_capture",
            "media_metric_current",
            "media_capture_carried",
            "metric_key_set",
        )
    )
    captures = sizes["media_capture"]
    current = sizes["media_metric_current"]["total"]
    print(
        f"\nmedia history (captures + current + carried + key sets): {media_bytes / 2**20:,.0f} MB "
        f"= **{media_bytes / polled:.1f} bytes per polled value** incl. indexes "
        f"(captures {captures['total'] / polled:.1f}: heap {captures['heap'] / polled:.1f}, "
        f"index {captures['indexes'] / polled:.1f}; current {current / polled:.1f})"
    )
    acct = sizes["account_metric_value"]["total"]
    print(
        f"account history: {acct / 2**20:,.0f} MB = "
        f"{acct / max(counts['account_metric_value'], 1):.1f} bytes per bucket incl. indexes"
    )
    print(
        f"extrapolated to 1,000 accounts (x {1000 / accounts:g}): media history "
        f"{media_bytes * 1000 / accounts / 2**30:,.1f} GiB, account history "
        f"{acct * 1000 / accounts / 2**30:,.1f} GiB"
    )


async def report_reads(conn: asyncpg.Connection, end: datetime, repeat: int) -> None:
    # an analyst's session: the server's own work_mem, not the generation's
    await conn.execute("reset work_mem")
    work_mem = await conn.fetchval("show work_mem")
    print(
        f"\n# reads for one account (median / worst of {repeat} after a warm-up; "
        f"work_mem {work_mem})"
    )
    print("\n| read | rows | client median ms | client worst ms | server median ms |")
    print("|---|---:|---:|---:|---:|")
    reads = list(views(end).items()) + [
        (f"examples.sql `{name}`", (sql, []))
        for name, sql in schema.parse_named(schema.read_sql("examples.sql")).items()
    ]
    for label, (sql, params) in reads:
        median, worst, n, server = await timed(conn, sql, params, repeat)
        print(f"| {label} | {n:,} | {median:.1f} | {worst:.1f} | {server:.1f} |", flush=True)


async def reads_only(args: argparse.Namespace) -> None:
    """The reads again, on a history kept by an earlier ``--keep`` run."""
    dsn = common.ADMIN_DSN.rsplit("/", 1)[0] + "/" + common.database_name(DB)
    conn = await asyncpg.connect(dsn, command_timeout=None)
    try:
        last = await conn.fetchval("select max(captured_at) from media_capture")
        end = last.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        print(f"# the kept history, ending {end:%Y-%m-%d %H:%M} UTC")
        await report_reads(conn, end, args.repeat)
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:  # noqa: PLR0915 (one linear script)
    dsn = await common.fresh_database(DB)
    conn = await asyncpg.connect(dsn, command_timeout=None)
    await schema.migrate(conn)
    await conn.close()
    # a new session: the migration's database settings (jit = off) apply from here on
    conn = await asyncpg.connect(dsn, command_timeout=None)
    try:
        await conn.execute("set work_mem = '256MB'")
        if args.variants:
            await variants(conn, 1_000_000)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=args.days)
        months = month_starts(start, end)
        # the partitions, as Store.maintain / Store.write would have made them
        for parent in ("media_capture", "account_metric_value"):
            await conn.execute(
                "select collector_ensure_partitions($1, $2, $3)",
                parent,
                start,
                end + timedelta(days=62),
            )
        began = time.perf_counter()
        for statement in [s for s in SETUP.split(";\n") if s.strip()]:
            if "$" in statement.replace("$$", ""):
                params = [args.accounts, end, args.days]
                used = [p for i, p in enumerate(params, 1) if f"${i}" in statement]
                await conn.execute(statement, *used)
            else:
                await conn.execute(statement)
        polled = changed = 0
        for month in months:
            lo, hi = max(month, start), min((month + timedelta(days=32)).replace(day=1), end)
            t0 = time.perf_counter()
            await conn.execute("truncate bench_poll")
            await conn.execute(POLLS_OF_MONTH, lo, hi, start)
            polled += int(await conn.fetchval(POLLED) or 0)
            changed += int(await conn.fetchval(CHANGED) or 0)
            await conn.execute(CAPTURES)
            await conn.execute(ACCOUNT_OF_MONTH, lo, hi, args.accounts)
            print(
                f"  {lo:%Y-%m-%d} .. {hi:%Y-%m-%d}: {time.perf_counter() - t0:.0f} s, "
                f"{polled:,} polled values so far",
                flush=True,
            )
        await conn.execute(CURRENT)
        await conn.execute(
            "drop table bench_poll, bench_post, bench_story; "
            "drop function bench_value, bench_story_ages"
        )
        generated = time.perf_counter() - began
        await conn.execute("vacuum analyze")
        print(f"\n# generated in {generated:.0f} s (then vacuum analyze, as autovacuum would)")

        counts = {
            "media_capture": await conn.fetchval("select count(*) from media_capture"),
            "media_metric_current": await conn.fetchval(
                "select count(*) from media_metric_current"
            ),
            "account_metric_value": await conn.fetchval(
                "select count(*) from account_metric_value"
            ),
        }
        print(f"\n# {args.accounts} accounts x {args.days} days, ending {end:%Y-%m-%d %H:%M} UTC")
        print(
            f"polled media values: {polled:,} "
            f"({polled / args.accounts / args.days:,.0f} per account and day)"
        )
        print(
            f"values that changed since the previous poll of their series: {changed:,} = "
            f"{changed / polled:.1%} (stored all the same: a capture keeps every value)"
        )
        print(
            f"captures: {counts['media_capture']:,} "
            f"({polled / max(counts['media_capture'], 1):.1f} values each); "
            f"current rows (media x key set): {counts['media_metric_current']:,}"
        )
        print(f"account buckets: {counts['account_metric_value']:,}")
        await report_sizes(conn, counts, polled, args.accounts, "as written, indexes not compacted")
        st = await store.Store.open(dsn)
        try:
            t0 = time.perf_counter()
            done = await st.maintain(end)
            took = time.perf_counter() - t0
        finally:
            await st.close()
        compacted = sum(1 for action, _ in done if action == "compacted")
        await conn.execute("vacuum analyze")
        await report_sizes(
            conn,
            counts,
            polled,
            args.accounts,
            f"after Store.maintain: {compacted} finished months' indexes rebuilt packed in "
            f"{took:.0f} s; the current month stays as written",
        )

        await report_reads(conn, end, args.repeat)
    finally:
        await conn.close()
        if not args.keep:
            await common.drop_database(DB)
        else:
            print(f"\nkept: psql {dsn}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--variants", action="store_true", help="measure each storage choice")
    parser.add_argument(
        "--reads-only", action="store_true", help="only the reads, on a history kept by --keep"
    )
    args = parser.parse_args()
    if not 1 <= args.accounts <= 9999 or not 1 <= args.days <= 660:
        parser.error("--accounts must be 1-9999 and --days 1-660 (the ids are laid out for that)")
    print(f"# {common.machine()}; commit {common.git_commit()}", flush=True)
    print(f"# {' '.join(sys.argv)}", flush=True)
    asyncio.run(reads_only(args) if args.reads_only else run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
