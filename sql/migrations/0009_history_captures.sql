-- Metric history as one row per capture (issue 13, second step).
--
-- 0007 stored a value row only when a series changed. Measured on a year of 100 accounts
-- (bench/RESULTS.md §7) that cost 46 bytes per polled value: a change row is 74 bytes (tuple,
-- line pointer, index entry) and 45 % of polled values change, so change detection cannot
-- reach 30 bytes, and its write path (a series row per media and metric, change detection,
-- late-capture repair) halved the write rate. Now every capture (one insights poll, listing or
-- webhook of one media) is one row holding all its values in an integer[] aligned with its key
-- set: ~12 bytes per value on the heap, one index entry per capture instead of per value, no
-- change detection on write, and every polled value is stored exactly as served.
--
--   metric_key            dictionary: (metric, period, breakdown, dimension) -> key_id (0007)
--   metric_key_set        dictionary: the sorted key_ids one capture carried (0007)
--   media_capture         one row per capture: when, the key set, is_final, vals integer[]
--                         (vals[i] is the value of key_ids[i]) and wide numeric[] (NULL unless
--                         a value is not a whole number that fits in integer: then vals[i] is
--                         NULL and wide[i] holds it exactly)
--   media_metric_current  one row per media and key set: its latest capture, maintained on
--                         write, so "latest" reads what exists now (a media has a row per key
--                         set it was captured with: posts one, stories two, more after Meta
--                         retires a metric)
--   media_capture_carried per media and key set, its last capture before the retention horizon
--                         when it was captured again after it: "value at t" stays answerable
--                         for every kept t once older months are dropped
--
-- media_capture is range-partitioned by month (UTC) like 0007's tables; account history
-- (account_metric_value) is unchanged.

-- ---------------------------------------------------------------------------- out of the way

drop function media_metric_at(timestamptz);
drop view media_metric_history;
drop view media_metric_latest;
drop view story_final_metrics;
drop view media_metric;

-- 0007's tables give their names (and their partitions' and indexes' names) to the new ones
alter table media_capture rename to media_capture_0007;
alter index media_capture_pkey rename to media_capture_0007_pkey;
alter table media_metric_current rename to media_metric_current_0007;
alter index media_metric_current_pkey rename to media_metric_current_0007_pkey;
alter table media_metric_current_0007
    rename constraint media_metric_current_media_id_fkey to media_metric_current_0007_media_id_fkey;
alter index media_metric_current_media_id_key_id_key rename to media_metric_current_0007_key;
do $$
declare
    part  record;
    index record;
begin
    for part in
        select c.relname::text as relname
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'media_capture_0007'::regclass
    loop
        for index in
            select ic.relname::text as relname
            from pg_index x join pg_class ic on ic.oid = x.indexrelid
            where x.indrelid = part.relname::regclass
        loop
            execute format('alter index %I rename to %I', index.relname, 'old_' || index.relname);
        end loop;
        execute format('alter table %I rename to %I', part.relname, 'old_' || part.relname);
    end loop;
end
$$;

-- ---------------------------------------------------------------------------- the tables

create table media_capture (
    -- 8-byte columns first, then the arrays (short varlena headers need no alignment)
    captured_at timestamptz not null,
    media_id    bigint not null,
    key_set_id  integer not null,
    is_final    boolean not null,
    vals        integer[] not null,
    wide        numeric[],
    -- media first: every read is of some media; captured_at next: "the capture at or before
    -- t" and "the captures in a range" are index range scans
    primary key (media_id, captured_at, key_set_id),
    check (wide is null or cardinality(wide) = cardinality(vals))
) partition by range (captured_at);

comment on table media_capture is
    'Media metric history: one row per capture (insights poll, listing, webhook) of a media, '
    'with every value it carried. vals[i] (or wide[i]) is the value of metric_key_set.key_ids[i].';
comment on column media_capture.captured_at is 'When the capture was taken.';
comment on column media_capture.media_id is 'media.media_id_num: the Instagram media id as a number.';
comment on column media_capture.key_set_id is 'metric_key_set: which keys (metric, breakdown, dimension) the values are of, in order.';
comment on column media_capture.is_final is 'This capture was a story''s final snapshot before expiry.';
comment on column media_capture.vals is 'The values that are whole numbers fitting in integer (NULL where wide holds it).';
comment on column media_capture.wide is 'NULL, or the values vals cannot hold (rates, counts past 2^31) at their positions, exactly.';

create table media_metric_current (
    media_id          bigint not null references media (media_id_num),
    key_set_id        integer not null,
    captured_at       timestamptz not null,
    first_captured_at timestamptz not null,
    is_final          boolean not null,
    vals              integer[] not null,
    wide              numeric[],
    primary key (media_id, key_set_id)
) with (fillfactor = 70);  -- room for HOT updates: every capture rewrites its row

comment on table media_metric_current is
    'Per media and key set, its latest capture (maintained on write): what media_metric_latest reads.';
comment on column media_metric_current.captured_at is 'When the latest capture with this key set was taken.';
comment on column media_metric_current.first_captured_at is 'The first capture of the media with this key set.';

create table media_capture_carried (
    media_id    bigint not null,
    key_set_id  integer not null,
    captured_at timestamptz not null,
    is_final    boolean not null,
    vals        integer[] not null,
    wide        numeric[],
    primary key (media_id, key_set_id)
);

comment on table media_capture_carried is
    'Per media and key set captured again after the retention horizon, its last capture before '
    'the horizon (its month was dropped): the value a series had when the kept history starts.';

-- ---------------------------------------------------------------------------- the data

select collector_ensure_partitions(
    'media_capture',
    least((select min(captured_at) from media_capture_0007), now()),
    greatest((select max(captured_at) from media_capture_0007), now() + interval '2 months')
);

-- every polled value of 0007's layout: the series' latest value row at or before the capture
-- (or its current value, when it has not changed since)
insert into media_capture (captured_at, media_id, key_set_id, is_final, vals, wide)
select c.captured_at, c.media_id, c.key_set_id, c.is_final,
       array_agg(case when f.fits then x.v::integer end order by u.ord),
       case when bool_and(f.fits) then null
            else array_agg(case when not f.fits then x.v end order by u.ord) end
from media_capture_0007 c
join metric_key_set ks on ks.key_set_id = c.key_set_id
cross join lateral unnest(ks.key_ids) with ordinality as u (key_id, ord)
join media_metric_current_0007 s on s.media_id = c.media_id and s.key_id = u.key_id
cross join lateral (
    select case when s.changed_at <= c.captured_at then s.value else (
        select coalesce(v.value, v.value_wide)
        from media_metric_value v
        where v.series_id = s.series_id and v.captured_at <= c.captured_at
        order by v.captured_at desc
        limit 1
    ) end as v
) x
cross join lateral (
    select x.v = trunc(x.v) and x.v between -2147483648 and 2147483647 as fits
) f
group by c.captured_at, c.media_id, c.key_set_id, c.is_final
order by c.captured_at, c.media_id;

insert into media_metric_current (
    media_id, key_set_id, captured_at, first_captured_at, is_final, vals, wide
)
select distinct on (media_id, key_set_id)
       media_id, key_set_id, captured_at,
       min(captured_at) over (partition by media_id, key_set_id),
       is_final, vals, wide
from media_capture
order by media_id, key_set_id, captured_at desc;

-- retention: 0007 kept one horizon for its two media tables
insert into history_retention (relation, horizon)
select 'media_capture', max(horizon)
from history_retention
where relation in ('media_capture', 'media_metric_value')
having max(horizon) is not null
on conflict (relation) do update set horizon = excluded.horizon;
delete from history_retention where relation = 'media_metric_value';
delete from history_compacted
where partition_name like 'media_capture_%' or partition_name like 'media_metric_value_%';

drop table media_metric_value;
drop table media_capture_0007;
drop table media_metric_current_0007;

-- ---------------------------------------------------------------------------- retention

create or replace function collector_maintain(
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
-- keep: forever). Before media capture months go, each media's last capture before the
-- horizon is kept in media_capture_carried when the media was captured again after it, so
-- "value at t" stays answerable for every kept t.
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
    if parent = 'media_capture' then
        insert into media_capture_carried as r (
            media_id, key_set_id, captured_at, is_final, vals, wide
        )
        select d.media_id, d.key_set_id, d.captured_at, d.is_final, d.vals, d.wide
        from (
            select distinct on (h.media_id, h.key_set_id) h.*
            from media_capture h
            where h.captured_at < horizon
            order by h.media_id, h.key_set_id, h.captured_at desc
        ) d
        join media_metric_current s on s.media_id = d.media_id and s.key_set_id = d.key_set_id
        where s.captured_at >= horizon
        on conflict (media_id, key_set_id) do update set
            captured_at = excluded.captured_at,
            is_final = excluded.is_final,
            vals = excluded.vals,
            wide = excluded.wide
        where excluded.captured_at > r.captured_at;
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

-- ---------------------------------------------------------------------------- views

-- Every polled value: one row per metric, breakdown value and capture (0006's table, as a view).
create view media_metric as
select
    m.media_id,
    k.metric,
    k.breakdown,
    k.dimension,
    coalesce(u.v::numeric, u.w) as value,
    c.captured_at,
    c.is_final
from media_capture c
join media m on m.media_id_num = c.media_id
join metric_key_set ks on ks.key_set_id = c.key_set_id
cross join lateral unnest(ks.key_ids, c.vals, c.wide) as u (key_id, v, w)
join metric_key k on k.key_id = u.key_id;

comment on view media_metric is
    'Media metric history, one row per metric, breakdown value and capture: every polled value.';
comment on column media_metric.media_id is 'Instagram media id.';
comment on column media_metric.metric is 'Graph API metric name (reach, views, saved, …) or field (like_count).';
comment on column media_metric.breakdown is 'Breakdown name (e.g. story_navigation_action_type), or '''' for the total.';
comment on column media_metric.dimension is 'Breakdown value, lower-cased (e.g. tap_forward), or '''' for the total.';
comment on column media_metric.value is 'The metric value at captured_at.';
comment on column media_metric.captured_at is 'When the capture was taken.';
comment on column media_metric.is_final is 'This capture was a story''s final snapshot before expiry.';

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
    l.value,
    l.captured_at,
    l.is_final
from media m
join account a on a.ig_user_id = m.ig_user_id
cross join lateral (
    -- a series in several key sets (a story's reach, in its polls and in its final): the newest
    select distinct on (u.key_id) u.key_id, coalesce(u.v::numeric, u.w) as value, c.captured_at,
           c.is_final
    from media_metric_current c
    join metric_key_set ks on ks.key_set_id = c.key_set_id
    cross join lateral unnest(ks.key_ids, c.vals, c.wide) as u (key_id, v, w)
    where c.media_id = m.media_id_num
    order by u.key_id, c.captured_at desc
) l
join metric_key k on k.key_id = l.key_id;

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
    v.metric,
    v.breakdown,
    v.dimension,
    v.value,
    v.captured_at,
    coalesce(v.is_final, false) as is_final,
    m.expires_at - v.captured_at as lead_before_expiry,
    m.insights_status,
    m.insights_status_reason,
    m.final_captured_at,
    m.final_source,
    m.missed_reason,
    m.missed_at
from media m
join account a on a.ig_user_id = m.ig_user_id
left join lateral (
    select c.captured_at
    from media_capture c
    where c.media_id = m.media_id_num
      and c.captured_at >= coalesce(m.posted_at, '-infinity')
      and (m.final_captured_at is null or c.captured_at = m.final_captured_at)
    order by c.captured_at desc
    limit 1
) last on true
left join lateral (
    select k.metric, k.breakdown, k.dimension, coalesce(u.v::numeric, u.w) as value,
           c.captured_at, c.is_final
    from media_capture c
    join metric_key_set ks on ks.key_set_id = c.key_set_id
    cross join lateral unnest(ks.key_ids, c.vals, c.wide) as u (key_id, v, w)
    join metric_key k on k.key_id = u.key_id
    where c.media_id = m.media_id_num
      and c.captured_at = last.captured_at
) v on true
where m.is_story;

comment on view story_final_metrics is
    'Every story with the metrics of one capture (one row per metric, breakdown, dimension): its '
    'final snapshot when it has one (final_source says poll or webhook), else its last capture; '
    'never a mix of two. A story without any captured metric (below the viewer threshold) '
    'appears once, with NULL metric columns, its insights_status and its missed_reason.';

-- The capture of one media and key set in effect at a time: its current row when that is no
-- newer than t, else the capture at or before t (one index lookup), else what retention
-- carried; no row before the first. A set-returning SQL function like this one is inlined
-- where it is called (a plain lateral subquery in the plan).
create function media_capture_at(c media_metric_current, as_of timestamptz)
returns table (captured_at timestamptz, is_final boolean, vals integer[], wide numeric[])
language sql
stable
as $$
select c.captured_at, c.is_final, c.vals, c.wide
where c.captured_at <= as_of
union all
select h.captured_at, h.is_final, h.vals, h.wide
from (
    select h.captured_at, h.is_final, h.vals, h.wide
    from media_capture h
    where c.captured_at > as_of
      and h.media_id = c.media_id
      and h.key_set_id = c.key_set_id
      -- bounds that prune the partitions the lookup visits
      and h.captured_at >= c.first_captured_at
      and h.captured_at <= as_of
    order by h.captured_at desc
    limit 1
) h
union all
select r.captured_at, r.is_final, r.vals, r.wide
from media_capture_carried r
where c.captured_at > as_of
  and r.media_id = c.media_id
  and r.key_set_id = c.key_set_id
  and r.captured_at <= as_of
order by 1 desc
limit 1
$$;

comment on function media_capture_at(media_metric_current, timestamptz) is
    'The capture of a media and key set (a media_metric_current row) in effect at a time.';

-- "Value at t": per media and key set, media_capture_at. A SQL function like this one is
-- inlined into the calling query, so a filter on account or media narrows the scan before any
-- history is read.
create function media_metric_at(as_of timestamptz, metrics text[] default null)
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
    confirmed_at timestamptz,
    is_final boolean
)
language sql
stable
as $$
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
    l.value,
    l.captured_at,
    l.is_final
from media m
join account a on a.ig_user_id = m.ig_user_id
cross join lateral (
    -- a series in several key sets (a story's reach, in its polls and its final): the newest
    select distinct on (u.key_id) u.key_id, coalesce(u.v::numeric, u.w) as value, x.captured_at,
           x.is_final
    from media_metric_current c
    join metric_key_set ks on ks.key_set_id = c.key_set_id
    cross join lateral media_capture_at(c, as_of) x
    cross join lateral unnest(ks.key_ids, x.vals, x.wide) as u (key_id, v, w)
    where c.media_id = m.media_id_num
      and c.first_captured_at <= as_of
      and (metrics is null or u.key_id = any (
          array(select mk.key_id from metric_key mk where mk.metric = any (metrics))
      ))
    order by u.key_id, x.captured_at desc
) l
join metric_key k on k.key_id = l.key_id
$$;

comment on function media_metric_at(timestamptz, text[]) is
    'Every media metric series as it stood at a time: its value and the capture that gave it '
    '(confirmed_at); metrics, when given, keeps only those metrics. Use as a table: '
    'select … from media_metric_at(t).';

-- Every change of every series, with the interval it held for. Computed per media (a lateral
-- over its captures), so that a filter on the account or the media is applied before any
-- history is read, and each window sorts one media's captures only.
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
    x.value,
    x.valid_from,
    x.valid_until,
    x.series_last_captured_at
from media m
join account a on a.ig_user_id = m.ig_user_id
cross join lateral (
    select q.key_id,
           q.value,
           q.captured_at as valid_from,
           lead(q.captured_at) over (partition by q.key_id order by q.captured_at) as valid_until,
           q.series_last_captured_at
    from (
        select p.key_id, p.value, p.captured_at,
               p.value is distinct from lag(p.value) over (
                   partition by p.key_id order by p.captured_at
               ) as changed,
               max(p.captured_at) over (partition by p.key_id) as series_last_captured_at
        from (
            select u.key_id, coalesce(u.v::numeric, u.w) as value, c.captured_at
            from (
                select h.captured_at, h.key_set_id, h.vals, h.wide
                from media_capture h
                where h.media_id = m.media_id_num
                  and h.captured_at >= coalesce(m.posted_at, '-infinity')
                union all
                select r.captured_at, r.key_set_id, r.vals, r.wide
                from media_capture_carried r
                where r.media_id = m.media_id_num
            ) c
            join metric_key_set ks on ks.key_set_id = c.key_set_id
            cross join lateral unnest(ks.key_ids, c.vals, c.wide) as u (key_id, v, w)
        ) p
    ) q
    where q.changed
) x
join metric_key k on k.key_id = x.key_id;

comment on view media_metric_history is
    'Media metric history, one row per change: the value a series took at valid_from and kept '
    'until valid_until (NULL: still current). For a time range use media_metric_changes(t1, t2), '
    'which reads only that range.';

-- A series over a range: the value of each series at `since` (as media_metric_at gives it),
-- then every change in (since, until]. Computed per account (a lateral over its media), so that
-- a filter on the account applies first and the window sorts integers only.
create function media_metric_changes(
    since timestamptz, until timestamptz, metrics text[] default null
)
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
    valid_until timestamptz,
    previous_value numeric
)
language sql
stable
as $$
select
    m.media_id, m.ig_user_id, a.name, m.media_product_type, m.is_story, m.posted_at,
    k.metric, k.breakdown, k.dimension, x.value, x.captured_at, x.valid_until, x.previous_value
from account a
cross join lateral (
    select q.media_id, q.key_id, q.value, q.captured_at, q.previous_value,
           lead(q.captured_at) over (
               partition by q.media_id, q.key_id order by q.captured_at
           ) as valid_until
    from (
        select p.media_id, p.key_id, p.value, p.captured_at,
               lag(p.value) over series as previous_value,
               p.value is distinct from lag(p.value) over series as changed
        from (
            -- the baseline: per media and key set, the capture that gave its values at `since`
            select (s.c).media_id, u.key_id, coalesce(u.v::numeric, u.w) as value, x.captured_at
            from media bm
            cross join lateral (
                -- per media through the primary key (offset 0 keeps the planner from turning
                -- this into a scan of every account's current rows)
                select c
                from media_metric_current c
                where c.media_id = bm.media_id_num
                  and c.first_captured_at <= since
                  -- only media captured in the range (with every key set of theirs: a key
                  -- can be in several, a story's reach in its polls' and its final's)
                  and exists (
                      select 1
                      from media_metric_current n
                      where n.media_id = bm.media_id_num and n.captured_at > since
                  )
                offset 0
            ) s
            join metric_key_set ks on ks.key_set_id = (s.c).key_set_id
            cross join lateral media_capture_at(s.c, since) x
            cross join lateral unnest(ks.key_ids, x.vals, x.wide) as u (key_id, v, w)
            where bm.ig_user_id = a.ig_user_id
              and (metrics is null or u.key_id = any (
                  array(select mk.key_id from metric_key mk where mk.metric = any (metrics))
              ))
            union all
            -- the captures in the range, per media through the primary key (offset 0: not a
            -- scan of every account's month joined to this account's media)
            select h.media_id, u.key_id, coalesce(u.v::numeric, u.w), h.captured_at
            from media hm
            cross join lateral (
                select h.*
                from media_capture h
                where h.media_id = hm.media_id_num
                  and h.captured_at > since
                  and h.captured_at <= until
                offset 0
            ) h
            join metric_key_set ks on ks.key_set_id = h.key_set_id
            cross join lateral (
                -- every value, or only the asked metrics' (found by position, not unnested)
                select u.key_id, u.v, u.w
                from unnest(ks.key_ids, h.vals, h.wide) as u (key_id, v, w)
                where metrics is null
                union all
                select wk.key_id, h.vals[p.i], h.wide[p.i]
                from unnest(
                    array(select mk.key_id from metric_key mk where mk.metric = any (metrics))
                ) as wk (key_id)
                cross join lateral (select array_position(ks.key_ids, wk.key_id) as i) p
                where metrics is not null and p.i is not null
            ) u
            where hm.ig_user_id = a.ig_user_id
        ) p
        window series as (partition by p.media_id, p.key_id order by p.captured_at)
    ) q
    where q.changed and q.captured_at > since
) x
join media m on m.media_id_num = x.media_id
join metric_key k on k.key_id = x.key_id
$$;

comment on function media_metric_changes(timestamptz, timestamptz, text[]) is
    'Every change of every media metric series in (since, until]: the value, when it was first '
    'captured (valid_from), the next change in the range (valid_until; NULL: none up to until) '
    'and the value before (previous_value; NULL: the series'' first capture); metrics, when '
    'given, keeps only those metrics (read before the rest, so faster). Use as a table.';

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
comment on column story_final_metrics.value is 'The metric value in that capture.';
comment on column story_final_metrics.captured_at is 'When that capture was taken.';
comment on column story_final_metrics.is_final is
    'The capture was the story''s final snapshot before expiry.';
comment on column story_final_metrics.lead_before_expiry is
    'expires_at - captured_at: how long before the story''s insights vanished these values were taken.';
comment on column story_final_metrics.insights_status is
    'Outcome of the story''s last insights poll (ok, below_threshold, gone, unavailable).';
comment on column story_final_metrics.insights_status_reason is 'The API''s message for that outcome, if any.';
comment on column story_final_metrics.final_captured_at is 'When the final snapshot was taken, if it was.';
comment on column story_final_metrics.final_source is
    'poll (the collector''s own final call, with the navigation breakdown) or webhook.';
comment on column story_final_metrics.missed_reason is
    'Why the story has no final snapshot (below_threshold, token_parked, throttled, process_down, '
    'retries_exhausted, gone, not_polled); NULL when it has one or is still live.';
comment on column story_final_metrics.missed_at is 'When the miss was recorded.';

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
