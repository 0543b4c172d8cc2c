-- Named queries of collector/store.py (the only user of this file). Each block starts with a
-- "-- name: <name>" line; parameters are $1, $2, … A block without parameters may be a script
-- of several statements (run in one round trip); each statement then sees what the previous
-- ones wrote.
--
-- Ids: account and media keep text ids; the history tables key them as bigint, so statements
-- cast staged and parameter ids (`$1::text::bigint`) and reads return ids as text.
--
-- Writes go through per-connection staging tables: COPY a batch into them, then one
-- INSERT … SELECT … ON CONFLICT per target table. Every write is idempotent: replaying a batch
-- (from the spool, after a lost commit acknowledgement) changes nothing, and an older replay
-- never overwrites newer data.

-- name: create_stage_tables
-- Run once per pooled connection. ON COMMIT DELETE ROWS empties them after each transaction;
-- creating them once instead of per write keeps the system catalogs from churning.
create temp table stage_profile (
    ig_user_id text, captured_at timestamptz, username text,
    followers_count bigint, follows_count bigint, media_count bigint
) on commit delete rows;
create temp table stage_media (
    media_id text, ig_user_id text, media_type text, media_product_type text,
    posted_at timestamptz, permalink text, caption text, expires_at timestamptz,
    seen_at timestamptz
) on commit delete rows;
-- value as text: the exact spelling (records.text_number), cast once here; binary numeric
-- encoding cost the collector more CPU than the rest of a value's staging
create temp table stage_media_metric (
    media_id text, metric text, breakdown text, dimension text, value text,
    captured_at timestamptz, is_final boolean
) on commit delete rows;
-- stage_media_metric grouped into captures: the work table of insert_media_metrics, not filled
-- by the Python side
create temp table stage_media_capture (
    media_id bigint, captured_at timestamptz, key_ids integer[], vals integer[], wide numeric[],
    is_final boolean, key_set_id integer
) on commit delete rows;
create temp table stage_media_poll (
    media_id text, polled_at timestamptz, status text, is_final boolean, reason text,
    source text
) on commit delete rows;
create temp table stage_account_metric (
    ig_user_id text, metric text, period text, breakdown text, dimension text,
    end_time timestamptz, value numeric, captured_at timestamptz
) on commit delete rows;
create temp table stage_error (
    ig_user_id text, occurred_at timestamptz, job text, object_id text, error_class text,
    code integer, subcode integer, message text, fbtrace_id text
) on commit delete rows;
create temp table stage_verdict (
    object_kind text, metric text, api_version text, supported boolean, reason text,
    learned_at timestamptz
) on commit delete rows;

-- name: ensure_accounts
-- Accounts referenced by a batch but never configured (a spooled batch replayed after the
-- database was recreated): keep the data under a placeholder row rather than lose it.
insert into account (ig_user_id, name, enabled, status)
select id, id, false, 'unknown'
from unnest($1::text[]) as id
on conflict (ig_user_id) do nothing;

-- name: insert_account_snapshots
insert into account_snapshot
    (ig_user_id, captured_at, username, followers_count, follows_count, media_count)
select ig_user_id, captured_at, username, followers_count, follows_count, media_count
from stage_profile
on conflict (ig_user_id, captured_at) do nothing;

-- name: update_account_usernames
-- The newest profile's username, unless a newer snapshot is already stored.
update account a
set username = p.username,
    updated_at = greatest(a.updated_at, p.captured_at)
from (
    select distinct on (ig_user_id) ig_user_id, username, captured_at
    from stage_profile
    where username is not null
    order by ig_user_id, captured_at desc
) p
where a.ig_user_id = p.ig_user_id
  and a.username is distinct from p.username
  and not exists (
      select 1 from account_snapshot s
      where s.ig_user_id = p.ig_user_id
        and s.captured_at > p.captured_at
        and s.username is not null
  );

-- name: upsert_media
-- Keeps first_seen_at; a newer sighting updates the mutable fields but never replaces a value
-- with NULL; an older one (a late replay) only fills in what is missing.
insert into media as m (
    media_id, ig_user_id, media_type, media_product_type, posted_at, permalink, caption,
    expires_at, first_seen_at, last_seen_at
)
select distinct on (media_id)
    media_id, ig_user_id, media_type, media_product_type, posted_at, permalink, caption,
    coalesce(
        expires_at,
        case when media_product_type = 'STORY' then posted_at + interval '24 hours' end
    ),
    min(seen_at) over (partition by media_id),
    seen_at
from stage_media
order by media_id, seen_at desc
on conflict (media_id) do update set
    media_type = case when excluded.last_seen_at >= m.last_seen_at
        then coalesce(excluded.media_type, m.media_type)
        else coalesce(m.media_type, excluded.media_type) end,
    media_product_type = case when excluded.last_seen_at >= m.last_seen_at
        then coalesce(excluded.media_product_type, m.media_product_type)
        else coalesce(m.media_product_type, excluded.media_product_type) end,
    posted_at = case when excluded.last_seen_at >= m.last_seen_at
        then coalesce(excluded.posted_at, m.posted_at)
        else coalesce(m.posted_at, excluded.posted_at) end,
    permalink = case when excluded.last_seen_at >= m.last_seen_at
        then coalesce(excluded.permalink, m.permalink)
        else coalesce(m.permalink, excluded.permalink) end,
    caption = case when excluded.last_seen_at >= m.last_seen_at
        then coalesce(excluded.caption, m.caption)
        else coalesce(m.caption, excluded.caption) end,
    expires_at = case when excluded.last_seen_at >= m.last_seen_at
        then coalesce(excluded.expires_at, m.expires_at)
        else coalesce(m.expires_at, excluded.expires_at) end,
    first_seen_at = least(m.first_seen_at, excluded.first_seen_at),
    last_seen_at = greatest(m.last_seen_at, excluded.last_seen_at)
-- skip rows that would not change, so that a replay writes no new row versions (an older
-- sighting with different values may still write an identical version: harmless)
where excluded.last_seen_at > m.last_seen_at
   or excluded.first_seen_at < m.first_seen_at
   or (
        coalesce(excluded.media_type, m.media_type),
        coalesce(excluded.media_product_type, m.media_product_type),
        coalesce(excluded.posted_at, m.posted_at),
        coalesce(excluded.permalink, m.permalink),
        coalesce(excluded.caption, m.caption),
        coalesce(excluded.expires_at, m.expires_at)
   ) is distinct from (
        m.media_type, m.media_product_type, m.posted_at, m.permalink, m.caption, m.expires_at
   );

-- name: insert_media_metrics
-- One media_capture row per capture (media and time) with every value it carried, aligned with
-- its key set (see sql/migrations/0009_history_captures.sql), and the latest capture of each
-- media and key set in media_metric_current. A replay of a stored capture writes nothing; an
-- older capture (a late replay) is stored and leaves the current row alone.
insert into metric_key (metric, breakdown, dimension)
select distinct s.metric, s.breakdown, s.dimension
from stage_media_metric s
where not exists (
    select 1 from metric_key k
    where (k.metric, k.period, k.breakdown, k.dimension) = (s.metric, '', s.breakdown, s.dimension)
)
on conflict do nothing;
-- captures older than the retention horizon would recreate a dropped month: not kept
insert into stage_media_capture (media_id, captured_at, key_ids, vals, wide, is_final)
select d.media_id, d.captured_at,
       array_agg(d.key_id order by d.key_id),
       array_agg(case when d.fits then d.value::integer end order by d.key_id),
       case when bool_and(d.fits) then null
            else array_agg(case when not d.fits then d.value end order by d.key_id) end,
       bool_or(d.is_final)
from (
    -- one value per key and capture (a batch repeating one keeps the final's)
    select distinct on (s.media_id::bigint, s.captured_at, k.key_id)
           s.media_id::bigint as media_id, s.captured_at, k.key_id, n.value, s.is_final,
           n.value = trunc(n.value) and n.value between -2147483648 and 2147483647 as fits
    from stage_media_metric s
    cross join lateral (select s.value::numeric as value) n
    join metric_key k
        on (k.metric, k.period, k.breakdown, k.dimension) = (s.metric, '', s.breakdown, s.dimension)
    where s.captured_at >= coalesce(
        (select horizon from history_retention where relation = 'media_capture'), '-infinity'
    )
    order by s.media_id::bigint, s.captured_at, k.key_id, s.is_final desc
) d
group by d.media_id, d.captured_at;
insert into metric_key_set (key_ids)
select distinct w.key_ids
from stage_media_capture w
where not exists (select 1 from metric_key_set s where s.key_ids = w.key_ids)
on conflict do nothing;
update stage_media_capture w
set key_set_id = s.key_set_id
from metric_key_set s
where s.key_ids = w.key_ids;
insert into media_capture as mc (captured_at, media_id, key_set_id, is_final, vals, wide)
select captured_at, media_id, key_set_id, is_final, vals, wide
from stage_media_capture
order by media_id, captured_at, key_set_id
on conflict (media_id, captured_at, key_set_id) do update set is_final = true
where excluded.is_final and not mc.is_final;
-- in key order, so that concurrent writers of one media wait for each other, never deadlock
insert into media_metric_current as c (
    media_id, key_set_id, captured_at, first_captured_at, is_final, vals, wide
)
select distinct on (w.media_id, w.key_set_id)
       w.media_id, w.key_set_id, w.captured_at,
       min(w.captured_at) over (partition by w.media_id, w.key_set_id),
       w.is_final, w.vals, w.wide
from stage_media_capture w
order by w.media_id, w.key_set_id, w.captured_at desc
on conflict (media_id, key_set_id) do update set
    captured_at = case when excluded.captured_at >= c.captured_at
                       then excluded.captured_at else c.captured_at end,
    is_final = case when excluded.captured_at > c.captured_at then excluded.is_final
                    when excluded.captured_at = c.captured_at then c.is_final or excluded.is_final
                    else c.is_final end,
    vals = case when excluded.captured_at > c.captured_at then excluded.vals else c.vals end,
    wide = case when excluded.captured_at > c.captured_at then excluded.wide else c.wide end,
    first_captured_at = least(c.first_captured_at, excluded.first_captured_at)
where excluded.captured_at > c.captured_at
   or excluded.first_captured_at < c.first_captured_at
   or (excluded.captured_at = c.captured_at and excluded.is_final and not c.is_final);

-- name: apply_media_polls
-- The newest poll sets the status; gone_at keeps the first poll that found the object gone. A
-- story's final snapshot is one capture: the collector's own final poll when there is one (it
-- is complete, with the navigation breakdown), else the webhook's; final_source says which.
-- Polls older than the stored one change no status.
update media m
set last_polled_at = greatest(m.last_polled_at, p.polled_at),
    insights_status = case when m.last_polled_at is null or p.polled_at >= m.last_polled_at
        then p.status else m.insights_status end,
    insights_status_reason = case when m.last_polled_at is null or p.polled_at >= m.last_polled_at
        then p.reason else m.insights_status_reason end,
    final_captured_at = case
        when p.poll_final_at is not null and m.final_source is distinct from 'poll'
            then p.poll_final_at
        when p.poll_final_at is not null then greatest(m.final_captured_at, p.poll_final_at)
        when m.final_captured_at is null then p.webhook_final_at
        else m.final_captured_at end,
    final_source = case
        when p.poll_final_at is not null then 'poll'
        when m.final_captured_at is null and p.webhook_final_at is not null then 'webhook'
        else m.final_source end,
    gone_at = least(m.gone_at, p.gone_at)
from (
    select
        media_id,
        max(polled_at) as polled_at,
        (array_agg(status order by polled_at desc))[1] as status,
        (array_agg(reason order by polled_at desc))[1] as reason,
        max(polled_at) filter (where is_final and source = 'poll') as poll_final_at,
        max(polled_at) filter (where is_final and source = 'webhook') as webhook_final_at,
        min(polled_at) filter (where status = 'gone') as gone_at
    from stage_media_poll
    group by media_id
) p
where m.media_id = p.media_id
  and (
      m.last_polled_at is null
      or p.polled_at > m.last_polled_at
      or (p.polled_at = m.last_polled_at
          and (p.status, p.reason) is distinct from (m.insights_status, m.insights_status_reason))
      or p.poll_final_at > coalesce(m.final_captured_at, '-infinity')
      or (p.poll_final_at is not null and m.final_source is distinct from 'poll')
      or (p.webhook_final_at is not null and m.final_captured_at is null)
      or p.gone_at < coalesce(m.gone_at, 'infinity')
  );

-- name: record_story_miss
-- A story expired without its final snapshot: why (the first reason found is kept; a final
-- that arrives later, from a replayed spool, still wins in the views).
update media
set missed_reason = $3, missed_at = $2, missed_detail = $4
where media_id = $1 and final_captured_at is null and missed_reason is null;

-- name: stories_missed_while_down
-- Stories of an account that expired while no collector took their final snapshot (found when
-- the account's schedule is read again).
update media
set missed_reason = 'process_down', missed_at = expires_at
where ig_user_id = $1
  and is_story
  and expires_at <= $2
  and final_captured_at is null
  and missed_reason is null
  and insights_status is distinct from 'gone'
returning media_id;

-- name: upsert_account_metrics
-- A newer capture replaces the value (Meta revises the last 48 h); an identical replay or an
-- older capture changes nothing.
insert into metric_key (metric, period, breakdown, dimension)
select distinct s.metric, s.period, s.breakdown, s.dimension
from stage_account_metric s
where not exists (
    select 1 from metric_key k
    where (k.metric, k.period, k.breakdown, k.dimension)
        = (s.metric, s.period, s.breakdown, s.dimension)
)
on conflict do nothing;
delete from stage_account_metric
where end_time < (select horizon from history_retention where relation = 'account_metric_value');
insert into account_metric_value as am (
    ig_user_id, end_time, captured_at, first_captured_at, key_id, value, value_wide
)
select distinct on (s.ig_user_id, k.key_id, s.end_time)
    s.ig_user_id::bigint, s.end_time, s.captured_at,
    min(s.captured_at) over (partition by s.ig_user_id, k.key_id, s.end_time),
    k.key_id,
    case when s.value = trunc(s.value) and s.value between -2147483648 and 2147483647
        then s.value::integer end,
    case when not (s.value = trunc(s.value) and s.value between -2147483648 and 2147483647)
        then s.value end
from stage_account_metric s
join metric_key k
    on (k.metric, k.period, k.breakdown, k.dimension)
        = (s.metric, s.period, s.breakdown, s.dimension)
order by s.ig_user_id, k.key_id, s.end_time, s.captured_at desc
on conflict (ig_user_id, key_id, end_time) do update set
    value = case when excluded.captured_at >= am.captured_at then excluded.value else am.value end,
    value_wide = case when excluded.captured_at >= am.captured_at
        then excluded.value_wide else am.value_wide end,
    captured_at = greatest(am.captured_at, excluded.captured_at),
    first_captured_at = least(am.first_captured_at, excluded.first_captured_at)
where excluded.captured_at > am.captured_at
   or (excluded.captured_at = am.captured_at
       and (excluded.value, excluded.value_wide) is distinct from (am.value, am.value_wide))
   or excluded.first_captured_at < am.first_captured_at;

-- name: insert_collection_errors
insert into collection_error (
    ig_user_id, occurred_at, job, object_id, error_class, code, subcode, message, fbtrace_id
)
select ig_user_id, occurred_at, job, object_id, error_class, code, subcode, message, fbtrace_id
from stage_error
on conflict do nothing;

-- name: update_account_last_error
update account a
set last_error_at = e.occurred_at,
    last_error = e.error_class || ': ' || e.message
from (
    select distinct on (ig_user_id) ig_user_id, occurred_at, error_class, message
    from stage_error
    order by ig_user_id, occurred_at desc
) e
where a.ig_user_id = e.ig_user_id
  and (a.last_error_at is null or e.occurred_at > a.last_error_at);

-- name: upsert_metric_support
insert into metric_support as s (object_kind, metric, api_version, supported, reason, learned_at)
select distinct on (object_kind, metric, api_version)
    object_kind, metric, api_version, supported, reason, learned_at
from stage_verdict
order by object_kind, metric, api_version, learned_at desc
on conflict (object_kind, metric, api_version) do update set
    supported = excluded.supported,
    reason = excluded.reason,
    learned_at = excluded.learned_at
where excluded.learned_at > s.learned_at
   or (excluded.learned_at = s.learned_at
       and (excluded.supported, excluded.reason) is distinct from (s.supported, s.reason));

-- name: upsert_configured_accounts
-- $1 ids, $2 names, $3 enabled flags, $4 now, $5 sources ('configured' or a [[sources]] name),
-- $6 logins, $7 Page ids (a source's Page, else NULL). A disabled account is 'disabled'; one
-- coming back (re-enabled, re-added, listed again) is 'unknown' until its next collection.
insert into account as a (
    ig_user_id, name, enabled, status, status_changed_at, first_configured_at, updated_at,
    source, login, page_id
)
select c.ig_user_id, c.name, c.enabled,
       case when c.enabled then 'unknown' else 'disabled' end, $4, $4, $4, c.source, c.login,
       c.page_id
from unnest($1::text[], $2::text[], $3::boolean[], $5::text[], $6::text[], $7::text[])
    as c(ig_user_id, name, enabled, source, login, page_id)
on conflict (ig_user_id) do update set
    name = excluded.name,
    enabled = excluded.enabled,
    source = excluded.source,
    login = excluded.login,
    page_id = excluded.page_id,
    status = case
        when not excluded.enabled then 'disabled'
        when a.status in ('disabled', 'removed') then 'unknown'
        else a.status end,
    status_reason = case
        when not excluded.enabled then 'disabled in the configuration'
        when a.status in ('disabled', 'removed') then null
        else a.status_reason end,
    status_changed_at = case
        when (not excluded.enabled and a.status <> 'disabled')
          or (excluded.enabled and a.status in ('disabled', 'removed'))
        then excluded.status_changed_at
        else a.status_changed_at end,
    first_configured_at = coalesce(a.first_configured_at, excluded.first_configured_at),
    removed_at = null,
    updated_at = excluded.updated_at
where a.name is distinct from excluded.name
   or a.enabled is distinct from excluded.enabled
   or a.source is distinct from excluded.source
   or a.login is distinct from excluded.login
   or a.page_id is distinct from excluded.page_id
   or a.removed_at is not null
   or a.first_configured_at is null
   or (not excluded.enabled and a.status <> 'disabled')
   or (excluded.enabled and a.status in ('disabled', 'removed'));

-- name: mark_removed_accounts
-- $1 ids still configured or discovered, $2 now, $3 sources whose listing failed (their
-- accounts stay as they are until the source answers again).
update account
set status = 'removed',
    status_reason = case when source = 'configured' then 'no longer in the configuration'
        else 'no longer listed by source ' || source end,
    status_changed_at = $2,
    enabled = false,
    removed_at = $2,
    updated_at = $2
where not (ig_user_id = any($1::text[]))
  and not (source = any($3::text[]))
  and status <> 'removed';

-- name: set_account_status
-- Statuses owned by the configuration (disabled, removed) only change through
-- sync_accounts, so a job finishing after a reload cannot revive a removed account.
update account
set status = case when status in ('disabled', 'removed') and $2::text not in ('disabled', 'removed')
        then status else $2 end,
    status_reason = case when status in ('disabled', 'removed') and $2::text not in ('disabled', 'removed')
        then status_reason else $3::text end,
    status_changed_at = case
        when status in ('disabled', 'removed') and $2::text not in ('disabled', 'removed')
        then status_changed_at
        when status is distinct from $2::text then $4::timestamptz
        else status_changed_at end,
    updated_at = $4
where ig_user_id = $1
returning ig_user_id;

-- name: record_success
-- The first success promotes a new account from 'unknown' to 'ok'.
update account
set last_success_at = greatest(last_success_at, $2),
    status = case when status = 'unknown' then 'ok' else status end,
    status_changed_at = case when status = 'unknown' then $2 else status_changed_at end,
    updated_at = $2
where ig_user_id = $1
returning ig_user_id;

-- name: set_token_info
update account
set token_valid = $2,
    token_expires_at = $3,
    data_access_expires_at = $4,
    token_scopes = $5::text[],
    token_checked_at = $6,
    updated_at = $6
where ig_user_id = $1
returning ig_user_id;

-- name: accounts
select ig_user_id, name, username, enabled, status, status_reason, status_changed_at,
       last_success_at, last_error_at, last_error, token_valid, token_expires_at,
       data_access_expires_at, token_checked_at, removed_at
from account
order by name, ig_user_id;

-- name: known_media_ids
select media_id from media where ig_user_id = $1;

-- name: media_for_insights
select media_id, ig_user_id, media_type, media_product_type, posted_at, permalink, caption,
       expires_at, last_seen_at
from media
where ig_user_id = $1
  and not is_story
  and posted_at > $2
  and gone_at is null
  and insights_status is distinct from 'before_conversion'
order by posted_at desc, media_id desc;

-- name: live_stories
select media_id, ig_user_id, media_type, media_product_type, posted_at, permalink, caption,
       expires_at, last_seen_at
from media
where ig_user_id = $1
  and is_story
  and expires_at > $2
  and gone_at is null
order by expires_at, media_id;

-- name: media_last_polled
select media_id, last_polled_at
from media
where ig_user_id = $1 and last_polled_at is not null;

-- name: metric_verdicts
select object_kind, metric, api_version, supported, reason, learned_at
from metric_support
where api_version = $1
order by object_kind, metric;

-- name: last_account_metric_end
select max(v.end_time)
from account_metric_value v
join metric_key k on k.key_id = v.key_id
where v.ig_user_id = $1::text::bigint and k.period = 'day';

-- name: counts
select 'account' as name, count(*) as n from account
union all select 'account_snapshot', count(*) from account_snapshot
union all select 'media', count(*) from media
-- polled values (the rows of the media_metric view), counted from the captures' key sets
union all select 'media_metric', coalesce(sum(cardinality(vals)), 0) from media_capture
union all select 'account_metric', count(*) from account_metric_value
union all select 'metric_support', count(*) from metric_support
union all select 'collection_error', count(*) from collection_error;

-- name: media_schedule
-- Media worth polling again: feed media not gone nor from before the business conversion, and
-- stories that have not expired yet.
select media_id, ig_user_id, media_type, media_product_type, posted_at, expires_at,
       last_polled_at, final_captured_at, insights_status
from media
where ig_user_id = $1
  and gone_at is null
  and insights_status is distinct from 'before_conversion'
  and (not is_story or expires_at > $2)
order by posted_at desc nulls last, media_id;

-- name: last_captures
-- When each periodic job of an account last left a trace in the database.
select
    (select token_checked_at from account where ig_user_id = $1) as token_check,
    (select max(captured_at) from account_snapshot where ig_user_id = $1) as profile,
    (select max(last_seen_at) from media where ig_user_id = $1 and not is_story)
        as media_discovery,
    (select max(last_seen_at) from media where ig_user_id = $1 and is_story) as story_discovery,
    (select max(v.captured_at) from account_metric_value v join metric_key k using (key_id)
     where v.ig_user_id = $1::text::bigint and k.period = 'day') as account_insights,
    (select max(v.captured_at) from account_metric_value v join metric_key k using (key_id)
     where v.ig_user_id = $1::text::bigint and k.period = 'lifetime') as demographics;

-- name: set_account_usage
-- Rate-limit state rides in batches; an older reading never overwrites a newer one.
update account
set usage_percent = $2,
    usage_at = $3,
    paused_until = $4,
    throttle_events = greatest(throttle_events, $5),
    updated_at = greatest(updated_at, $3)
where ig_user_id = $1
  and (usage_at is null or usage_at <= $3)
returning ig_user_id;

-- name: maintain_history
-- $1 the history table, $2 now, $3 months of partitions to create ahead, $4 retention (NULL:
-- keep forever). See collector_maintain in sql/migrations/0009_history_captures.sql.
select action, partition_name from collector_maintain($1, $2, $3, $4);

-- name: partitions_to_compact
-- Partitions of months that ended before $1 whose indexes were not rebuilt yet, oldest first.
select c.relname as partition_name
from pg_inherits i
join pg_class c on c.oid = i.inhrelid
join pg_class p on p.oid = i.inhparent
where p.relname in ('media_capture', 'account_metric_value')
  and c.relname ~ '_[0-9]{4}_[0-9]{2}$'
  and (to_date(right(c.relname, 7), 'YYYY_MM') + interval '1 month') at time zone 'UTC' <= $1
  and not exists (select 1 from history_compacted h where h.partition_name = c.relname)
order by right(c.relname, 7), c.relname;

-- name: index_names
-- The indexes of partition $1 (names are ours: collector_ensure_partitions made them).
select i.relname as index_name
from pg_index x
join pg_class i on i.oid = x.indexrelid
where x.indrelid = $1::text::regclass;

-- name: mark_compacted
insert into history_compacted (partition_name, compacted_at) values ($1, $2)
on conflict (partition_name) do nothing;

-- name: ensure_partitions
-- $1 the history table, $2 and $3 the first and last instant to cover. Run on its own, never
-- inside a write transaction (creating a partition locks its parent exclusively).
select collector_ensure_partitions($1, $2, $3) as created;

-- name: history_partitions
-- The monthly partitions that exist, as (parent, first instant of the month).
select p.relname as parent, to_date(right(c.relname, 7), 'YYYY_MM') as month
from pg_inherits i
join pg_class c on c.oid = i.inhrelid
join pg_class p on p.oid = i.inhparent
where p.relname in ('media_capture', 'account_metric_value')
  and c.relname ~ '_[0-9]{4}_[0-9]{2}$';
-- name: cluster_heartbeat
-- A member says it is alive and how many leases it holds.
insert into cluster_member as cm (name, started_at, heartbeat_at, held)
values ($1, now(), now(), $2)
on conflict (name) do update set heartbeat_at = now(), held = excluded.held;

-- name: cluster_live
-- The live members (heartbeat younger than the lease TTL); long-gone ones are forgotten.
with gone as (
    delete from cluster_member where heartbeat_at < now() - 10 * $1::interval
)
select name from cluster_member where heartbeat_at > now() - $1::interval order by name;

-- name: cluster_leave
delete from cluster_member where name = $1;

-- name: lease_ensure
-- Every resource the configuration names has its row (free until claimed).
insert into lease (resource)
select unnest($1::text[])
on conflict (resource) do nothing;

-- name: lease_renew
-- Extend the leases this member still holds, at the epoch it holds them; a lease that expired
-- (the member was frozen, or cut from the database, past the TTL) is not renewed: its holder
-- must stop, and may claim it again later under a new epoch.
update lease l
set expires_at = now() + $4::interval
from unnest($2::text[], $3::bigint[]) as h(resource, epoch)
where l.resource = h.resource
  and l.holder = $1
  and l.epoch = h.epoch
  and l.expires_at > now()
returning l.resource, l.epoch;

-- name: lease_claim
-- Claim up to $3 free or expired leases among $2, those whose account has the soonest story
-- still waiting for its final snapshot first; rows another member is claiming are skipped.
with free as (
    select l.resource
    from lease l
    where l.resource = any($2::text[])
      and (l.holder is null or l.expires_at is null or l.expires_at <= now())
    order by (
        select min(m.expires_at)
        from media m
        where m.ig_user_id = substr(l.resource, 9)
          and l.resource like 'account:%'
          and m.expires_at > now()
          and m.final_captured_at is null
    ) nulls last, l.resource
    limit $3
    for update of l skip locked
)
update lease l
set holder = $1, epoch = l.epoch + 1, expires_at = now() + $4::interval, claimed_at = now()
from free
where l.resource = free.resource
returning l.resource, l.epoch;

-- name: lease_release
update lease
set holder = null, expires_at = null
where holder = $1 and resource = any($2::text[]);

-- name: lease_holders
-- Who holds each resource now, and at which epoch (for fencing writes).
select resource, holder, epoch, expires_at
from lease
where resource = any($1::text[]);

-- name: lease_fence
-- The holders of the accounts a batch's bookkeeping was decided for, share-locked until the
-- batch commits (a claim skips a locked row).
select resource, holder, epoch
from lease
where resource = any($1::text[])
for share;

-- name: app_throttle_get
select paused_until, reason, set_by from app_throttle where paused_until > now();

-- name: app_throttle_set
-- The app-level pause a member saw: the latest end wins.
insert into app_throttle as t (id, paused_until, reason, set_by, set_at)
values (true, $1, $2, $3, now())
on conflict (id) do update set
    paused_until = excluded.paused_until,
    reason = excluded.reason,
    set_by = excluded.set_by,
    set_at = excluded.set_at
where excluded.paused_until > t.paused_until;

-- name: sources_fence
-- The member still holds the sources lease at this epoch: share-locked until the listing's
-- account rows commit (a claim skips a locked row), so a member that lost the lease while
-- frozen cannot mark its successor's accounts removed.
select 1
from lease
where resource = 'sources' and holder = $1 and epoch = $2 and expires_at > now()
for share;

-- name: discovered_accounts
-- What the [[sources]] listed last (written by the sources lease holder), for the members
-- that collect discovered accounts without listing the sources themselves.
select ig_user_id, name, source, login, page_id
from account
where source <> 'configured' and status <> 'removed' and enabled
order by ig_user_id;

-- name: account_lease_fence
-- The member still holds the account's lease at this epoch; share-locked until commit.
select 1
from lease
where resource = 'account:' || $1 and holder = $2 and epoch = $3 and expires_at > now()
for share;

-- name: sealed_token_put
-- A renewed Instagram Login token, sealed; the newest per account and seed wins.
insert into sealed_token as t (
    ig_user_id, seed_sha256, sealed, expires_at, refreshed_at, written_by, epoch, written_at
)
values ($1, $2, $3, $4, $5, $6, $7, now())
on conflict (ig_user_id, seed_sha256) do update set
    sealed = excluded.sealed,
    expires_at = excluded.expires_at,
    refreshed_at = excluded.refreshed_at,
    written_by = excluded.written_by,
    epoch = excluded.epoch,
    written_at = excluded.written_at
where excluded.expires_at >= t.expires_at;

-- name: sealed_tokens
-- The sealed tokens of these accounts (one per seed they were renewed from).
select ig_user_id, seed_sha256, sealed, expires_at, refreshed_at
from sealed_token
where ig_user_id = any($1::text[]);
