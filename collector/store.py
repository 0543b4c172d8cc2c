"""The repository over an asyncpg pool: idempotent batched writes and the reads the collector needs.

The only user of ``sql/queries.sql``. asyncpg is untyped; every value leaving this module is
converted to a typed record of ``collector.models``.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from collector import errors, models, records, schema

#: asyncpg/OS errors meaning "the server is not there (any more)": worth a retry or the spool,
#: unlike a constraint violation, which would fail the same way again
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

_DEFAULT_PORT = 5432


def _q(name: str) -> str:
    return schema.named_queries("queries.sql")[name]


def _split(dsn: str) -> urllib.parse.SplitResult | None:
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        return None
    return parts


def dsn_password(dsn: str) -> str | None:
    """The password inside a PostgreSQL URL (userinfo or ``?password=``), for log redaction."""
    parts = _split(dsn)
    if parts is None:
        return None
    if parts.password:
        return urllib.parse.unquote(parts.password)
    found = urllib.parse.parse_qs(parts.query).get("password")
    return found[0] if found else None


def describe_dsn(dsn: str) -> str:
    """``PostgreSQL at host:port/dbname``, built from parts that are never secret."""
    parts = _split(dsn)
    if parts is None:
        return "PostgreSQL (the DSN is not a postgresql:// URL)"
    query = urllib.parse.parse_qs(parts.query)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or (query.get("host") or ["localhost"])[0]
    port = port or int((query.get("port") or [str(_DEFAULT_PORT)])[0])
    user = urllib.parse.unquote(parts.username) if parts.username else None
    database = urllib.parse.unquote(parts.path.lstrip("/")) or (query.get("dbname") or [""])[0]
    return f"PostgreSQL at {host}:{port}/{database or user or '(default database)'}"


class Store:
    """The collector's database: an asyncpg pool plus named queries."""

    def __init__(self, pool: Any, *, where: str, password: str | None) -> None:
        self._pool = pool
        self._where = where
        self._password = password
        #: (history table, first day of a month) whose partition is known to exist
        self._months: set[tuple[str, date]] = set()
        self._partitioning = asyncio.Lock()
        #: cluster mode: this process's member name; account bookkeeping written under a
        #: lease epoch this member no longer holds is refused (see ``records.FENCED``)
        self.fence_holder: str | None = None
        #: fenced records refused so far
        self.stale_refused = 0

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10,
        command_timeout: float = 60,
    ) -> Store:
        """Connect a pool; ``DatabaseUnavailable`` (without the password) when it cannot."""
        where = describe_dsn(dsn)
        password = dsn_password(dsn)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                init=_init_connection,
                server_settings={"application_name": "collector"},
            )
        except Exception as exc:
            # Any failure here (refused, DNS, auth, bad URL) means "no database": say where
            # from the parts that are never secret, and keep asyncpg's text only when it is clean.
            detail = _scrub(f"{type(exc).__name__}: {exc}", dsn, password)
            raise errors.DatabaseUnavailable(f"cannot connect to {where}: {detail}") from None
        return cls(pool, where=where, password=password)

    async def close(self, *, grace: float = 10) -> None:
        """Close the pool, waiting up to ``grace`` seconds for queries in flight, then cut them."""
        try:
            await asyncio.wait_for(self._pool.close(), grace)
        except TimeoutError:
            self._pool.terminate()

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except errors.CollectorError:
            raise
        except _UNAVAILABLE as exc:
            detail = _scrub(f"{type(exc).__name__}: {exc}", self._password)
            raise errors.DatabaseUnavailable(f"{what}: lost {self._where}: {detail}") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            detail = _scrub(f"{type(exc).__name__}: {exc}", self._password)
            raise errors.StoreError(f"{what} failed: {detail}") from exc
        except (UnicodeError, ValueError, TypeError, OverflowError) as exc:
            # asyncpg could not encode a value of a record (text that is not Unicode, a number
            # beyond the column): that record is refused, as PostgreSQL would refuse it
            detail = _scrub(f"{type(exc).__name__}: {exc}", self._password)
            raise errors.StoreError(f"{what} failed: a value cannot be stored: {detail}") from exc

    @contextlib.asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[Any]:
        with self._translate(what):
            async with self._pool.acquire() as conn:
                yield conn

    async def _fetch(self, what: str, query: str, *args: Any) -> list[Any]:
        async with self._conn(what) as conn:
            return list(await conn.fetch(_q(query), *args))

    async def _update_one(self, what: str, query: str, ig_user_id: str, *args: Any) -> None:
        async with self._conn(what) as conn:
            found = await conn.fetchval(_q(query), ig_user_id, *args)
        if found is None:
            raise errors.StoreError(f"{what}: unknown account {ig_user_id}")

    # ------------------------------------------------------------------ schema

    async def check_schema(self) -> None:
        """Raise ``PendingMigrations``/``SchemaError`` unless the schema matches this version."""
        async with self._conn("schema check") as conn:
            await schema.check(conn)

    async def migrate(self) -> list[schema.Migration]:
        """Apply pending migrations (see ``schema.migrate``)."""
        async with self._conn("migrate") as conn:
            return await schema.migrate(conn)

    async def maintain(
        self,
        now: datetime,
        *,
        media_metric: timedelta | None = None,
        account_metric: timedelta | None = None,
        months_ahead: int = 2,
        compact: bool = True,
    ) -> list[tuple[str, str]]:
        """Create history partitions ahead, drop months past retention (``None``: keep all)
        and, with ``compact``, rebuild finished months' indexes packed.

        Meant to run daily, with the ``[retention]`` durations (and at start without
        ``compact``, which can take minutes on a large history); a write that reaches a month
        without a partition creates it first, so a late call costs no data. Returns
        ``(action, partition)`` pairs, ``action`` being ``created``, ``dropped`` or
        ``compacted``.
        """
        done: list[tuple[str, str]] = []
        for parent, keep in (
            ("media_capture", media_metric),
            ("account_metric_value", account_metric),
        ):
            # one table per transaction: partition DDL locks its parent exclusively
            async with self._conn("maintain history") as conn, conn.transaction():
                rows = await conn.fetch(_q("maintain_history"), parent, now, months_ahead, keep)
            done += [(r["action"], r["partition_name"]) for r in rows]
        self._months.clear()  # dropped months must be looked up again
        if compact:
            done += await self._compact(now - timedelta(days=1))
        return done

    async def _compact(self, before: datetime) -> list[tuple[str, str]]:
        """Rebuild, packed, the indexes of partitions whose month ended before ``before``.

        A month's rows arrive in time order but its indexes are keyed by series, so they fill
        to about two thirds while it is written; once the month is over only late replays
        still arrive. ``REINDEX CONCURRENTLY`` keeps reads and writes going meanwhile, and
        cannot run inside a transaction: one statement each.
        """
        done: list[tuple[str, str]] = []
        async with self._conn("compact history") as conn:
            for row in await conn.fetch(_q("partitions_to_compact"), before):
                name = row["partition_name"]
                for index in await conn.fetch(_q("index_names"), name):
                    # identifiers cannot be parameters; these names are ours ([a-z0-9_]+)
                    quoted = '"' + index["index_name"].replace('"', '""') + '"'
                    await conn.execute(f"alter index {quoted} set (fillfactor = 100)")
                quoted = '"' + name.replace('"', '""') + '"'
                await conn.execute(f"reindex table concurrently {quoted}")
                await conn.execute(_q("mark_compacted"), name, before)
                done.append(("compacted", name))
        return done

    async def _ensure_partitions(self, batch: models.Batch) -> None:
        """Create the monthly partitions the batch's history needs, each in its own transaction.

        Outside the write's transaction on purpose: partition DDL there would deadlock with
        concurrent writers. The months known to exist are cached, so this is free per batch.
        """
        needed: dict[str, set[date]] = {}
        # a batch holds a few instants, repeated by every value of a capture
        if batch.media_metrics:
            instants = {v.captured_at for v in batch.media_metrics}
            needed["media_capture"] = {_month(at) for at in instants}
        if batch.account_metrics:
            instants = {a.end_time for a in batch.account_metrics}
            needed["account_metric_value"] = {_month(at) for at in instants}
        wanted = {(parent, m) for parent, months in needed.items() for m in months}
        if wanted <= self._months:
            return
        async with self._partitioning, self._conn("create history partitions") as conn:
            if not self._months:
                rows = await conn.fetch(_q("history_partitions"))
                self._months.update((r["parent"], r["month"]) for r in rows)
            for parent, month in sorted(wanted - self._months):
                start = datetime(month.year, month.month, 1, tzinfo=UTC)
                # a month past retention stays dropped (the write then skips its rows)
                await conn.fetch(_q("ensure_partitions"), parent, start, start)
                self._months.add((parent, month))

    async def ping(self) -> None:
        """Raise ``DatabaseUnavailable`` unless the database answers."""
        async with self._conn("ping") as conn:
            await conn.fetchval("select 1")

    # ------------------------------------------------------------------ accounts

    async def sync_accounts(
        self,
        rows: Sequence[models.AccountRow],
        at: datetime,
        *,
        keep_sources: Sequence[str] = (),
        fence: tuple[str, int] | None = None,
    ) -> bool:
        """Make the account table match the configuration and the sources' listings; unlisted
        accounts become 'removed', except those of ``keep_sources`` (their listing failed).

        ``fence`` (cluster mode: member name, sources lease epoch): written only while that
        member holds the sources lease at that epoch; False when it does not (nothing written).
        """
        latest = {row.ig_user_id: row for row in rows}  # a repeated id: the last one wins
        ids = sorted(latest)
        async with self._conn("sync accounts") as conn, conn.transaction():
            if fence is not None and await conn.fetchval(_q("sources_fence"), *fence) is None:
                return False
            await conn.execute(
                _q("upsert_configured_accounts"),
                ids,
                [latest[i].name for i in ids],
                [latest[i].enabled for i in ids],
                at,
                [latest[i].source or "configured" for i in ids],
                [latest[i].login for i in ids],
                [latest[i].page_id for i in ids],
            )
            await conn.execute(_q("mark_removed_accounts"), ids, at, list(keep_sources))
        return True

    async def discovered_accounts(self) -> list[models.AccountRow]:
        """The accounts the sources listed last (cluster mode: as their lease holder wrote them)."""
        rows = await self._fetch("read discovered accounts", "discovered_accounts")
        return [
            models.AccountRow(
                models.IgUserId(r["ig_user_id"]),
                r["name"],
                True,
                login=r["login"],
                source=r["source"],
                page_id=r["page_id"],
            )
            for r in rows
        ]

    async def set_account_status(
        self,
        ig_user_id: str,
        status: models.AccountStatus,
        reason: str | None,
        at: datetime,
    ) -> None:
        """Record the collector's verdict on an account (``disabled``/``removed`` stay put)."""
        await self._update_one(
            "set account status", "set_account_status", ig_user_id, str(status), reason, at
        )

    async def record_success(self, ig_user_id: str, at: datetime) -> None:
        """A collection pass succeeded (a new account goes from 'unknown' to 'ok')."""
        await self._update_one("record success", "record_success", ig_user_id, at)

    async def set_token_info(
        self,
        ig_user_id: str,
        *,
        valid: bool,
        expires_at: datetime | None,
        data_access_expires_at: datetime | None,
        scopes: Sequence[str],
        checked_at: datetime,
    ) -> None:
        await self._update_one(
            "set token info",
            "set_token_info",
            ig_user_id,
            valid,
            expires_at,
            data_access_expires_at,
            list(scopes),
            checked_at,
        )

    async def accounts(self) -> list[models.AccountState]:
        """Every account row (configured, disabled and removed), by name."""
        rows = await self._fetch("read accounts", "accounts")
        return [
            models.AccountState(
                ig_user_id=models.IgUserId(r["ig_user_id"]),
                name=r["name"],
                username=r["username"],
                enabled=r["enabled"],
                status=r["status"],
                status_reason=r["status_reason"],
                status_changed_at=r["status_changed_at"],
                last_success_at=r["last_success_at"],
                last_error_at=r["last_error_at"],
                last_error=r["last_error"],
                token_valid=r["token_valid"],
                token_expires_at=r["token_expires_at"],
                data_access_expires_at=r["data_access_expires_at"],
                token_checked_at=r["token_checked_at"],
                removed_at=r["removed_at"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ writes

    async def write(self, batch: models.Batch) -> None:
        """Store a batch in one transaction; replaying the same batch changes nothing.

        ``StoreError`` (not ``DatabaseUnavailable``) means PostgreSQL refused a record of it:
        writing the same batch again fails the same way.
        """
        if not len(batch):
            return
        ids = records.account_ids(batch)
        await self._ensure_partitions(batch)
        async with self._conn("write batch") as conn, conn.transaction():
            if self.fence_holder is not None and (stamped := records.fenced(batch)):
                batch = await self._fence(conn, batch, stamped)
            if ids:
                await conn.execute(_q("ensure_accounts"), ids)
            for kind in records.KINDS:
                found = getattr(batch, kind.part)
                if not found:
                    continue
                rows = [kind.row(r) for r in found]
                if kind.stage is None:
                    await conn.executemany(_q(kind.statements[0]), rows)
                    continue
                await _stage(conn, kind.stage, rows)
                for statement in kind.statements:
                    await conn.execute(_q(statement))

    async def _fence(
        self, conn: Any, batch: models.Batch, stamped: dict[str, set[int]]
    ) -> models.Batch:
        """Leave out the bookkeeping of accounts this member no longer holds at that epoch (the
        lease rows stay share-locked until commit: a claim cannot slip in between)."""
        rows = await conn.fetch(_q("lease_fence"), [f"account:{uid}" for uid in stamped])
        current = {
            r["resource"].removeprefix("account:"): r["epoch"]
            for r in rows
            if r["holder"] == self.fence_holder
        }
        kept, dropped = records.without_stale(batch, current)
        self.stale_refused += dropped
        return kept

    # ------------------------------------------------------------------ cluster

    async def cluster_heartbeat(self, name: str, held: int, ttl: timedelta) -> list[str]:
        """Record this member's heartbeat; returns the live members' names."""
        async with self._conn("cluster heartbeat") as conn:
            await conn.execute(_q("cluster_heartbeat"), name, held)
            rows = await conn.fetch(_q("cluster_live"), ttl)
        return [r["name"] for r in rows]

    async def cluster_leave(self, name: str) -> None:
        async with self._conn("leave the cluster") as conn:
            await conn.execute(_q("cluster_leave"), name)

    async def lease_ensure(self, resources: Sequence[str]) -> None:
        async with self._conn("create leases") as conn:
            await conn.execute(_q("lease_ensure"), list(resources))

    async def lease_renew(self, name: str, held: dict[str, int], ttl: timedelta) -> dict[str, int]:
        """Renew the leases held at these epochs; returns those still held."""
        if not held:
            return {}
        resources = sorted(held)
        rows = await self._fetch(
            "renew leases", "lease_renew", name, resources, [held[r] for r in resources], ttl
        )
        return {r["resource"]: r["epoch"] for r in rows}

    async def lease_claim(
        self, name: str, candidates: Sequence[str], limit: int, ttl: timedelta
    ) -> dict[str, int]:
        """Claim up to ``limit`` free or expired leases; returns {resource: new epoch}."""
        if limit <= 0 or not candidates:
            return {}
        rows = await self._fetch("claim leases", "lease_claim", name, list(candidates), limit, ttl)
        return {r["resource"]: r["epoch"] for r in rows}

    async def lease_release(self, name: str, resources: Sequence[str]) -> None:
        if not resources:
            return
        async with self._conn("release leases") as conn:
            await conn.execute(_q("lease_release"), name, list(resources))

    async def lease_holders(self, resources: Sequence[str]) -> dict[str, tuple[str | None, int]]:
        rows = await self._fetch("read leases", "lease_holders", list(resources))
        return {r["resource"]: (r["holder"], r["epoch"]) for r in rows}

    async def app_throttle(self) -> tuple[datetime, str | None] | None:
        """The app-level pause some member saw, while it lasts."""
        rows = await self._fetch("read the app pause", "app_throttle_get")
        return (rows[0]["paused_until"], rows[0]["reason"]) if rows else None

    async def set_app_throttle(self, until: datetime, reason: str, name: str) -> None:
        async with self._conn("share the app pause") as conn:
            await conn.execute(_q("app_throttle_set"), until, reason[:300], name)

    async def put_sealed_token(
        self, sealed: models.SealedToken, *, holder: str, epoch: int
    ) -> bool:
        """Keep a sealed renewed token, only while ``holder`` holds the account's lease at
        ``epoch`` (the lease row share-locked until commit); False when it does not."""
        async with self._conn("keep a sealed token") as conn, conn.transaction():
            held = await conn.fetchval(_q("account_lease_fence"), sealed.ig_user_id, holder, epoch)
            if held is None:
                return False
            await conn.execute(
                _q("sealed_token_put"),
                sealed.ig_user_id,
                sealed.seed_sha256,
                sealed.sealed,
                sealed.expires_at,
                sealed.refreshed_at,
                holder,
                epoch,
            )
        return True

    async def sealed_tokens(self, ig_user_ids: Sequence[str]) -> list[models.SealedToken]:
        """The sealed tokens kept for these accounts (one per seed)."""
        if not ig_user_ids:
            return []
        rows = await self._fetch("read sealed tokens", "sealed_tokens", list(ig_user_ids))
        return [
            models.SealedToken(
                r["ig_user_id"],
                r["seed_sha256"],
                bytes(r["sealed"]),
                r["expires_at"],
                r["refreshed_at"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ reads

    async def known_media_ids(self, ig_user_id: str) -> set[str]:
        """Ids of every media object and story of the account already stored."""
        rows = await self._fetch("read media ids", "known_media_ids", ig_user_id)
        return {r["media_id"] for r in rows}

    async def media_for_insights(
        self, ig_user_id: str, *, posted_after: datetime
    ) -> list[models.Media]:
        """Non-story media posted after the cutoff that can still have insights, newest first."""
        rows = await self._fetch("read media", "media_for_insights", ig_user_id, posted_after)
        return [_media(r) for r in rows]

    async def live_stories(self, ig_user_id: str, *, now: datetime) -> list[models.Media]:
        """Stories not yet expired nor gone, soonest expiry first."""
        rows = await self._fetch("read stories", "live_stories", ig_user_id, now)
        return [_media(r) for r in rows]

    async def media_last_polled(self, ig_user_id: str) -> dict[str, datetime]:
        """{media_id: last insights poll} of the account's media (polled ones only)."""
        rows = await self._fetch("read polls", "media_last_polled", ig_user_id)
        return {r["media_id"]: r["last_polled_at"] for r in rows}

    async def media_schedule(self, ig_user_id: str, *, now: datetime) -> list[models.MediaSchedule]:
        """Media still worth polling (not gone, stories not expired), newest first."""
        rows = await self._fetch("read media schedule", "media_schedule", ig_user_id, now)
        return [
            models.MediaSchedule(
                media_id=models.MediaId(r["media_id"]),
                ig_user_id=models.IgUserId(r["ig_user_id"]),
                media_type=r["media_type"],
                media_product_type=r["media_product_type"],
                posted_at=r["posted_at"],
                expires_at=r["expires_at"],
                last_polled_at=r["last_polled_at"],
                final_captured_at=r["final_captured_at"],
                insights_status=(
                    models.InsightsStatus(r["insights_status"]) if r["insights_status"] else None
                ),
            )
            for r in rows
        ]

    async def last_captures(self, ig_user_id: str) -> dict[str, datetime]:
        """When each periodic job of the account last left data; jobs never done are absent.

        Keys: ``token_check``, ``profile``, ``media_discovery``, ``story_discovery``,
        ``account_insights``, ``demographics``.
        """
        rows = await self._fetch("read last captures", "last_captures", ig_user_id)
        return {key: value for key, value in dict(rows[0]).items() if value is not None}

    async def metric_verdicts(self, api_version: str) -> list[models.MetricVerdict]:
        """Everything learned about metric support for one API version."""
        rows = await self._fetch("read metric support", "metric_verdicts", api_version)
        return [
            models.MetricVerdict(
                object_kind=models.ObjectKind(r["object_kind"]),
                metric=r["metric"],
                api_version=r["api_version"],
                supported=r["supported"],
                reason=r["reason"],
                learned_at=r["learned_at"],
            )
            for r in rows
        ]

    async def stories_missed_while_down(self, ig_user_id: str, *, now: datetime) -> list[str]:
        """Mark the account's stories that expired with no final snapshot and no recorded
        reason as missed while no collector ran; returns their ids."""
        rows = await self._fetch(
            "mark stories missed", "stories_missed_while_down", ig_user_id, now
        )
        return [r["media_id"] for r in rows]

    async def last_account_metric_end(self, ig_user_id: str) -> datetime | None:
        """The end of the newest stored ``day`` bucket of the account, if any."""
        rows = await self._fetch("read account metrics", "last_account_metric_end", ig_user_id)
        value: datetime | None = rows[0][0] if rows else None
        return value

    async def counts(self) -> dict[str, int]:
        """Rows per table."""
        rows = await self._fetch("count rows", "counts")
        return {r["name"]: int(r["n"]) for r in rows}


async def _init_connection(conn: Any) -> None:
    await conn.execute(_q("create_stage_tables"))


async def _stage(conn: Any, table: str, records: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(table, records=records)


def _month(at: datetime) -> date:
    """The first day of the UTC month of ``at``: which monthly history partition holds it."""
    utc = at.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def _media(r: Any) -> models.Media:
    return models.Media(
        media_id=models.MediaId(r["media_id"]),
        ig_user_id=models.IgUserId(r["ig_user_id"]),
        media_type=r["media_type"],
        media_product_type=r["media_product_type"],
        posted_at=r["posted_at"],
        permalink=r["permalink"],
        caption=r["caption"],
        expires_at=r["expires_at"],
        seen_at=r["last_seen_at"],
    )


def _scrub(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
