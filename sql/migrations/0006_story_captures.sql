-- Honest story captures: where each story's final snapshot came from, and why a story that
-- expired without one has none.

alter table media
    add column final_source text check (final_source in ('poll', 'webhook')),
    add column missed_reason text check (missed_reason in (
        'below_threshold', 'token_parked', 'throttled', 'process_down', 'retries_exhausted',
        'gone', 'not_polled'
    )),
    add column missed_at timestamptz,
    add column missed_detail text;

comment on column media.final_source is
    'Where the story''s final snapshot came from: poll (the collector''s own final call, with the '
    'navigation breakdown) or webhook (Meta''s story_insights delivery, when no poll was final).';
comment on column media.missed_reason is
    'Why a story expired without its final snapshot: below_threshold (under 5 viewers: Meta shows '
    'no insights), token_parked, throttled, process_down (no collector ran through its window), '
    'retries_exhausted, gone (deleted first), not_polled (found too late, or held back).';
comment on column media.missed_at is 'When the miss was recorded (process_down: the expiry).';

-- what a final snapshot was before this migration: the collector's own poll
update media set final_source = 'poll' where final_captured_at is not null;
