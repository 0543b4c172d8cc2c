-- Views for analysts (psql, Grafana, Metabase, dbt). Example queries: sql/examples.sql.
--
-- "Latest" is written as NOT EXISTS (a newer capture of the same key) rather than DISTINCT ON,
-- so that a filter on any column (account, media type, posted_at) is pushed down to the base
-- tables instead of being applied after computing the latest row of every media in the database.

create view media_metric_latest as
select
    mm.media_id,
    m.ig_user_id,
    a.name as account_name,
    a.username,
    m.media_type,
    m.media_product_type,
    m.is_story,
    m.posted_at,
    m.permalink,
    mm.metric,
    mm.breakdown,
    mm.dimension,
    mm.value,
    mm.captured_at,
    mm.is_final
from media_metric mm
join media m on m.media_id = mm.media_id
join account a on a.ig_user_id = m.ig_user_id
where not exists (
    select 1
    from media_metric newer
    where newer.media_id = mm.media_id
      and newer.metric = mm.metric
      and newer.breakdown = mm.breakdown
      and newer.dimension = mm.dimension
      and newer.captured_at > mm.captured_at
);

comment on view media_metric_latest is
    'The latest captured value of every media metric (one row per media, metric, breakdown, '
    'dimension), with the media and its account.';
comment on column media_metric_latest.account_name is 'The account''s name in the collector configuration.';
comment on column media_metric_latest.username is 'The account''s Instagram username.';
comment on column media_metric_latest.media_product_type is 'FEED, REELS or STORY.';
comment on column media_metric_latest.breakdown is 'Breakdown name, or '''' for the total.';
comment on column media_metric_latest.dimension is 'Breakdown value (lower-cased), or '''' for the total.';
comment on column media_metric_latest.captured_at is 'When this value was captured.';
comment on column media_metric_latest.is_final is 'This capture was a story''s final snapshot before expiry.';

create view account_metric_daily as
select
    am.ig_user_id,
    a.name as account_name,
    a.username,
    (am.end_time at time zone 'America/Los_Angeles')::date - 1 as day,
    am.metric,
    am.period,
    am.breakdown,
    am.dimension,
    am.value,
    am.end_time,
    am.captured_at,
    am.first_captured_at
from account_metric am
join account a on a.ig_user_id = am.ig_user_id;

comment on view account_metric_daily is
    'Account metrics by Pacific day (Meta''s day buckets end at midnight America/Los_Angeles). '
    'period = ''day'': the day''s total; period = ''lifetime'' (demographics): the snapshot '
    'taken that day. Recent days may still be revised by Meta (see captured_at).';
comment on column account_metric_daily.day is
    'The Pacific calendar day the bucket covers: (end_time at time zone America/Los_Angeles)::date - 1.';
comment on column account_metric_daily.account_name is 'The account''s name in the collector configuration.';
comment on column account_metric_daily.period is 'day (a daily total) or lifetime (a demographic snapshot).';
comment on column account_metric_daily.breakdown is 'Breakdown name (e.g. country), or '''' for the total.';
comment on column account_metric_daily.dimension is 'Breakdown value (e.g. DE), or '''' for the total.';
comment on column account_metric_daily.captured_at is 'When the current value was last captured.';
comment on column account_metric_daily.first_captured_at is 'When this bucket was first captured.';

create view story_final_metrics as
select
    m.ig_user_id,
    a.name as account_name,
    a.username,
    m.media_id,
    m.posted_at,
    m.expires_at,
    m.permalink,
    l.metric,
    l.breakdown,
    l.dimension,
    l.value,
    l.captured_at,
    coalesce(l.is_final, false) as is_final,
    m.expires_at - l.captured_at as lead_before_expiry,
    m.insights_status,
    m.insights_status_reason,
    m.final_captured_at
from media m
join account a on a.ig_user_id = m.ig_user_id
left join media_metric l
    on l.media_id = m.media_id
    and not exists (
        select 1
        from media_metric newer
        where newer.media_id = l.media_id
          and newer.metric = l.metric
          and newer.breakdown = l.breakdown
          and newer.dimension = l.dimension
          and newer.captured_at > l.captured_at
    )
where m.is_story;

comment on view story_final_metrics is
    'Every story with its last captured metrics (one row per metric, breakdown, dimension) and '
    'how long before expiry they were taken. A story without any captured metric (e.g. below '
    'the viewer threshold) appears once, with NULL metric columns and its insights_status.';
comment on column story_final_metrics.is_final is
    'The last capture was the planned final snapshot before expiry.';
comment on column story_final_metrics.lead_before_expiry is
    'expires_at - captured_at: how long before the story''s insights vanished this value was taken.';
comment on column story_final_metrics.insights_status is
    'Outcome of the story''s last insights poll (ok, below_threshold, gone, unavailable).';
comment on column story_final_metrics.final_captured_at is 'When the final snapshot was taken, if it was.';

create view account_health as
select
    a.ig_user_id,
    a.name,
    a.username,
    a.enabled,
    a.status,
    a.status_reason,
    a.status_changed_at,
    a.last_success_at,
    a.last_error_at,
    a.last_error,
    a.token_valid,
    a.token_expires_at,
    a.data_access_expires_at,
    a.token_checked_at,
    (
        select count(*)
        from collection_error e
        where e.ig_user_id = a.ig_user_id
          and e.occurred_at > now() - interval '24 hours'
    ) as errors_24h,
    s.followers_count,
    s.captured_at as followers_captured_at
from account a
left join lateral (
    select snap.followers_count, snap.captured_at
    from account_snapshot snap
    where snap.ig_user_id = a.ig_user_id
      and snap.followers_count is not null
    order by snap.captured_at desc
    limit 1
) s on true;

comment on view account_health is
    'Per account: collector status, last success and error, token validity, errors in the last '
    '24 hours and the latest follower count.';
comment on column account_health.name is 'The account''s name in the collector configuration.';
comment on column account_health.status is
    'unknown, ok, unhealthy (needs an operator), throttled, failing, disabled, removed.';
comment on column account_health.status_reason is 'Why the account has this status (error code and message).';
comment on column account_health.token_valid is 'The token''s validity at its last check (token_checked_at).';
comment on column account_health.errors_24h is 'collection_error rows in the last 24 hours.';
comment on column account_health.followers_count is 'The latest captured follower count.';
comment on column account_health.followers_captured_at is 'When followers_count was captured.';

-- Columns that mean the same in every view.
comment on column media_metric_latest.media_id is 'Instagram media id.';
comment on column media_metric_latest.ig_user_id is 'Instagram user id of the account.';
comment on column media_metric_latest.media_type is 'IMAGE, VIDEO or CAROUSEL_ALBUM.';
comment on column media_metric_latest.is_story is 'The media is a story (its insights vanish 24 h after posting).';
comment on column media_metric_latest.posted_at is 'When the media was published.';
comment on column media_metric_latest.permalink is 'Link to the media on Instagram.';
comment on column media_metric_latest.metric is 'Graph API metric name (reach, views, saved, …) or field (like_count).';
comment on column media_metric_latest.value is 'The metric value at captured_at.';

comment on column account_metric_daily.ig_user_id is 'Instagram user id of the account.';
comment on column account_metric_daily.username is 'The account''s Instagram username.';
comment on column account_metric_daily.metric is 'Graph API metric name (reach, follower_count, …).';
comment on column account_metric_daily.value is 'The value for that day (latest revision).';
comment on column account_metric_daily.end_time is 'Exclusive end of the bucket, as sent by Meta.';

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
comment on column story_final_metrics.insights_status_reason is 'Detail of insights_status (e.g. the API''s message).';

comment on column account_health.ig_user_id is 'Instagram user id of the account.';
comment on column account_health.username is 'The account''s Instagram username.';
comment on column account_health.enabled is 'The account is enabled in the configuration.';
comment on column account_health.status_changed_at is 'When status last changed.';
comment on column account_health.last_success_at is 'When the last collection pass for the account succeeded.';
comment on column account_health.last_error_at is 'When the last error was recorded (see collection_error).';
comment on column account_health.last_error is 'The last error: its class and message.';
comment on column account_health.token_expires_at is 'When the access token expires (NULL: never or unknown).';
comment on column account_health.data_access_expires_at is 'When the token''s data access expires (re-consent needed).';
comment on column account_health.token_checked_at is 'When the token was last checked with debug_token.';
