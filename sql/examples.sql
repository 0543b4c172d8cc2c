-- Example analyst queries over the views (quoted in the README; tests/integration/test_views.py
-- runs each of them on a populated database). Paste any block into psql as it is.

-- name: top_media_last_30_days
-- The ten posts and reels with the most views among those published in the last 30 days,
-- with their latest reach and saves.
select account_name,
       media_id,
       media_product_type,
       posted_at,
       max(value) filter (where metric = 'views') as views,
       max(value) filter (where metric = 'reach') as reach,
       max(value) filter (where metric = 'saved') as saved
from media_metric_latest
where not is_story
  and breakdown = ''
  and posted_at > now() - interval '30 days'
group by account_name, media_id, media_product_type, posted_at
order by views desc nulls last, media_id
limit 10;

-- name: story_capture_report
-- Per account, the stories of the last 7 days that have expired: how many got their final
-- snapshot, from the collector's own poll or from Meta's webhook, how many were missed and why,
-- and the average lead of the final snapshots.
with per_story as (
    select distinct on (media_id)
           account_name,
           media_id,
           final_source,
           missed_reason,
           expires_at - final_captured_at as lead
    from story_final_metrics
    where posted_at > now() - interval '7 days'
      and expires_at <= now()
    order by media_id
)
select account_name,
       count(*) as stories,
       count(*) filter (where final_source = 'poll') as final_by_poll,
       count(*) filter (where final_source = 'webhook') as final_by_webhook,
       count(*) filter (where final_source is null) as missed,
       count(*) filter (where missed_reason = 'below_threshold') as missed_below_threshold,
       count(*) filter (where missed_reason in ('token_parked', 'throttled')) as missed_paused,
       count(*) filter (where missed_reason = 'process_down') as missed_process_down,
       count(*) filter (where missed_reason in ('retries_exhausted', 'gone', 'not_polled'))
           as missed_otherwise,
       date_trunc('second', avg(lead) filter (where final_source is not null)) as avg_final_lead
from per_story
group by account_name
order by account_name;

-- name: daily_reach_last_14_days
-- Daily reach per account over the last 14 Pacific days (Meta's day boundary). The history is
-- partitioned by end_time (a day's bucket ends at the next Pacific midnight): a bound on it lets
-- PostgreSQL read only the months the range covers, where a bound on day alone reads them all.
select day,
       account_name,
       value as reach
from account_metric_daily
where metric = 'reach'
  and period = 'day'
  and breakdown = ''
  and day >= (now() at time zone 'America/Los_Angeles')::date - 14
  and end_time > ((now() at time zone 'America/Los_Angeles')::date - 14)::timestamp
                 at time zone 'America/Los_Angeles'
order by account_name, day;

-- name: accounts_needing_attention
-- Accounts an operator should look at: not collecting, a token expiring within 7 days, or
-- errors in the last 24 hours.
select name,
       username,
       status,
       status_reason,
       last_success_at,
       token_expires_at,
       errors_24h,
       followers_count
from account_health
where status not in ('ok', 'disabled', 'removed')
   or token_valid is false
   or token_expires_at < now() + interval '7 days'
   or errors_24h > 0
order by name;

-- name: views_a_week_ago
-- Value at a time: one account's posts and reels, their views and reach as they stood 7 days
-- ago (and the capture that said so), next to their latest values (the value at now()). The
-- second argument names the metrics to read (NULL: all of them). Each side is read once
-- (materialized), then the two are joined.
with week_ago as materialized (
    select media_id, metric, value, confirmed_at
    from media_metric_at(now() - interval '7 days', array['views', 'reach'])
    where account_name = 'northwind'
      and not is_story
      and breakdown = ''
), latest as materialized (
    select media_id, metric, value, confirmed_at
    from media_metric_at(now(), array['views', 'reach'])
    where account_name = 'northwind'
      and not is_story
      and breakdown = ''
)
select w.media_id,
       w.metric,
       w.value as value_7_days_ago,
       w.confirmed_at,
       l.value as latest,
       l.confirmed_at as latest_captured_at
from week_ago w
join latest l using (media_id, metric)
order by w.media_id, w.metric;

-- name: reach_changes_last_30_days
-- A series over a range: every change of the reach of one account's posts and reels in the
-- last 30 days, the value before it, and until when each value held (NULL: still current).
-- The third argument names the metrics to read (NULL: all of them).
select media_id,
       previous_value as reach_before,
       value as reach,
       valid_from,
       valid_until
from media_metric_changes(now() - interval '30 days', now(), array['reach'])
where account_name = 'northwind'
  and not is_story
  and breakdown = ''
order by media_id, valid_from;
