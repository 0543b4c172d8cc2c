"""One full collection pass over every enabled account (``run --once``).

Accounts are independent: each runs its jobs in order (token, profile, media, stories, account
insights, media and story insights) while the Graph client bounds the requests in flight across
all of them. An account whose token, permission or budget fails is recorded and reported; the
others complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import structlog

from collector import clock as clock_mod
from collector import errors, graph, jobs, metrics_catalog, models, store

#: media-metric rows buffered before a write (1,000–5,000 rows per transaction is the sweet spot)
FLUSH_ROWS = 2000


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The knobs a pass needs (taken from the settings by the caller)."""

    backfill_days: int = 90
    repoll_days: int = 3
    media_max_age: timedelta = timedelta(days=730)
    per_account_in_flight: int = 1
    check_tokens: bool = True
    demographics: bool = True
    #: accounts collected at the same time (bounds memory; requests are bounded by the client)
    accounts_at_once: int = 64


@dataclasses.dataclass(slots=True)
class AccountResult:
    """What one account's pass did, for the summary line and the exit code."""

    name: str
    ig_user_id: str
    status: models.AccountStatus = models.AccountStatus.OK
    reason: str | None = None
    calls: int = 0
    media_seen: int = 0
    stories_seen: int = 0
    media_polled: int = 0
    metric_rows: int = 0
    account_metric_rows: int = 0
    errors: int = 0
    seconds: float = 0.0
    #: rows not written yet (one transaction per ~2,000 rows, not one per job)
    pending: models.Batch = dataclasses.field(default_factory=models.Batch, repr=False)

    @property
    def ok(self) -> bool:
        return self.status is models.AccountStatus.OK


@dataclasses.dataclass
class Collection:
    """Runs the jobs for accounts and writes what they return."""

    client: graph.GraphClient
    store: store.Store
    catalog: metrics_catalog.Catalog
    clock: clock_mod.Clock
    plan: Plan
    context_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    log: Any = dataclasses.field(default_factory=structlog.get_logger)
    #: each login's client and catalog (Instagram Login accounts use their own host)
    logins: Mapping[str, jobs.Login] | None = None

    def context(
        self, overrides: dict[str, Sequence[str]] | None, target: jobs.Target | None = None
    ) -> jobs.Context:
        return jobs.context_for(
            client=self.client,
            catalog=self.catalog,
            clock=self.clock,
            log=self.log,
            overrides=overrides,
            defaults=self.context_defaults,
            target=target,
            logins=self.logins,
        )

    async def run_once(
        self, targets: Sequence[tuple[jobs.Target, dict[str, Sequence[str]] | None]]
    ) -> list[AccountResult]:
        """Collect every target once, concurrently; never raises for one account's failure."""
        slots = asyncio.Semaphore(max(1, self.plan.accounts_at_once))

        async def one(
            target: jobs.Target, overrides: dict[str, Sequence[str]] | None
        ) -> AccountResult:
            async with slots:
                return await self.collect_account(target, overrides)

        tasks = [
            asyncio.create_task(one(target, overrides), name=f"account:{target.name}")
            for target, overrides in targets
        ]
        return list(await asyncio.gather(*tasks))

    async def collect_account(
        self, target: jobs.Target, overrides: dict[str, Sequence[str]] | None = None
    ) -> AccountResult:
        """Every job for one account, in order; the outcome is stored on the account row."""
        result = AccountResult(target.name, target.ig_user_id)
        ctx = self.context(overrides, target)
        log = self.log.bind(account=target.name, ig_user_id=target.ig_user_id)
        started = self.clock.monotonic()
        calls_before = sum(self.client.calls.values())
        try:
            await self._collect(ctx, target, result)
        except errors.AccountError as exc:
            await self._fail(target, result, models.AccountStatus.UNHEALTHY, exc)
        except (errors.AccountThrottled, errors.AppThrottled) as exc:
            await self._fail(target, result, models.AccountStatus.THROTTLED, exc)
        except errors.GraphError as exc:
            await self._fail(target, result, models.AccountStatus.FAILING, exc)
        else:
            now = self.clock.now()
            result.pending.successes.append(models.AccountSuccess(target.ig_user_id, now))
            result.pending.statuses.append(
                models.AccountStatusChange(target.ig_user_id, models.AccountStatus.OK, None, now)
            )
            await self._flush(result)
        result.seconds = round(self.clock.monotonic() - started, 3)
        # Calls are counted process-wide; with concurrent accounts this is an approximation
        # that is exact when accounts run one at a time.
        result.calls = sum(self.client.calls.values()) - calls_before
        log.info(
            "account_pass_done",
            status=str(result.status),
            reason=result.reason,
            media_seen=result.media_seen,
            stories_seen=result.stories_seen,
            media_polled=result.media_polled,
            metric_rows=result.metric_rows,
            account_metric_rows=result.account_metric_rows,
            errors=result.errors,
            seconds=result.seconds,
        )
        return result

    async def park(self, target: jobs.Target, reason: str) -> AccountResult:
        """Record an account that must not be collected (its token could not be renewed)."""
        result = AccountResult(target.name, target.ig_user_id)
        await self._fail(
            target, result, models.AccountStatus.UNHEALTHY, errors.TokenInvalid(reason)
        )
        return result

    async def _fail(
        self,
        target: jobs.Target,
        result: AccountResult,
        status: models.AccountStatus,
        exc: errors.GraphError,
    ) -> None:
        now = self.clock.now()
        kept = getattr(exc, "batch", None)
        if isinstance(kept, models.Batch):
            await self._write(kept, result)
        result.status = status
        result.reason = exc.describe()[:500]
        result.errors += 1
        result.pending.errors.append(jobs._error_record(target, "account", None, exc, now))
        result.pending.statuses.append(
            models.AccountStatusChange(target.ig_user_id, status, result.reason, now)
        )
        await self._flush(result)
        self.log.warning(
            "account_failed",
            account=target.name,
            ig_user_id=target.ig_user_id,
            status=str(status),
            error=type(exc).__name__,
            code=exc.code,
            subcode=exc.subcode,
            message=str(exc)[:300],
        )

    async def _write(self, batch: models.Batch, result: AccountResult) -> None:
        """Buffer a job's rows; write when the buffer is large."""
        result.pending.extend(batch)
        result.metric_rows += len(batch.media_metrics)
        result.account_metric_rows += len(batch.account_metrics)
        result.errors += len(batch.errors)
        if len(result.pending) >= FLUSH_ROWS:
            await self._flush(result)

    async def _flush(self, result: AccountResult) -> None:
        batch, result.pending = result.pending, models.Batch()
        if len(batch):
            await self.store.write(batch)

    async def _collect(self, ctx: jobs.Context, target: jobs.Target, result: AccountResult) -> None:
        uid = target.ig_user_id
        if self.plan.check_tokens:
            _, batch = await jobs.token_check(ctx, target)
            await self._write(batch, result)

        jobs.checkpoint(ctx, target)
        await self._write(await jobs.profile(ctx, target), result)

        jobs.checkpoint(ctx, target)
        known = await self.store.known_media_ids(uid)
        batch = await jobs.media_discovery(ctx, target, known, walk_all=not known)
        result.media_seen = len(batch.media)
        await self._write(batch, result)

        jobs.checkpoint(ctx, target)
        listing = await jobs.story_discovery(
            ctx, target, insights=ctx.catalog.media_metrics(models.ObjectKind.STORY)
        )
        result.stories_seen = len(listing.batch.media)
        await self._write(listing.batch, result)

        jobs.checkpoint(ctx, target)
        now = self.clock.now()
        since = jobs.insights_since(
            await self.store.last_account_metric_end(uid),
            now,
            backfill_days=self.plan.backfill_days,
            repoll_days=self.plan.repoll_days,
        )
        batch = await jobs.account_insights(
            ctx, target, since=since, demographics=self.plan.demographics
        )
        await self._write(batch, result)

        jobs.checkpoint(ctx, target)
        await self._flush(result)  # the reads below see what this pass discovered
        media = await self.store.media_for_insights(uid, posted_after=now - self.plan.media_max_age)
        stories = await self.store.live_stories(uid, now=self.clock.now())
        final_start = self.clock.now() + ctx.story_final_lead
        # stories the listing already snapshotted need a call of their own only for a final
        # snapshot (it carries the navigation breakdown)
        finals = [s for s in stories if s.expires_at is not None and s.expires_at <= final_start]
        # the others the listing did not snapshot (it was refused: a story under 5 viewers)
        # get their plain metrics in the same batches as the feed media
        unpolled = [s for s in stories if s not in finals and s.media_id not in listing.polled]
        await self._poll_media(ctx, target, finals, result)
        jobs.checkpoint(ctx, target)
        batch = await jobs.media_insights_many(ctx, target, [*unpolled, *media])
        result.media_polled += len(batch.media_polls)
        await self._write(batch, result)

    async def _poll_media(
        self,
        ctx: jobs.Context,
        target: jobs.Target,
        items: list[models.Media],
        result: AccountResult,
    ) -> None:
        """Insights for each media object, ``per_account_in_flight`` at a time."""
        queue: asyncio.Queue[models.Media] = asyncio.Queue()
        for item in items:
            queue.put_nowait(item)
        pending = models.Batch()
        lock = asyncio.Lock()

        async def worker() -> None:
            nonlocal pending
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                jobs.checkpoint(ctx, target)
                batch = await jobs.media_insights(ctx, target, item)
                result.media_polled += 1
                async with lock:
                    pending.extend(batch)
                    if len(pending.media_metrics) >= FLUSH_ROWS:
                        full, pending = pending, models.Batch()
                        await self._write(full, result)

        workers = [
            asyncio.create_task(worker(), name=f"media:{target.name}:{i}")
            for i in range(max(1, self.plan.per_account_in_flight))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            # Whatever was collected before a failure is kept.
            await self._write(pending, result)


def summary_table(results: Sequence[AccountResult]) -> str:
    """A plain-text table of the pass, one line per account (for stderr)."""
    header = (
        "account",
        "ig_user_id",
        "status",
        "media",
        "stories",
        "polled",
        "rows",
        "errors",
        "reason",
    )
    rows = [header]
    for r in results:
        rows.append(
            (
                r.name,
                r.ig_user_id,
                str(r.status),
                str(r.media_seen),
                str(r.stories_seen),
                str(r.media_polled),
                str(r.metric_rows + r.account_metric_rows),
                str(r.errors),
                (r.reason or "")[:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )
