-- What cluster mode hands from one process to the next (issue 12), and nothing in plaintext.
--
-- account.page_id     the Facebook Page a [[sources]] listing found the account through (not a
--                     secret): a process that does not list the sources fetches that Page's
--                     token with the source's own token (GET /{page-id}?fields=access_token),
--                     so Page tokens never enter the database
-- sealed_token        each account's newest renewed Instagram Login token, sealed with
--                     AES-256-GCM under the [cluster] secret_file key, which every process has
--                     and the database never has; the account id and the seed fingerprint are
--                     the associated data, so a sealed token cannot be moved to another row.
--                     Written only by the account's lease holder under its epoch.

alter table account add column page_id text;

comment on column account.page_id is
    'The Facebook Page a [[sources]] listing found the account through (NULL: configured, or an '
    'Instagram Login source).';

create table sealed_token (
    ig_user_id   text not null,
    seed_sha256  text not null,
    sealed       bytea not null,
    expires_at   timestamptz not null,
    refreshed_at timestamptz not null,
    written_by   text not null,
    epoch        bigint not null,
    written_at   timestamptz not null default now(),
    primary key (ig_user_id, seed_sha256)
);

comment on table sealed_token is
    'Renewed Instagram Login tokens shared between cluster members, sealed (AES-256-GCM) under a '
    'key the database does not hold; the newest per account and seed.';
comment on column sealed_token.seed_sha256 is
    'SHA-256 of the configured token this one was renewed from: a new seed in the configuration '
    'wins over every token sealed for the old one.';
comment on column sealed_token.sealed is
    '12-byte nonce followed by the AES-256-GCM ciphertext and tag; associated data '
    '"<ig_user_id>:<seed_sha256>".';
comment on column sealed_token.epoch is
    'The account lease epoch its writer held (a writer that lost the lease is refused).';
