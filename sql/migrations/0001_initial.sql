-- The collector's tables: accounts, their snapshots, media, metric history, what the API
-- accepts, and errors worth keeping. Metric names are rows, never columns: Meta renames and
-- retires metrics every few API versions, and a rename must not need a migration.
--
-- Partitioning: none, on purpose. At the scale one collector serves (hundreds of accounts),
-- media_metric grows by roughly 10^5 rows a day; its primary key index serves every read by
-- media, and a BRIN index serves time-range scans. Time partitions would need a maintenance job
-- creating future partitions (or a DEFAULT partition, which then blocks creating them), a moving
-- part we do not need yet. The snapshot tables already carry their time column in the primary
-- key and are keyed by account/media, so turning them into range-partitioned tables (or
-- TimescaleDB hypertables) later is a migration, not a redesign.

create table account (
    ig_user_id             text primary key check (ig_user_id ~ '^[0-9]+$'),
    name                   text not null,
    username               text,
    enabled                boolean not null default true,
    status                 text not null default 'unknown' check (
        status in ('unknown', 'ok', 'unhealthy', 'throttled', 'failing', 'disabled', 'removed')
    ),
    status_reason          text,
    status_changed_at      timestamptz,
    last_success_at        timestamptz,
    last_error_at          timestamptz,
    last_error             text,
    token_valid            boolean,
    token_expires_at       timestamptz,
    data_access_expires_at timestamptz,
    token_scopes           text[],
    token_checked_at       timestamptz,
    first_configured_at    timestamptz,
    removed_at             timestamptz,
    updated_at             timestamptz
);

comment on table account is
    'One row per Instagram account the collector knows: configured, disabled or removed (data kept).';
comment on column account.name is 'The account''s name in the collector configuration.';
comment on column account.status is
    'unknown (not collected yet), ok, unhealthy (token/permission: needs an operator), '
    'throttled, failing (transient errors outlasted retries), disabled, removed.';

create table account_snapshot (
    ig_user_id      text not null references account,
    captured_at     timestamptz not null,
    username        text,
    followers_count bigint,
    follows_count   bigint,
    media_count     bigint,
    primary key (ig_user_id, captured_at)
);

comment on table account_snapshot is
    'Profile counters over time (append-only): one row per profile poll.';

create table media (
    media_id               text primary key check (media_id ~ '^[0-9]+$'),
    ig_user_id             text not null references account,
    media_type             text,
    media_product_type     text,
    posted_at              timestamptz,
    permalink              text,
    caption                text,
    expires_at             timestamptz,
    is_story               boolean not null generated always as (
        coalesce(media_product_type = 'STORY', false) or expires_at is not null
    ) stored,
    first_seen_at          timestamptz not null,
    last_seen_at           timestamptz not null,
    last_polled_at         timestamptz,
    insights_status        text check (
        insights_status in ('ok', 'below_threshold', 'before_conversion', 'gone', 'unavailable')
    ),
    insights_status_reason text,
    final_captured_at      timestamptz,
    gone_at                timestamptz
);

comment on table media is 'Posts, reels, carousels and stories, as listed by /media and /stories.';
comment on column media.expires_at is 'Stories only: posted_at + 24 h, when their insights vanish.';
comment on column media.insights_status is
    'Outcome of the last insights poll: ok, below_threshold (not enough viewers), '
    'before_conversion, gone, unavailable (every metric rejected).';
comment on column media.final_captured_at is
    'Stories: when the last snapshot before expiry (is_final) was taken.';

-- media discovery and insight selection: one account's media, newest first
create index media_account_posted_idx on media (ig_user_id, posted_at desc);
-- live stories of one account
create index media_account_story_expiry_idx on media (ig_user_id, expires_at) where is_story;

create table media_metric (
    media_id    text not null references media,
    metric      text not null,
    breakdown   text not null default '',
    dimension   text not null default '',
    value       numeric not null,
    captured_at timestamptz not null,
    is_final    boolean not null default false,
    primary key (media_id, metric, breakdown, dimension, captured_at)
);

comment on table media_metric is
    'Media metric history (append-only): one row per metric, breakdown value and capture.';
comment on column media_metric.breakdown is
    'Breakdown name (e.g. story_navigation_action_type), or '''' for the total.';
comment on column media_metric.dimension is
    'Breakdown value, lower-cased (e.g. tap_forward), or '''' for the total.';
comment on column media_metric.is_final is
    'This capture was a story''s final snapshot before expiry.';

-- time-range scans over the whole history ("everything captured last week"); BRIN because
-- rows arrive in captured_at order and the index stays tiny
create index media_metric_captured_brin on media_metric using brin (captured_at);

create table account_metric (
    ig_user_id        text not null references account,
    metric            text not null,
    period            text not null,
    breakdown         text not null default '',
    dimension         text not null default '',
    end_time          timestamptz not null,
    value             numeric not null,
    captured_at       timestamptz not null,
    first_captured_at timestamptz not null,
    primary key (ig_user_id, metric, period, breakdown, dimension, end_time)
);

comment on table account_metric is
    'Account metrics per period bucket; upserted because Meta revises the last 48 h.';
comment on column account_metric.end_time is
    'Exclusive end of the bucket (midnight America/Los_Angeles for day buckets).';
comment on column account_metric.captured_at is 'When the current value was last captured.';
comment on column account_metric.first_captured_at is 'When this bucket was first captured.';

-- "where did the last collection stop": max(end_time) of one account's day buckets
create index account_metric_account_period_end_idx on account_metric (ig_user_id, period, end_time);

create table metric_support (
    object_kind text not null check (
        object_kind in ('account', 'feed_image', 'feed_video', 'feed_carousel', 'reels', 'story')
    ),
    metric      text not null,
    api_version text not null,
    supported   boolean not null,
    reason      text not null default '',
    learned_at  timestamptz not null,
    primary key (object_kind, metric, api_version)
);

comment on table metric_support is
    'What the Graph API told us about a metric for one object kind and API version.';

create table collection_error (
    id          bigint generated always as identity primary key,
    ig_user_id  text not null references account,
    occurred_at timestamptz not null,
    job         text not null,
    object_id   text,
    error_class text not null,
    code        integer,
    subcode     integer,
    message     text not null,
    fbtrace_id  text
);

comment on table collection_error is 'Errors worth keeping: what failed, for which account and object, and why.';

-- Makes a replayed batch idempotent (ON CONFLICT DO NOTHING); coalesce because a NULL object_id
-- would otherwise never conflict. Its leading columns also serve "one account's errors in the
-- last 24 h" (account_health).
create unique index collection_error_replay_key on collection_error (
    ig_user_id, occurred_at, job, coalesce(object_id, ''), error_class
);
