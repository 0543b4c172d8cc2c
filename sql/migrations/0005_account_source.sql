-- Where each account comes from and which API serves it (issue 11): 'configured' for an
-- [[accounts]] entry, else the name of the [[sources]] entry whose listing found it; login
-- 'facebook' (Instagram API with Facebook Login, graph.facebook.com) or 'instagram'
-- (Instagram API with Instagram Login, graph.instagram.com).

alter table account
    add column source text not null default 'configured',
    add column login  text not null default 'facebook' check (login in ('facebook', 'instagram'));

comment on column account.source is
    '''configured'' ([[accounts]] in the configuration) or the name of the [[sources]] entry that '
    'discovered the account; an account no longer listed by its source is marked removed.';
comment on column account.login is
    'facebook (Instagram API with Facebook Login) or instagram (Instagram API with Instagram Login).';

-- the same columns at the end of account_health (create or replace may only append)
create or replace view account_health as
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
    s.captured_at as followers_captured_at,
    a.usage_percent,
    a.usage_at,
    a.paused_until,
    a.throttle_events,
    l.holder as lease_holder,
    l.expires_at as lease_expires_at,
    a.source,
    a.login
from account a
left join lateral (
    select snap.followers_count, snap.captured_at
    from account_snapshot snap
    where snap.ig_user_id = a.ig_user_id
      and snap.followers_count is not null
    order by snap.captured_at desc
    limit 1
) s on true
left join lease l on l.resource = 'account:' || a.ig_user_id and l.expires_at > now();

comment on column account_health.source is
    'How the account was found: ''configured'' or the name of the [[sources]] entry that listed it.';
comment on column account_health.login is
    'facebook (graph.facebook.com) or instagram (graph.instagram.com): the API that serves it.';

-- Which day a bucket is: Meta's account-insight day buckets are documented as Pacific days,
-- while airbyte PR #74006 (2026-02) reports the account's own time zone (docs/graph-api-notes.md
-- §5). end_time is stored exactly as Meta sent it (or, for a total_value answer, as the until
-- the collector asked for); the day column is the Pacific reading of it.
comment on column account_metric_daily.day is
    'The Pacific calendar day of the bucket: (end_time at time zone America/Los_Angeles)::date - 1. '
    'Meta documents Pacific day buckets; if it cuts an account''s days in that account''s own time '
    'zone (reported for some accounts), use end_time, which is stored exactly as returned.';
