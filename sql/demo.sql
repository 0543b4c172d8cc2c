-- Queries of `python -m collector demo` (collector/demo.py): its progress line and summary.
-- Analysts' own queries are in examples.sql.

-- name: progress
-- Stories seen and finalised so far among the accounts $1 (this run's).
select count(*) filter (where is_story) as stories,
       count(*) filter (where final_captured_at is not null) as finalised
from media
where ig_user_id = any($1::text[]);

-- name: accounts
-- Per account of $1 (this run's): followers at the first and the last profile snapshot, media and
-- stories collected.
select a.ig_user_id,
       a.name,
       a.username,
       a.status,
       first.followers_count as followers_first,
       first.captured_at as followers_first_at,
       last.followers_count as followers_last,
       last.captured_at as followers_last_at,
       (select count(*) from account_snapshot s where s.ig_user_id = a.ig_user_id) as snapshots,
       (select count(*) from media m where m.ig_user_id = a.ig_user_id and not m.is_story)
           as media,
       (select count(*) from media m where m.ig_user_id = a.ig_user_id and m.is_story)
           as stories,
       (select count(*) from media_metric mm join media m using (media_id)
         where m.ig_user_id = a.ig_user_id) as metric_rows
from account a
left join lateral (
    select s.followers_count, s.captured_at
    from account_snapshot s
    where s.ig_user_id = a.ig_user_id and s.followers_count is not null
    order by s.captured_at
    limit 1
) first on true
left join lateral (
    select s.followers_count, s.captured_at
    from account_snapshot s
    where s.ig_user_id = a.ig_user_id and s.followers_count is not null
    order by s.captured_at desc
    limit 1
) last on true
where a.ig_user_id = any($1::text[])
order by a.name;

-- name: stories
-- Every story of the accounts $1 with the reach and views of its final snapshot (or its last
-- capture) and, when finalised, how long before expiry and from where; else why it was missed.
select ig_user_id,
       media_id,
       posted_at,
       expires_at,
       final_captured_at,
       expires_at - final_captured_at as lead_before_expiry,
       final_source,
       missed_reason,
       insights_status,
       max(value) filter (where metric = 'reach' and breakdown = '') as reach,
       max(value) filter (where metric = 'views' and breakdown = '') as views
from story_final_metrics
where ig_user_id = any($1::text[])
group by ig_user_id, media_id, posted_at, expires_at, final_captured_at, final_source,
         missed_reason, insights_status
order by ig_user_id, expires_at;
