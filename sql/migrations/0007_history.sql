-- Metric history that stays small and fast at a year of 1,000 accounts (issue 13).
--
-- media_metric was one 165-byte row per polled value (text ids, numeric, a five-column primary
-- key), and most rows repeated the previous value of their series. Now:
--
--   metric_key            dictionary: (metric, period, breakdown, dimension) -> key_id
--   metric_key_set        dictionary: the sorted set of keys one capture carried
--   media_metric_current  one row per series (media x key): the latest value, when it was last
--                         confirmed (captured_at) and since when it has had it (changed_at);
--                         maintained on write, so "latest" reads what exists now
--   media_capture         one row per capture (poll) of a media: when, which keys, is_final
--   media_metric_value    one row per series and change: the value from that capture on
--   account_metric_value  account_metric with numeric ids and the key dictionary
--
-- The value of a series at a capture is its latest media_metric_value row at or before that
-- capture (or the current value when the series has not changed since): the old per-capture
-- rows are exactly reconstructible, and the view media_metric does so. Captures, value rows
-- and account buckets are range-partitioned by month (UTC); the collector creates partitions
-- (collector_ensure_partitions: Store.maintain ahead of time, and Store.write, before its
-- transaction, for a month it has not seen yet) and drops whole months past the configured
-- retention (collector_maintain), never DELETEs.
--
-- Ids: the API's ids are digits; the history keys them as bigint (8 bytes instead of 18-19 of
-- text). account and media keep their text ids, read by every other query; a stored
-- generated bigint copy (ig_user_id_num, media_id_num) is what the history references.
-- Values: integer when the value is a whole number that fits (nearly all: counts), else
-- value_wide numeric (rates such as reels_skip_rate, counts past 2^31): 8 bytes less per row
-- than bigint once alignment is counted, and exact either way.

alter table account
    add column ig_user_id_num bigint generated always as (ig_user_id::bigint) stored;
alter table account add constraint account_ig_user_id_num_key unique (ig_user_id_num);
comment on column account.ig_user_id_num is
    'ig_user_id as a number: the key the metric history references.';

alter table media
    add column media_id_num bigint generated always as (media_id::bigint) stored;
alter table media add constraint media_media_id_num_key unique (media_id_num);
comment on column media.media_id_num is 'media_id as a number: the key the metric history references.';

create table metric_key (
    key_id    integer generated always as identity primary key,
    metric    text not null,
    period    text not null default '',
    breakdown text not null default '',
    dimension text not null default '',
    unique (metric, period, breakdown, dimension)
);

comment on table metric_key is
    'Dictionary of metric series keys: a metric name with its period (account metrics), '
    'breakdown name and breakdown value; history rows carry key_id.';

create table metric_key_set (
    key_set_id integer generated always as identity primary key,
    key_ids    integer[] not null unique
);

comment on table metric_key_set is
    'Dictionary of the sets of keys (sorted key_id arrays) that one media capture carried.';

create table history_retention (
    relation text primary key,
    horizon  timestamptz not null
);

comment on table history_retention is
    'Per partitioned history table: rows older than horizon were dropped (retention) and are '
    'not written again (a late replay would otherwise recreate a dropped month).';

create table history_compacted (
    partition_name text primary key,
    compacted_at   timestamptz not null
);

comment on table history_compacted is
    'Partitions of finished months whose indexes were rebuilt packed (Store.maintain): rows '
    'arrive in time order but keyed by series, so a month''s indexes fill to about two thirds '
    'while it is written.';

-- ---------------------------------------------------------------------------- partitions

create function collector_ensure_partitions(parent text, first timestamptz, last timestamptz)
returns setof text
language plpgsql
as $$
-- Creates the monthly (UTC) partitions of parent covering [first, last]; returns the names of
-- those it created. Creating a partition locks the parent exclusively: callers run it in a
-- transaction of its own (one parent each), never inside a write that holds other locks.
declare
    month   timestamp;
    name    text;
    horizon timestamptz;
begin
    if first is null or last is null then
        return;
    end if;
    -- months dropped by retention are not recreated
    select r.horizon into horizon from history_retention r where r.relation = parent;
    month := date_trunc('month', first at time zone 'UTC');
    while month <= last at time zone 'UTC' loop
        name := parent || '_' || to_char(month, 'YYYY_MM');
        if (month + interval '1 month') at time zone 'UTC' > coalesce(horizon, '-infinity')
           and to_regclass(name) is null then
            -- two writers reaching a new month at once: the second waits for the first,
            -- then finds the partition (or fails to create it again: fine too)
            perform pg_advisory_xact_lock(hashtext('collector_partition'), hashtext(name));
            begin
                execute format(
                    'create table %I partition of %I for values from (%L) to (%L)',
                    name, parent, month::text || '+00', (month + interval '1 month')::text || '+00'
                );
                return next name;
            exception when duplicate_table or unique_violation then
                null;
            end;
        end if;
        month := month + interval '1 month';
    end loop;
end
$$;

comment on function collector_ensure_partitions(text, timestamptz, timestamptz) is
    'Create the missing monthly (UTC) partitions of a history table between two times.';

create function collector_maintain(
    parent text,
    now timestamptz,
    months_ahead integer,
    keep interval
)
returns table (action text, partition_name text)
language plpgsql
as $$
-- One history table: partitions ahead of time (this month and months_ahead more), and
-- retention as partition drops: a month goes once all of it is older than now - keep (NULL
-- keep: forever). Before value months go, the last value of each series that changed after
-- them is carried to the first kept instant, so "value at t" stays answerable for every kept t.
declare
    horizon timestamptz;
    part    record;
begin
    return query
        select 'created'::text, made
        from collector_ensure_partitions(
            parent, now,
            (date_trunc('month', now at time zone 'UTC') + make_interval(months => months_ahead))
                at time zone 'UTC'
        ) as made;
    if keep is null then
        return;
    end if;
    -- the end of the newest month wholly older than now - keep
    select max(p.upper_bound) into horizon
    from (
        select (to_date(right(c.relname, 7), 'YYYY_MM') + interval '1 month')
                   at time zone 'UTC' as upper_bound
        from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        where i.inhparent = parent::regclass
          and c.relname ~ ('^' || parent || '_[0-9]{4}_[0-9]{2}$')
    ) p
    where p.upper_bound <= now - keep;
    if horizon is null then
        return;
    end if;
    -- from now on a write older than the horizon is dropped instead of recreating its month
    insert into history_retention as r (relation, horizon) values (parent, horizon)
    on conflict (relation) do update set horizon = greatest(r.horizon, excluded.horizon);
    if parent = 'media_metric_value' then
        perform collector_ensure_partitions(parent, horizon, horizon);
        insert into media_metric_value (captured_at, series_id, value, value_wide)
        select horizon, d.series_id, d.value, d.value_wide
        from (
            select distinct on (v.series_id) v.series_id, v.value, v.value_wide
            from media_metric_value v
            where v.captured_at < horizon
            order by v.series_id, v.captured_at desc
        ) d
        join media_metric_current s on s.series_id = d.series_id
        where s.changed_at >= horizon
          and not exists (
              select 1 from media_metric_value n
              where n.series_id = d.series_id and n.captured_at = horizon
          );
    end if;
    for part in
        select c.relname::text as relname
        from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        where i.inhparent = parent::regclass
          and c.relname ~ ('^' || parent || '_[0-9]{4}_[0-9]{2}$')
          and (to_date(right(c.relname, 7), 'YYYY_MM') + interval '1 month')
              at time zone 'UTC' <= horizon
        order by c.relname
    loop
        execute format('drop table %I', part.relname);
        return query select 'dropped'::text, part.relname;
    end loop;
end
$$;

comment on function collector_maintain(text, timestamptz, integer, interval) is
    'Create a history table''s partitions ahead of time and drop its months past retention '
    '(Store.maintain).';

-- ---------------------------------------------------------------------------- media history
--
-- No foreign keys on the partitioned tables: creating a partition would then lock the
-- referenced tables too, which deadlocks against concurrent writers, and every history row
-- would pay a trigger. Their ids come from media_metric_current (which references media and
-- metric_key) and the dictionaries, in the same statements that write them.

create table media_metric_current (
    series_id         integer generated always as identity primary key,
    media_id          bigint not null references media (media_id_num),
    -- no foreign key: the dictionary is written by the same statements, and a trigger per
    -- new series costs more than it guards
    key_id            integer not null,
    -- NULL only inside the writing transaction (a series being created)
    value             numeric,
    captured_at       timestamptz not null,
    changed_at        timestamptz not null,
    first_captured_at timestamptz not null,
    is_final          boolean not null,
    unique (media_id, key_id)
) with (fillfactor = 70);  -- room for HOT updates: every poll updates captured_at

comment on table media_metric_current is
    'One row per media metric series (media, key): its latest value, maintained on write.';
comment on column media_metric_current.captured_at is 'When the value was last captured (confirmed).';
comment on column media_metric_current.changed_at is 'Since which capture the series has had this value.';
comment on column media_metric_current.first_captured_at is 'The first capture of the series.';

create table media_capture (
    media_id    bigint not null,
    captured_at timestamptz not null,
    key_set_id  integer not null,
    is_final    boolean not null,
    primary key (media_id, captured_at)
) partition by range (captured_at);

comment on table media_capture is
    'One row per capture (insights poll, listing, webhook) of a media: when, the keys it '
    'carried, and whether it was a story''s final snapshot.';

create table media_metric_value (
    -- columns in this order: 8-byte first, so that a row is 40 bytes without padding
    captured_at timestamptz not null,
    series_id   integer not null,
    value       integer,
    value_wide  numeric,
    primary key (series_id, captured_at),
    check ((value is null) <> (value_wide is null))
) partition by range (captured_at);

comment on table media_metric_value is
    'Media metric history, change-only: a row when a series takes a new value (or is first '
    'seen); the value holds for every later capture of the series until the next row.';
comment on column media_metric_value.value is 'The value when it is a whole number that fits in integer.';
comment on column media_metric_value.value_wide is 'Otherwise the value (rates, counts past 2^31).';

-- ---------------------------------------------------------------------------- account history

create table account_metric_value (
    ig_user_id        bigint not null,
    end_time          timestamptz not null,
    captured_at       timestamptz not null,
    first_captured_at timestamptz not null,
    key_id            integer not null,
    value             integer,
    value_wide        numeric,
    primary key (ig_user_id, key_id, end_time),
    check ((value is null) <> (value_wide is null))
) partition by range (end_time);

comment on table account_metric_value is
    'Account metrics per period bucket (key: metric, period, breakdown, dimension); upserted '
    'because Meta revises the last 48 h.';

-- ---------------------------------------------------------------------------- the data

-- every partition the existing data needs, and the next two months
select collector_ensure_partitions(
    'media_capture',
    least((select min(captured_at) from media_metric), now()),
    greatest((select max(captured_at) from media_metric), now() + interval '2 months')
);
select collector_ensure_partitions(
    'media_metric_value',
    least((select min(captured_at) from media_metric), now()),
    greatest((select max(captured_at) from media_metric), now() + interval '2 months')
);
select collector_ensure_partitions(
    'account_metric_value',
    least((select min(end_time) from account_metric), now()),
    greatest((select max(end_time) from account_metric), now() + interval '2 months')
);

insert into metric_key (metric, period, breakdown, dimension)
select metric, '', breakdown, dimension from media_metric
union
select metric, period, breakdown, dimension from account_metric
order by 1, 2, 3, 4;

create temp table migrating on commit drop as
select mm.media_id::bigint as media_id,
       k.key_id,
       mm.captured_at,
       mm.value,
       mm.is_final,
       mm.value is distinct from lag(mm.value) over series as changed,
       lead(mm.captured_at) over series is null as latest
from media_metric mm
join metric_key k
    on (k.metric, k.period, k.breakdown, k.dimension) = (mm.metric, '', mm.breakdown, mm.dimension)
window series as (partition by mm.media_id, k.key_id order by mm.captured_at);

insert into media_metric_current (
    media_id, key_id, value, captured_at, changed_at, first_captured_at, is_final
)
select media_id, key_id,
       (array_agg(value) filter (where latest))[1],
       max(captured_at),
       max(captured_at) filter (where changed),
       min(captured_at),
       bool_or(is_final) filter (where latest)
from migrating
group by media_id, key_id
order by media_id, key_id;

insert into media_metric_value (captured_at, series_id, value, value_wide)
select m.captured_at, s.series_id,
       case when m.value = trunc(m.value) and m.value between -2147483648 and 2147483647
           then m.value::integer end,
       case when not (m.value = trunc(m.value) and m.value between -2147483648 and 2147483647)
           then m.value end
from migrating m
join media_metric_current s on s.media_id = m.media_id and s.key_id = m.key_id
where m.changed
order by m.captured_at, s.series_id;

insert into metric_key_set (key_ids)
select distinct array_agg(key_id order by key_id)
from migrating
group by media_id, captured_at;

insert into media_capture (media_id, captured_at, key_set_id, is_final)
select c.media_id, c.captured_at, ks.key_set_id, c.is_final
from (
    select media_id, captured_at, array_agg(key_id order by key_id) as key_ids,
           bool_or(is_final) as is_final
    from migrating
    group by media_id, captured_at
) c
join metric_key_set ks on ks.key_ids = c.key_ids
order by c.captured_at, c.media_id;

insert into account_metric_value (
    ig_user_id, end_time, captured_at, first_captured_at, key_id, value, value_wide
)
select am.ig_user_id::bigint, am.end_time, am.captured_at, am.first_captured_at, k.key_id,
       case when am.value = trunc(am.value) and am.value between -2147483648 and 2147483647
           then am.value::integer end,
       case when not (am.value = trunc(am.value) and am.value between -2147483648 and 2147483647)
           then am.value end
from account_metric am
join metric_key k
    on (k.metric, k.period, k.breakdown, k.dimension) = (am.metric, am.period, am.breakdown, am.dimension)
order by am.end_time;

drop view media_metric_latest;
drop view story_final_metrics;
drop view account_metric_daily;
drop table media_metric;
drop table account_metric;

-- ---------------------------------------------------------------------------- views

-- JIT off for this database: the views below are index lookups per account that run in
-- 10-200 ms, and their estimated costs (laterals over many partitions) trip jit_above_cost,
-- whose compilation then adds 1-2 s to each read (measured in bench/RESULTS.md). Only the
-- database's owner may do this: elsewhere the migration says so and goes on.
do $$
begin
    execute format('alter database %I set jit = off', current_database());
exception when insufficient_privilege then
    raise notice 'not the owner of the database: set jit = off for it to keep the views fast';
end
$$;

-- The old tables, as views with the same columns and rows: one row per metric, breakdown value
-- and capture. Queries written for them keep working; the new views below are the fast paths.
create view media_metric as
select
    m.media_id,
    k.metric,
    k.breakdown,
    k.dimension,
    case when s.changed_at <= c.captured_at then s.value else h.value end as value,
    c.captured_at,
    c.is_final
from media_capture c
join media m on m.media_id_num = c.media_id
join metric_key_set ks on ks.key_set_id = c.key_set_id
cross join lateral unnest(ks.key_ids) as u (key_id)
join metric_key k on k.key_id = u.key_id
join media_metric_current s on s.media_id = c.media_id and s.key_id = u.key_id
left join lateral (
    select coalesce(v.value, v.value_wide) as value
    from media_metric_value v
    where s.changed_at > c.captured_at
      and v.series_id = s.series_id
      and v.captured_at <= c.captured_at
    order by v.captured_at desc
    limit 1
) h on true;

comment on view media_metric is
    'Media metric history, one row per metric, breakdown value and capture (every poll), '
    'reconstructed from media_capture and the change-only media_metric_value.';
comment on column media_metric.media_id is 'Instagram media id.';
comment on column media_metric.metric is 'Graph API metric name (reach, views, saved, …) or field (like_count).';
comment on column media_metric.breakdown is 'Breakdown name (e.g. story_navigation_action_type), or '''' for the total.';
comment on column media_metric.dimension is 'Breakdown value, lower-cased (e.g. tap_forward), or '''' for the total.';
comment on column media_metric.value is 'The metric value at captured_at.';
comment on column media_metric.captured_at is 'When the capture was taken.';
comment on column media_metric.is_final is 'This capture was a story''s final snapshot before expiry.';

create view account_metric as
select
    a.ig_user_id,
    k.metric,
    k.period,
    k.breakdown,
    k.dimension,
    v.end_time,
    coalesce(v.value, v.value_wide) as value,
    v.captured_at,
    v.first_captured_at
from account_metric_value v
join account a on a.ig_user_id_num = v.ig_user_id
join metric_key k on k.key_id = v.key_id;

comment on view account_metric is
    'Account metrics per period bucket, with names and text ids (account_metric_value decoded).';
comment on column account_metric.ig_user_id is 'Instagram user id of the account.';
comment on column account_metric.metric is 'Graph API metric name (reach, follower_count, …).';
comment on column account_metric.period is 'day (a daily total) or lifetime (a demographic snapshot).';
comment on column account_metric.breakdown is 'Breakdown name (e.g. country), or '''' for the total.';
comment on column account_metric.dimension is 'Breakdown value (e.g. DE), or '''' for the total.';
comment on column account_metric.end_time is
    'Exclusive end of the bucket (midnight America/Los_Angeles for day buckets).';
comment on column account_metric.value is 'The value for the bucket (latest revision).';
comment on column account_metric.captured_at is 'When the current value was last captured.';
comment on column account_metric.first_captured_at is 'When this bucket was first captured.';

create view media_metric_latest as
select
    m.media_id,
    m.ig_user_id,
    a.name as account_name,
    a.username,
    m.media_type,
    m.media_product_type,
    m.is_story,
    m.posted_at,
    m.permalink,
    k.metric,
    k.breakdown,
    k.dimension,
    s.value,
    s.captured_at,
    s.is_final,
    s.changed_at
from media_metric_current s
join media m on m.media_id_num = s.media_id
join account a on a.ig_user_id = m.ig_user_id
join metric_key k on k.key_id = s.key_id;

comment on view media_metric_latest is
    'The latest captured value of every media metric (one row per media, metric, breakdown, '
    'dimension), with the media and its account; read from media_metric_current.';

create view story_final_metrics as
select
    m.ig_user_id,
    a.name as account_name,
    a.username,
    m.media_id,
    m.posted_at,
    m.expires_at,
    m.permalink,
    k.metric,
    k.breakdown,
    k.dimension,
    l.value,
    l.captured_at,
    coalesce(l.is_final, false) as is_final,
    m.expires_at - l.captured_at as lead_before_expiry,
    m.insights_status,
    m.insights_status_reason,
    m.final_captured_at
from media m
join account a on a.ig_user_id = m.ig_user_id
left join media_metric_current l on l.media_id = m.media_id_num
left join metric_key k on k.key_id = l.key_id
where m.is_story;

comment on view story_final_metrics is
    'Every story with its last captured metrics (one row per metric, breakdown, dimension) and '
    'how long before expiry they were taken. A story without any captured metric (e.g. below '
    'the viewer threshold) appears once, with NULL metric columns and its insights_status.';

create view account_metric_daily as
select
    a.ig_user_id,
    a.name as account_name,
    a.username,
    (v.end_time at time zone 'America/Los_Angeles')::date - 1 as day,
    k.metric,
    k.period,
    k.breakdown,
    k.dimension,
    coalesce(v.value, v.value_wide) as value,
    v.end_time,
    v.captured_at,
    v.first_captured_at
from account_metric_value v
join account a on a.ig_user_id_num = v.ig_user_id
join metric_key k on k.key_id = v.key_id;

comment on view account_metric_daily is
    'Account metrics by Pacific day (Meta''s day buckets end at midnight America/Los_Angeles). '
    'period = ''day'': the day''s total; period = ''lifetime'' (demographics): the snapshot '
    'taken that day. Recent days may still be revised by Meta (see captured_at).';

-- Every change of every media series with the interval it held for: "value at t" of one media
-- is the row with valid_from <= t < coalesce(valid_until, 'infinity'); a series over a range
-- (t1, t2] is media_metric_at(t1) plus the rows with valid_from in (t1, t2]. A filter on
-- valid_from prunes partitions and uses the index; valid_until is looked up per row returned
-- (never for a series' latest row, which has none).
create view media_metric_history as
select
    m.media_id,
    m.ig_user_id,
    a.name as account_name,
    m.media_product_type,
    m.is_story,
    m.posted_at,
    k.metric,
    k.breakdown,
    k.dimension,
    coalesce(v.value, v.value_wide) as value,
    v.captured_at as valid_from,
    n.captured_at as valid_until,
    s.captured_at as series_last_captured_at
from media_metric_value v
join media_metric_current s on s.series_id = v.series_id
join media m on m.media_id_num = s.media_id
join account a on a.ig_user_id = m.ig_user_id
join metric_key k on k.key_id = s.key_id
left join lateral (
    select nv.captured_at
    from media_metric_value nv
    where v.captured_at < s.changed_at
      and nv.series_id = v.series_id
      and nv.captured_at > v.captured_at
      and nv.captured_at <= s.changed_at
    order by nv.captured_at
    limit 1
) n on true;

comment on view media_metric_history is
    'Media metric history, one row per change: the value a series took at valid_from and kept '
    'until valid_until (NULL: still current). Under retention, the first row of a series that '
    'changed after the horizon may be its value carried to the horizon.';

-- A view with a parameter: SQL functions like this one are inlined into the calling query, so a
-- filter on account or media narrows the scan before any history is read.
create function media_metric_at(as_of timestamptz)
returns table (
    media_id text,
    ig_user_id text,
    account_name text,
    media_product_type text,
    is_story boolean,
    posted_at timestamptz,
    metric text,
    breakdown text,
    dimension text,
    value numeric,
    valid_from timestamptz,
    confirmed_at timestamptz,
    is_final boolean
)
language sql
stable
as $$
-- Lookups are scalar subqueries inside CASE: they run only for the series that need them (a
-- series unchanged since t, or confirmed before t, reads nothing but its current row).
select
    m.media_id,
    m.ig_user_id,
    a.name,
    m.media_product_type,
    m.is_story,
    m.posted_at,
    k.metric,
    k.breakdown,
    k.dimension,
    case when s.changed_at <= as_of then s.value else (
        select coalesce(v.value, v.value_wide)
        from media_metric_value v
        where v.series_id = s.series_id
          and v.captured_at >= s.first_captured_at
          and v.captured_at <= as_of
        order by v.captured_at desc
        limit 1
    ) end,
    case when s.changed_at <= as_of then s.changed_at else (
        select v.captured_at
        from media_metric_value v
        where v.series_id = s.series_id
          and v.captured_at >= s.first_captured_at
          and v.captured_at <= as_of
        order by v.captured_at desc
        limit 1
    ) end,
    case
        when s.captured_at <= as_of then s.captured_at
        when s.key_id = any (lc.key_ids) then lc.captured_at
        else (
            -- a series missing from that capture (a story's breakdown, taken at its final)
            select mc.captured_at
            from media_capture mc
            join metric_key_set ks on ks.key_set_id = mc.key_set_id
            where mc.media_id = s.media_id
              and mc.captured_at >= s.first_captured_at
              and mc.captured_at <= as_of
              and s.key_id = any (ks.key_ids)
            order by mc.captured_at desc
            limit 1
        )
    end,
    case
        when s.captured_at <= as_of then s.is_final
        when s.key_id = any (lc.key_ids) then lc.is_final
        else (
            select mc.is_final
            from media_capture mc
            join metric_key_set ks on ks.key_set_id = mc.key_set_id
            where mc.media_id = s.media_id
              and mc.captured_at >= s.first_captured_at
              and mc.captured_at <= as_of
              and s.key_id = any (ks.key_ids)
            order by mc.captured_at desc
            limit 1
        )
    end
from media m
join account a on a.ig_user_id = m.ig_user_id
-- the media's last capture at or before t: one lookup per media, not per series
left join lateral (
    select mc.captured_at, mc.is_final, ks.key_ids
    from media_capture mc
    join metric_key_set ks on ks.key_set_id = mc.key_set_id
    where mc.media_id = m.media_id_num
      -- bounds that prune the partitions a lookup visits: no capture before posting, nor
      -- after a story's expiry
      and mc.captured_at >= coalesce(m.posted_at, '-infinity')
      and mc.captured_at <= least(as_of, coalesce(m.expires_at, as_of))
    order by mc.captured_at desc
    limit 1
) lc on true
join media_metric_current s on s.media_id = m.media_id_num
join metric_key k on k.key_id = s.key_id
where s.first_captured_at <= as_of
$$;

comment on function media_metric_at(timestamptz) is
    'Every media metric series as it stood at a time: value, since when (valid_from), the last '
    'capture that confirmed it (confirmed_at). Use as a table: select … from media_metric_at(t).';

-- Columns that mean the same in every view.
comment on column media_metric_latest.media_id is 'Instagram media id.';
comment on column media_metric_latest.ig_user_id is 'Instagram user id of the account.';
comment on column media_metric_latest.account_name is 'The account''s name in the collector configuration.';
comment on column media_metric_latest.username is 'The account''s Instagram username.';
comment on column media_metric_latest.media_type is 'IMAGE, VIDEO or CAROUSEL_ALBUM.';
comment on column media_metric_latest.media_product_type is 'FEED, REELS or STORY.';
comment on column media_metric_latest.is_story is 'The media is a story (its insights vanish 24 h after posting).';
comment on column media_metric_latest.posted_at is 'When the media was published.';
comment on column media_metric_latest.permalink is 'Link to the media on Instagram.';
comment on column media_metric_latest.metric is 'Graph API metric name (reach, views, saved, …) or field (like_count).';
comment on column media_metric_latest.breakdown is 'Breakdown name, or '''' for the total.';
comment on column media_metric_latest.dimension is 'Breakdown value (lower-cased), or '''' for the total.';
comment on column media_metric_latest.value is 'The metric value at captured_at.';
comment on column media_metric_latest.captured_at is 'When this value was last captured (confirmed).';
comment on column media_metric_latest.is_final is 'This capture was a story''s final snapshot before expiry.';
comment on column media_metric_latest.changed_at is 'The first capture that found this value (it has not changed since).';

comment on column story_final_metrics.ig_user_id is 'Instagram user id of the account.';
comment on column story_final_metrics.account_name is 'The account''s name in the collector configuration.';
comment on column story_final_metrics.username is 'The account''s Instagram username.';
comment on column story_final_metrics.media_id is 'Instagram media id of the story.';
comment on column story_final_metrics.posted_at is 'When the story was published.';
comment on column story_final_metrics.expires_at is 'When the story (and its insights) expired: posted_at + 24 h.';
comment on column story_final_metrics.permalink is 'Link to the story on Instagram.';
comment on column story_final_metrics.metric is 'Graph API metric name (reach, views, navigation, …); NULL if none was captured.';
comment on column story_final_metrics.breakdown is 'Breakdown name (e.g. story_navigation_action_type), or '''' for the total.';
comment on column story_final_metrics.dimension is 'Breakdown value (e.g. tap_forward), or '''' for the total.';
comment on column story_final_metrics.value is 'The metric value at its last capture.';
comment on column story_final_metrics.captured_at is 'When this last value was captured.';
comment on column story_final_metrics.is_final is
    'The last capture was the planned final snapshot before expiry.';
comment on column story_final_metrics.lead_before_expiry is
    'expires_at - captured_at: how long before the story''s insights vanished this value was taken.';
comment on column story_final_metrics.insights_status is
    'Outcome of the story''s last insights poll (ok, below_threshold, gone, unavailable).';
comment on column story_final_metrics.insights_status_reason is 'Detail of insights_status (e.g. the API''s message).';
comment on column story_final_metrics.final_captured_at is 'When the final snapshot was taken, if it was.';

comment on column account_metric_daily.ig_user_id is 'Instagram user id of the account.';
comment on column account_metric_daily.account_name is 'The account''s name in the collector configuration.';
comment on column account_metric_daily.username is 'The account''s Instagram username.';
-- as 0005_account_source worded it
comment on column account_metric_daily.day is
    'The Pacific calendar day of the bucket: (end_time at time zone America/Los_Angeles)::date - 1. '
    'Meta documents Pacific day buckets; if it cuts an account''s days in that account''s own time '
    'zone (reported for some accounts), use end_time, which is stored exactly as returned.';
comment on column account_metric_daily.metric is 'Graph API metric name (reach, follower_count, …).';
comment on column account_metric_daily.period is 'day (a daily total) or lifetime (a demographic snapshot).';
comment on column account_metric_daily.breakdown is 'Breakdown name (e.g. country), or '''' for the total.';
comment on column account_metric_daily.dimension is 'Breakdown value (e.g. DE), or '''' for the total.';
comment on column account_metric_daily.value is 'The value for that day (latest revision).';
comment on column account_metric_daily.end_time is 'Exclusive end of the bucket, as sent by Meta.';
comment on column account_metric_daily.captured_at is 'When the current value was last captured.';
comment on column account_metric_daily.first_captured_at is 'When this bucket was first captured.';

comment on column media_metric_history.media_id is 'Instagram media id.';
comment on column media_metric_history.ig_user_id is 'Instagram user id of the account.';
comment on column media_metric_history.account_name is 'The account''s name in the collector configuration.';
comment on column media_metric_history.media_product_type is 'FEED, REELS or STORY.';
comment on column media_metric_history.is_story is 'The media is a story.';
comment on column media_metric_history.posted_at is 'When the media was published.';
comment on column media_metric_history.metric is 'Graph API metric name (reach, views, saved, …) or field (like_count).';
comment on column media_metric_history.breakdown is 'Breakdown name, or '''' for the total.';
comment on column media_metric_history.dimension is 'Breakdown value (lower-cased), or '''' for the total.';
comment on column media_metric_history.value is 'The value the series took at valid_from.';
comment on column media_metric_history.valid_from is 'The capture that first found this value.';
comment on column media_metric_history.valid_until is
    'The capture that found the next value (exclusive end); NULL while it is the current value.';
comment on column media_metric_history.series_last_captured_at is
    'When the series was last captured at all (its latest confirmation).';
