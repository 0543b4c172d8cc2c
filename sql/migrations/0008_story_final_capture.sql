-- A story's final snapshot is one capture, never a mix (issue 14): story_final_metrics gives the
-- values of exactly the capture at media.final_captured_at (the collector's final poll, or the
-- webhook's delivery when no poll was final), or, for a story with no final snapshot, those of
-- its last capture; and it says where the final came from or why there is none.

drop view story_final_metrics;

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
      and (m.final_captured_at is null or c.captured_at = m.final_captured_at)
    order by c.captured_at desc
    limit 1
) last on true
left join lateral (
    select mm.metric, mm.breakdown, mm.dimension, mm.value, mm.captured_at, mm.is_final
    from media_metric mm
    where mm.media_id = m.media_id
      and mm.captured_at = last.captured_at
) v on true
where m.is_story;

comment on view story_final_metrics is
    'Every story with the metrics of one capture (one row per metric, breakdown, dimension): its '
    'final snapshot when it has one (final_source says poll or webhook), else its last capture; '
    'never a mix of two. A story without any captured metric (below the viewer threshold) '
    'appears once, with NULL metric columns, its insights_status and its missed_reason.';
comment on column story_final_metrics.is_final is
    'The capture was the story''s final snapshot before expiry.';
comment on column story_final_metrics.lead_before_expiry is
    'expires_at - captured_at: how long before the story''s insights vanished these values were taken.';
comment on column story_final_metrics.insights_status is
    'Outcome of the story''s last insights poll (ok, below_threshold, gone, unavailable).';
comment on column story_final_metrics.final_captured_at is 'When the final snapshot was taken, if it was.';
comment on column story_final_metrics.final_source is
    'poll (the collector''s own final call, with the navigation breakdown) or webhook.';
comment on column story_final_metrics.missed_reason is
    'Why the story has no final snapshot (below_threshold, token_parked, throttled, process_down, '
    'retries_exhausted, gone, not_polled); NULL when it has one or is still live.';
comment on column story_final_metrics.missed_at is 'When the miss was recorded.';
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
comment on column story_final_metrics.insights_status_reason is 'The API''s message for that outcome, if any.';
