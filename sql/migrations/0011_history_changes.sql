-- "A series over a range" read by capture, not by value (issue 13, third step).
--
-- 0009's media_metric_changes unnested every value of every capture in the range and sorted
-- them all by series, per account, to find the changes: 94,000 values for one account over 30
-- days, and a filter on one media still computed every account. Now it is computed per media
-- (a filter on the media or the account narrows first), and a media whose key sets share no
-- key (every post: its insights and its listing's fields) compares each capture with the one
-- before it of the same key set, array to array: the window sorts captures, not values, and
-- only the changed values are unnested. Media with a key in two key sets (a story's reach in
-- its polls and its final, a post across a retired metric) keep the value-by-value path. The
-- answers are the same row for row (tests/integration/test_history.py compares both with a
-- Python computation over every polled value); bench/RESULTS.md §10 has the timings.

-- The latest values and the value at t unnest a capture's arrays in the select list, where
-- set-returning functions run in lockstep (a NULL array gives NULLs) without the tuplestore a
-- function in FROM fills for every capture: the same rows, 10-20 % faster. The latest values
-- look each key's names up by key (top_media_last_30_days over 100 accounts: 59 -> 36 ms).
create or replace view media_metric_latest as
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
    cross join lateral (
        select unnest(ks.key_ids) as key_id, unnest(c.vals) as v, unnest(c.wide) as w
    ) u
    where c.media_id = m.media_id_num
    order by u.key_id, c.captured_at desc
) l
-- each key's names by its primary key (offset 0 keeps the lookup where it is): left to itself
-- the planner hashes all of metric_key again for every media
cross join lateral (
    select k.metric, k.breakdown, k.dimension
    from metric_key k
    where k.key_id = l.key_id
    offset 0
) k;

create or replace function media_metric_at(as_of timestamptz, metrics text[] default null)
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
    cross join lateral (
        select unnest(ks.key_ids) as key_id, unnest(x.vals) as v, unnest(x.wide) as w
    ) u
    where c.media_id = m.media_id_num
      and c.first_captured_at <= as_of
      and (metrics is null or u.key_id = any (
          array(select mk.key_id from metric_key mk where mk.metric = any (metrics))
      ))
    order by u.key_id, x.captured_at desc
) l
join metric_key k on k.key_id = l.key_id
$$;


create or replace function media_metric_changes(
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
join media m on m.ig_user_id = a.ig_user_id
-- per media (a lateral over its captures): a filter on the account, the media, is_story or
-- posted_at narrows the media before any history is read, and every sort is one media's
cross join lateral (
    -- whether two of the media's key sets share a key
    select coalesce(bool_or(s1.key_ids && s2.key_ids), false) as shares_keys
    from media_metric_current c1
    join media_metric_current c2
      on c2.media_id = m.media_id_num and c2.key_set_id > c1.key_set_id
    join metric_key_set s1 on s1.key_set_id = c1.key_set_id
    join metric_key_set s2 on s2.key_set_id = c2.key_set_id
    where c1.media_id = m.media_id_num
) sk
cross join lateral (
    -- key sets that share no key (a post: its insights and its listing's fields): each capture
    -- compared with the one before it of its key set, array to array (the one in effect at
    -- `since` first), and only the values that changed unnested
    select u.key_id, coalesce(u.v::numeric, u.w) as value, f.captured_at,
           case when f.previous_at is not null then coalesce(u.pv::numeric, u.pw) end
               as previous_value,
           lead(f.captured_at) over (partition by u.key_id order by f.captured_at)
               as valid_until
    from (
        select g.*,
               lag(g.captured_at) over w as previous_at,
               lag(g.vals) over w as pvals,
               lag(g.wide) over w as pwide
        from (
            select c.key_set_id, b.captured_at, b.vals, b.wide
            from media_metric_current c
            cross join lateral media_capture_at(c, since) b
            where c.media_id = m.media_id_num
              and c.captured_at > since
              and c.first_captured_at <= since
            union all
            select h.key_set_id, h.captured_at, h.vals, h.wide
            from media_capture h
            where h.media_id = m.media_id_num
              and h.captured_at > since
              and h.captured_at <= until
        ) g
        where not sk.shares_keys
        window w as (partition by g.key_set_id order by g.captured_at)
    ) f
    join metric_key_set ks on ks.key_set_id = f.key_set_id
    cross join lateral (
        -- every value, or only the asked metrics' (found by position); set-returning
        -- functions in the select list run in lockstep (a NULL array gives NULLs) without the
        -- tuplestore a function in FROM fills for every capture
        select unnest(ks.key_ids) as key_id, unnest(f.vals) as v, unnest(f.pvals) as pv,
               unnest(f.wide) as w, unnest(f.pwide) as pw
        where metrics is null
        union all
        select wk.key_id, f.vals[p.i], f.pvals[p.i], f.wide[p.i], f.pwide[p.i]
        from unnest(
            array(select mk.key_id from metric_key mk where mk.metric = any (metrics))
        ) as wk (key_id)
        cross join lateral (select array_position(ks.key_ids, wk.key_id) as i) p
        where metrics is not null and p.i is not null
    ) u
    where f.captured_at > since
      and (u.v, u.w) is distinct from (u.pv, u.pw)
    union all
    -- a key in two key sets (a story's reach in its polls and its final, a post across a
    -- retired metric): value by value, per key across the key sets
    select s.key_id, s.value, s.captured_at, s.previous_value,
           lead(s.captured_at) over (partition by s.key_id order by s.captured_at) as valid_until
    from (
        select p.*,
               lag(p.value) over series as previous_value,
               p.value is distinct from lag(p.value) over series as changed
        from (
            select u.key_id, coalesce(u.v::numeric, u.w) as value, g.captured_at
            from (
                -- every key set's capture in effect at `since`, then the range's captures
                select b.captured_at, c.key_set_id, b.vals, b.wide
                from media_metric_current c
                cross join lateral media_capture_at(c, since) b
                where c.media_id = m.media_id_num
                  and c.first_captured_at <= since
                union all
                select h.captured_at, h.key_set_id, h.vals, h.wide
                from media_capture h
                where h.media_id = m.media_id_num
                  and h.captured_at > since
                  and h.captured_at <= until
            ) g
            join metric_key_set ks on ks.key_set_id = g.key_set_id
            cross join lateral (
                select unnest(ks.key_ids) as key_id, unnest(g.vals) as v, unnest(g.wide) as w
                where metrics is null
                union all
                select wk.key_id, g.vals[p.i], g.wide[p.i]
                from unnest(
                    array(select mk.key_id from metric_key mk where mk.metric = any (metrics))
                ) as wk (key_id)
                cross join lateral (select array_position(ks.key_ids, wk.key_id) as i) p
                where metrics is not null and p.i is not null
            ) u
            where sk.shares_keys
        ) p
        window series as (partition by p.key_id order by p.captured_at)
    ) s
    where s.changed and s.captured_at > since
) x
join metric_key k on k.key_id = x.key_id
-- only media captured in the range
where exists (
    select 1
    from media_metric_current n
    where n.media_id = m.media_id_num and n.captured_at > since
)
$$;

comment on function media_metric_changes(timestamptz, timestamptz, text[]) is
    'Every change of every media metric series in (since, until]: the value, when it was first '
    'captured (valid_from), the next change in the range (valid_until; NULL: none up to until) '
    'and the value before (previous_value; NULL: the series'' first capture); metrics, when '
    'given, keeps only those metrics (read before the rest, so faster). Use as a table.';
