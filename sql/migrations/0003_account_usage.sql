-- Rate-limit state per account, for operators: the usage Meta reported last
-- (X-Business-Use-Case-Usage, the highest of call_count, total_cputime and total_time), the
-- pause the collector derived from it or from an 80002 refusal, and how many pauses so far.

alter table account
    add column usage_percent   numeric,
    add column usage_at        timestamptz,
    add column paused_until    timestamptz,
    add column throttle_events integer not null default 0;

comment on column account.usage_percent is
    'Usage of the account''s rate-limit budget Meta last reported, in percent (0-100).';
comment on column account.usage_at is 'When usage_percent was reported.';
comment on column account.paused_until is
    'No call goes to this account before this time (a regain estimate or an 80002 refusal).';
comment on column account.throttle_events is 'How many times the account was paused so far.';

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
    a.throttle_events
from account a
left join lateral (
    select snap.followers_count, snap.captured_at
    from account_snapshot snap
    where snap.ig_user_id = a.ig_user_id
      and snap.followers_count is not null
    order by snap.captured_at desc
    limit 1
) s on true;

comment on column account_health.usage_percent is
    'Usage of the account''s rate-limit budget Meta last reported, in percent.';
comment on column account_health.usage_at is 'When usage_percent was reported.';
comment on column account_health.paused_until is 'No call goes to the account before this time.';
comment on column account_health.throttle_events is 'Pauses so far (usage limits and 80002).';
