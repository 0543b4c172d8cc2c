-- Several collector processes share the accounts through leases in this database ([cluster]).
--
-- lease            one row per shared resource ('account:<ig_user_id>', 'sources'): who holds it,
--                  until when, and its epoch (raised at every claim: the fencing token stamped
--                  on the account bookkeeping a holder writes, so a holder that lost the lease
--                  while frozen cannot overwrite its successor's verdicts)
-- cluster_member   one row per live process: its heartbeat (the fair share is derived from it)
-- app_throttle     the app-level pause one process saw (#4 and friends), honoured by all
--
-- Times are the database's own (now()), so the processes' clocks need not agree.

create table lease (
    resource   text primary key,
    holder     text,
    epoch      bigint not null default 0,
    expires_at timestamptz,
    claimed_at timestamptz
);

comment on table lease is
    'Who collects what: a holder renews its leases by heartbeat; an expired lease may be claimed '
    'by any live process, which raises its epoch.';
comment on column lease.epoch is
    'Raised at every claim; account bookkeeping written under an older epoch is refused.';

create table cluster_member (
    name         text primary key,
    started_at   timestamptz not null,
    heartbeat_at timestamptz not null,
    held         integer not null default 0
);

comment on table cluster_member is
    'Live collector processes in cluster mode (a member whose heartbeat is older than the lease '
    'TTL is gone).';

create table app_throttle (
    id           boolean primary key default true check (id),
    paused_until timestamptz not null,
    reason       text,
    set_by       text,
    set_at       timestamptz not null
);

comment on table app_throttle is
    'The app-level rate-limit pause (#4, #17, #32, #613, #341) one process saw; every process '
    'waits until paused_until.';

-- the holder and its lease at the end of account_health (create or replace may only append)
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
    l.expires_at as lease_expires_at
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

comment on column account_health.lease_holder is
    'In cluster mode: the process collecting the account now (NULL: one process, or nobody).';
comment on column account_health.lease_expires_at is 'When that lease runs out unless renewed.';
