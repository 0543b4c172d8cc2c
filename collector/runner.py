"""Runs scheduled jobs: takes them from the scheduler, executes them, writes, reschedules.

The runner owns the in-memory picture of each account (its media, its live stories, when each
periodic job last ran) seeded from PostgreSQL at start, so a restart resumes where the last
process stopped. It never sleeps on a bare timer: the loop waits for "a job finished, the next
job is due, or stop/reload was asked", whichever comes first.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from collector import clock as clock_mod
from collector import errors, graph, jobs, metrics_catalog, models, scheduler
from collector import store as store_mod

Kind = scheduler.JobKind
#: retry spacing inside a story's final window after a failed final poll
FINAL_RETRY = timedelta(seconds=30)
#: how long a parked account (token, permission) waits before it is tried again by itself
PARK_RETRY = timedelta(hours=6)
#: retry spacing for a job whose transient failures outlasted the client's retries
FAILED_RETRY = timedelta(minutes=5)


@dataclasses.dataclass(frozen=True, slots=True)
class Cadence:
    """How often each job runs (from ``[schedule]``)."""

    profile: timedelta = timedelta(hours=1)
    account_insights: timedelta = timedelta(hours=6)
    demographics: timedelta = timedelta(days=1)
    media_discovery: timedelta = timedelta(hours=1)
    story_discovery: timedelta = timedelta(minutes=10)
    story_poll: timedelta = timedelta(hours=2)
    story_final_lead: timedelta = timedelta(minutes=25)
    token_check: timedelta = timedelta(days=1)
    token_expiry_warning: timedelta = timedelta(days=7)
    media_tiers: tuple[tuple[timedelta, timedelta], ...] = (
        (timedelta(days=2), timedelta(hours=1)),
        (timedelta(days=14), timedelta(hours=6)),
        (timedelta(days=90), timedelta(days=1)),
        (timedelta(days=730), timedelta(days=7)),
    )
    backfill_days: int = 90
    repoll_days: int = 3


@dataclasses.dataclass(slots=True)
class _MediaState:
    kind: models.ObjectKind
    media_type: str | None
    product_type: str | None
    posted_at: datetime | None
    expires_at: datetime | None = None
    last_polled: datetime | None = None
    final_taken: bool = False
    gone: bool = False


@dataclasses.dataclass(slots=True)
class AccountState:
    """What the runner knows about one account between jobs."""

    target: jobs.Target
    overrides: dict[str, Sequence[str]] | None
    context: jobs.Context
    media: dict[str, _MediaState] = dataclasses.field(default_factory=dict)
    status: models.AccountStatus | None = None
    #: end of the newest day bucket of account insights collected
    last_metric_end: datetime | None = None
    #: no nested story insights before this (the last expansion was refused)
    expand_after: datetime | None = None
    #: the rate-limit state last written to the account row
    usage_written: tuple[int | None, datetime | None, int] | None = None

    parked_reason: str | None = None
    parked_until: datetime | None = None
    token_warned_on: str | None = None


@dataclasses.dataclass
class Stats:
    """Counters for logs, ``/metrics`` and the demo."""

    jobs_done: int = 0
    jobs_failed: int = 0
    rows_buffered: int = 0
    stories_finalised: int = 0
    stories_missed: int = 0
    final_leads: list[float] = dataclasses.field(default_factory=list)
    throttle_pauses: int = 0
    #: times an account near its usage limit was held to its urgent jobs
    paced: int = 0
    max_lateness: float = 0.0


class Runner:
    """The collection loop over every configured account."""

    def __init__(
        self,
        *,
        client: Any,
        store: store_mod.Store,
        catalog: metrics_catalog.Catalog,
        clock: clock_mod.Clock,
        cadence: Cadence,
        max_in_flight: int = 8,
        per_account: int = 1,
        context_defaults: Mapping[str, Any] | None = None,
        write: Callable[[models.Batch], Any] | None = None,
        backpressure: Callable[[], bool] | None = None,
        telemetry: Any = None,
        log: Any = None,
        logins: Mapping[str, jobs.Login] | None = None,
    ) -> None:
        self.client = client
        #: each login's client and catalog (Instagram Login accounts use their own host)
        self.logins = logins
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.cadence = cadence
        self.max_in_flight = max_in_flight
        self.scheduler = scheduler.Scheduler(per_account=per_account)
        self.accounts: dict[str, AccountState] = {}
        self.stats = Stats()
        self.log = log or structlog.get_logger()
        self._context_defaults = dict(context_defaults or {})
        self._write_hook = write
        self._backpressure = backpressure or (lambda: False)
        #: ``telemetry.Telemetry`` or None (tests)
        self.telemetry = telemetry
        self.last_job_at: datetime | None = None
        self._running: dict[asyncio.Task[None], scheduler.Job] = {}
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ accounts

    def _context(
        self, target: jobs.Target, overrides: dict[str, Sequence[str]] | None
    ) -> jobs.Context:
        return jobs.context_for(
            client=self.client,
            catalog=self.catalog,
            clock=self.clock,
            log=self.log,
            overrides=overrides,
            defaults=self._context_defaults,
            target=target,
            logins=self.logins,
        )

    async def set_accounts(
        self, targets: Sequence[tuple[jobs.Target, dict[str, Sequence[str]] | None]]
    ) -> None:
        """Start added accounts, stop removed ones, apply token and override changes."""
        wanted = {t.ig_user_id: (t, o) for t, o in targets}
        for uid in list(self.accounts):
            if uid not in wanted:
                self.scheduler.remove_account(uid)
                del self.accounts[uid]
                self.log.info("account_stopped", ig_user_id=uid)
        for uid, (target, overrides) in wanted.items():
            state = self.accounts.get(uid)
            if state is None:
                state = AccountState(target, overrides, self._context(target, overrides))
                self.accounts[uid] = state
                await self._seed(state)
                self.log.info("account_started", account=target.name, ig_user_id=uid)
                continue
            token_changed = state.target.token != target.token
            login_changed = state.target.login != target.login
            state.target = target
            if overrides != state.overrides or login_changed:
                state.overrides = overrides
                state.context = self._context(target, overrides)
            if token_changed and state.parked_reason is not None:
                self.log.info("account_unparked", account=target.name, reason="token changed")
                await self._unpark(state)
        self._wake.set()

    async def _seed(self, state: AccountState) -> None:
        """Queue every job of one account, due as the database says (now if never done)."""
        uid = state.target.ig_user_id
        now = self.clock.now()
        c = self.cadence
        last = await self.store.last_captures(uid)
        state.last_metric_end = await self.store.last_account_metric_end(uid)
        periodic = [
            (Kind.TOKEN_CHECK, last.get("token_check"), c.token_check),
            (Kind.PROFILE, last.get("profile"), c.profile),
            (Kind.MEDIA_DISCOVERY, last.get("media_discovery"), c.media_discovery),
            (Kind.STORY_DISCOVERY, last.get("story_discovery"), c.story_discovery),
            (Kind.ACCOUNT_INSIGHTS, last.get("account_insights"), c.account_insights),
            (Kind.DEMOGRAPHICS, last.get("demographics"), c.demographics),
        ]
        for kind, when, every in periodic:
            self.scheduler.add(
                scheduler.job(kind, uid, scheduler.next_due(when, every, now), every=every)
            )
        for row in await self.store.media_schedule(uid, now=now):
            media = _MediaState(
                kind=models.ObjectKind.of_media(row.media_type, row.media_product_type),
                media_type=row.media_type,
                product_type=row.media_product_type,
                posted_at=row.posted_at,
                expires_at=row.expires_at,
                last_polled=row.last_polled_at,
                final_taken=row.final_captured_at is not None,
            )
            state.media[row.media_id] = media
            self._schedule_media(uid, row.media_id, media, now)

    def _schedule_media(self, uid: str, media_id: str, media: _MediaState, now: datetime) -> None:
        if media.gone:
            return
        if media.expires_at is not None:
            next_job = scheduler.story_poll(
                media_id,
                uid,
                expires_at=media.expires_at,
                last_polled=media.last_polled,
                final_taken=media.final_taken,
                now=now,
                poll_every=self.cadence.story_poll,
                lead=self.cadence.story_final_lead,
            )
        else:
            next_job = scheduler.media_poll(
                media_id,
                uid,
                posted_at=media.posted_at,
                last_polled=media.last_polled,
                now=now,
                tiers=self.cadence.media_tiers,
            )
        if next_job is not None:
            self.scheduler.add(next_job)

    async def _park(self, state: AccountState, exc: errors.GraphError) -> None:
        uid = state.target.ig_user_id
        now = self.clock.now()
        state.parked_reason = exc.describe()[:500]
        state.parked_until = now + PARK_RETRY
        state.status = models.AccountStatus.UNHEALTHY
        self.scheduler.park(uid)
        await self._write(
            models.Batch(
                errors=[jobs._error_record(state.target, "account", None, exc, now)],
                statuses=[
                    models.AccountStatusChange(
                        models.IgUserId(uid),
                        models.AccountStatus.UNHEALTHY,
                        state.parked_reason,
                        now,
                    )
                ],
            )
        )
        self.log.warning(
            "account_parked",
            account=state.target.name,
            ig_user_id=uid,
            error=type(exc).__name__,
            code=exc.code,
            subcode=exc.subcode,
            retry_at=state.parked_until.isoformat(),
        )

    async def park(self, ig_user_id: str, exc: errors.GraphError) -> None:
        """Stop an account from outside its jobs (a token that could not be renewed)."""
        state = self.accounts.get(ig_user_id)
        if state is not None and state.parked_reason is None:
            await self._park(state, exc)

    async def _unpark(self, state: AccountState) -> None:
        state.parked_reason = None
        state.parked_until = None
        uid = state.target.ig_user_id
        self.scheduler.remove_account(uid)
        self.scheduler.park(uid, parked=False)
        state.media.clear()
        await self._seed(state)

    async def _unpark_due(self, now: datetime) -> None:
        for state in list(self.accounts.values()):
            if state.parked_until is not None and state.parked_until <= now:
                self.log.info("account_retry", account=state.target.name, reason="park expired")
                try:
                    await self._unpark(state)
                except errors.StoreError as exc:
                    # its schedule is read from the database: try again once it answers
                    state.parked_until = now + FAILED_RETRY
                    self.log.warning("account_retry_deferred", message=str(exc)[:200])

    # ------------------------------------------------------------------ the loop

    def _start_ready(self) -> int:
        started = 0
        now = self.clock.now()
        # a full spool: only story work runs until the database takes rows again
        ceiling = scheduler.Priority.STORY if self._backpressure() else None
        while len(self._running) < self.max_in_flight:
            next_job = self.scheduler.take(now, max_priority=ceiling)
            if next_job is None:
                break
            lateness = (now - next_job.due_at).total_seconds()
            self.stats.max_lateness = max(self.stats.max_lateness, lateness)
            companions: list[scheduler.Job] = []
            if next_job.kind is Kind.MEDIA_INSIGHTS or (
                next_job.kind is Kind.STORY_INSIGHTS and not next_job.final
            ):
                # regular polls due at the same time share one batch request (finals, which
                # carry the navigation breakdown, go one by one)
                companions = self.scheduler.take_companions(
                    next_job.account,
                    next_job.kind,
                    now,
                    self._batch_room(next_job.account),
                    final=False,
                )
            task = asyncio.create_task(
                self._execute(next_job, companions), name=f"{next_job.kind}:{next_job.account}"
            )
            self._running[task] = next_job
            started += 1
        return started

    async def _reap(self, done: set[asyncio.Task[None]]) -> None:
        for task in done:
            finished = self._running.pop(task)
            self.scheduler.done(finished)
            exc = task.exception()
            if exc is not None:
                # A bug, or the database gone: let the daemon decide; never lose it silently.
                raise exc

    async def run_until_idle(self) -> None:
        """Run every job that is due now, and what they make due now, then return (tests)."""
        await self._unpark_due(self.clock.now())
        while True:
            self._start_ready()
            if not self._running:
                return
            done, _ = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            await self._reap(done)

    async def run(self, stop: asyncio.Event) -> None:
        """Run jobs until ``stop`` is set; in-flight jobs are left to :meth:`drain`."""
        while not stop.is_set():
            now = self.clock.now()
            await self._unpark_due(now)
            self._start_ready()
            wakeup = self.scheduler.next_wakeup(now)
            parked = [s.parked_until for s in self.accounts.values() if s.parked_until is not None]
            candidates = [w for w in [wakeup, *parked] if w is not None]
            timeout = (
                max(0.0, min((w - now).total_seconds() for w in candidates)) if candidates else 60.0
            )
            waiters: set[asyncio.Future[Any]] = set(self._running)
            stop_wait = asyncio.ensure_future(stop.wait())
            wake_wait = asyncio.ensure_future(self._wake.wait())
            waiters |= {stop_wait, wake_wait}
            try:
                done, _ = await asyncio.wait(
                    waiters, timeout=min(timeout, 60.0) + 0.001, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stop_wait.cancel()
                wake_wait.cancel()
            self._wake.clear()
            await self._reap({t for t in self._running if t in done})

    async def drain(self, deadline: float) -> int:
        """Let in-flight jobs finish within ``deadline`` seconds, cancel the rest; returns how many
        were cancelled."""
        if not self._running:
            return 0
        done, pending = await asyncio.wait(self._running, timeout=deadline)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in [*done, *pending]:
            finished = self._running.pop(task, None)
            if finished is not None:
                self.scheduler.done(finished)
        return len(pending)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    # ------------------------------------------------------------------ one job

    async def _write(self, batch: models.Batch) -> None:
        if not len(batch):
            return
        self.stats.rows_buffered += len(batch)
        if self._write_hook is not None:
            result = self._write_hook(batch)
            if asyncio.iscoroutine(result):
                await result
        else:
            await self.store.write(batch)

    async def _set_status(
        self, state: AccountState, status: models.AccountStatus, reason: str | None
    ) -> None:
        state.status = status
        change = models.AccountStatusChange(
            state.target.ig_user_id, status, reason, self.clock.now()
        )
        await self._write(models.Batch(statuses=[change]))

    def _pace(self, uid: str) -> None:
        """Near the account's usage limit, start only the jobs that cannot wait."""
        limiter = self.client.limiter
        level = limiter.level(uid)
        if level == "ok":
            self.scheduler.restrict(uid, None, None)
            return
        self.stats.paced += 1
        ceiling = scheduler.Priority.STORY_FINAL if level == "pause" else scheduler.Priority.STORY
        # re-examined after the floor: usage decays, and the next response tells
        self.scheduler.restrict(uid, ceiling, self.clock.now() + limiter.floor)

    def _batch_room(self, uid: str) -> int:
        """How many more media polls may ride along in one batch: as many as the account's
        budget allows before its high-water mark (a few while that is not known yet)."""
        headroom: int | None = self.client.limiter.headroom(uid)
        if headroom is None:
            return jobs.PROBE_BATCH - 1
        return max(0, min(graph.MAX_BATCH, headroom) - 1)

    async def _record_usage(self, state: AccountState) -> None:
        """Keep the account row's rate-limit columns current (on change, in whole percent)."""
        limiter = self.client.limiter
        usage = limiter.accounts.get(state.target.ig_user_id)
        if usage is None:
            return
        now = self.clock.now()
        paused = usage.paused_until if usage.paused_until and usage.paused_until > now else None
        percent = None if usage.percent is None else round(usage.percent)
        current = (percent, paused, usage.throttle_events)
        if current == state.usage_written:
            return
        state.usage_written = current
        await self._write(
            models.Batch(
                usages=[
                    models.AccountUsage(
                        state.target.ig_user_id, usage.percent, paused, usage.throttle_events, now
                    )
                ]
            )
        )

    async def _execute(self, job: scheduler.Job, companions: Sequence[scheduler.Job] = ()) -> None:
        state = self.accounts.get(job.account)
        if state is None or state.parked_reason is not None:
            return
        lateness = max(0.0, (self.clock.now() - job.due_at).total_seconds())
        outcome = "error"
        try:
            outcome = await self._execute_guarded(state, job, companions)
        finally:
            self._pace(job.account)
            self.last_job_at = self.clock.now()
            await self._record_usage(state)
            if self.telemetry is not None:
                self.telemetry.job_done(str(job.kind), outcome, lateness)

    async def _execute_guarded(
        self, state: AccountState, job: scheduler.Job, companions: Sequence[scheduler.Job] = ()
    ) -> str:
        """Run one job; returns its outcome for telemetry."""
        log = self.log.bind(account=state.target.name, job=str(job.kind), object_id=job.object_id)
        started = self.clock.monotonic()
        try:
            await self._dispatch(state, job, companions)
        except errors.BudgetPause as exc:
            # Usage reached the pause mark mid-job: keep what it got, run the rest later.
            if isinstance(exc.batch, models.Batch):
                await self._write(exc.batch)
            self.scheduler.add(job)
            log.info("account_paced", reason=str(exc))
            return "paced"
        except (errors.AccountThrottled, errors.AppThrottled) as exc:
            self.stats.throttle_pauses += 1
            until = self.client.limiter.blocked_until(job.account, self.clock.now())
            until = until or self.clock.now() + timedelta(seconds=exc.retry_after or 60)
            self.scheduler.block(job.account, until)
            self.scheduler.add(dataclasses.replace(job, due_at=min(job.due_at, until)))
            state.status = models.AccountStatus.THROTTLED
            await self._set_status(
                state,
                models.AccountStatus.THROTTLED,
                f"{type(exc).__name__}: paused until {until.isoformat()}",
            )
            log.warning(
                "account_throttled",
                error=type(exc).__name__,
                code=exc.code,
                paused_until=until.isoformat(),
            )
            return "throttled"
        except errors.AccountError as exc:
            await self._park(state, exc)
            return "account_error"
        except errors.GraphError as exc:
            self.stats.jobs_failed += 1
            now = self.clock.now()
            await self._write(
                models.Batch(
                    errors=[
                        jobs._error_record(state.target, str(job.kind), job.object_id, exc, now)
                    ]
                )
            )
            self._retry_later(job, now)
            if state.status is not models.AccountStatus.FAILING:
                await self._set_status(state, models.AccountStatus.FAILING, exc.describe()[:500])
            log.warning(
                "job_failed",
                error=type(exc).__name__,
                code=exc.code,
                message=str(exc)[:300],
                seconds=round(self.clock.monotonic() - started, 3),
            )
            return "failed"
        self.stats.jobs_done += 1
        if state.status is not models.AccountStatus.OK:
            await self._set_status(state, models.AccountStatus.OK, None)
        log.debug("job_done", seconds=round(self.clock.monotonic() - started, 3))
        return "ok"

    def _retry_later(self, job: scheduler.Job, now: datetime) -> None:
        if job.kind is Kind.STORY_INSIGHTS:
            state = self.accounts[job.account]
            media = state.media.get(job.object_id or "")
            if media is None or media.expires_at is None:
                return
            retry_at = now + FINAL_RETRY if job.final else now + FAILED_RETRY
            final_start = media.expires_at - self.cadence.story_final_lead
            if not job.final and retry_at >= final_start:
                retry_at = max(final_start, now)
            if retry_at < media.expires_at:
                final = job.final or retry_at >= final_start
                self.scheduler.add(
                    dataclasses.replace(
                        job,
                        due_at=retry_at,
                        final=final,
                        priority=scheduler.Priority.STORY_FINAL if final else job.priority,
                    )
                )
            else:
                self._story_missed(job.account, job.object_id or "", media, "retries ran out")
            return
        self.scheduler.add(dataclasses.replace(job, due_at=now + FAILED_RETRY))

    def _story_missed(self, uid: str, story_id: str, media: _MediaState, why: str) -> None:
        media.gone = True
        self.stats.stories_missed += 1
        if self.telemetry is not None:
            self.telemetry.story_final(False)
        self.log.warning("story_final_missed", ig_user_id=uid, media_id=story_id, reason=why)

    async def _dispatch(
        self, state: AccountState, job: scheduler.Job, companions: Sequence[scheduler.Job] = ()
    ) -> None:
        ctx = state.context
        target = state.target
        uid = target.ig_user_id
        c = self.cadence
        now = self.clock.now()
        kind = job.kind

        def again(every: timedelta) -> None:
            stretch = self.client.limiter.pacing_delay(uid, every)
            self.scheduler.add(
                scheduler.job(kind, uid, self.clock.now() + every + stretch, every=every)
            )

        if kind is Kind.TOKEN_CHECK:
            await self._token_check(state)
            again(c.token_check)
        elif kind is Kind.PROFILE:
            batch = await jobs.profile(ctx, target)
            batch.successes.append(models.AccountSuccess(uid, self.clock.now()))
            await self._write(batch)
            again(c.profile)
        elif kind is Kind.MEDIA_DISCOVERY:
            known = set(state.media)
            batch = await jobs.media_discovery(ctx, target, known, walk_all=not known)
            await self._write(batch)
            for media in batch.media:
                if media.media_id not in state.media:
                    self._add_media(state, media)
            again(c.media_discovery)
        elif kind is Kind.STORY_DISCOVERY:
            await self._story_discovery(state, now)
            again(c.story_discovery)
        elif kind in (Kind.ACCOUNT_INSIGHTS, Kind.DEMOGRAPHICS):
            demographics = kind is Kind.DEMOGRAPHICS
            if demographics:
                since = now
            else:
                since = jobs.insights_since(
                    state.last_metric_end,
                    now,
                    backfill_days=c.backfill_days,
                    repoll_days=c.repoll_days,
                )
            batch = await jobs.account_insights(
                ctx, target, since=since, daily=not demographics, demographics=demographics
            )
            await self._write(batch)
            ends = [m.end_time for m in batch.account_metrics if m.period == "day"]
            if ends and (state.last_metric_end is None or max(ends) > state.last_metric_end):
                state.last_metric_end = max(ends)
            again(c.demographics if demographics else c.account_insights)
        elif kind is Kind.MEDIA_INSIGHTS or (kind is Kind.STORY_INSIGHTS and companions):
            try:
                await self._media_batch(state, [job, *companions])
            except BaseException as exc:
                # the caller puts the main job back; its companions go back here, as late
                # as the main job's retry unless a pause (which holds them anyway) stopped it
                paused = isinstance(exc, errors.AccountThrottled | errors.AppThrottled)
                retry_at = self.clock.now() + FAILED_RETRY
                for companion in companions:
                    self.scheduler.add(
                        companion
                        if paused
                        else dataclasses.replace(companion, due_at=max(companion.due_at, retry_at))
                    )
                raise
        elif kind is Kind.STORY_INSIGHTS:
            await self._media_job(state, job)

    @staticmethod
    def _media_state(media: models.Media) -> _MediaState:
        return _MediaState(
            kind=media.kind,
            media_type=media.media_type,
            product_type=media.media_product_type,
            posted_at=media.posted_at,
            expires_at=media.expires_at,
        )

    def _add_media(self, state: AccountState, media: models.Media) -> None:
        entry = self._media_state(media)
        state.media[media.media_id] = entry
        self._schedule_media(state.target.ig_user_id, media.media_id, entry, self.clock.now())

    async def _story_discovery(self, state: AccountState, now: datetime) -> None:
        """List live stories; when a poll is due soon, their insights come in the same call."""
        ctx = state.context
        target = state.target
        uid = target.ig_user_id
        c = self.cadence
        expand = self._should_expand(state, now)
        listing = await jobs.story_discovery(
            ctx,
            target,
            insights=ctx.catalog.media_metrics(models.ObjectKind.STORY) if expand else (),
        )
        await self._write(listing.batch)
        if listing.expansion_error is not None:
            state.expand_after = self.clock.now() + c.story_poll
            self.log.info(
                "story_expansion_refused", account=target.name, reason=listing.expansion_error
            )
        polled_at = self.clock.now()
        for story in listing.batch.media:
            entry = state.media.get(story.media_id)
            if entry is None:
                entry = self._media_state(story)
                state.media[story.media_id] = entry
            elif story.media_id not in listing.polled:
                continue
            if story.media_id in listing.polled:
                entry.last_polled = polled_at
            self._schedule_media(uid, story.media_id, entry, polled_at)

    def _should_expand(self, state: AccountState, now: datetime) -> bool:
        """Ask ``/stories`` for insights too when a regular story poll is due before the next
        listing: one call then snapshots every live story of the account."""
        if state.expand_after is not None and state.expand_after > now:
            return False
        horizon = now + self.cadence.story_discovery
        uid = state.target.ig_user_id
        for media_id, entry in state.media.items():
            if entry.expires_at is None or entry.gone or entry.final_taken:
                continue
            queued = self.scheduler.queued((uid, Kind.STORY_INSIGHTS, media_id))
            if queued is not None and not queued.final and queued.due_at <= horizon:
                return True
        return False

    async def _media_batch(self, state: AccountState, batch_jobs: list[scheduler.Job]) -> None:
        """Polls due together for one account, 50 to a round trip: feed media, or the regular
        (not final) polls of stories whose listing was refused."""
        uid = state.target.ig_user_id
        now = self.clock.now()
        items: list[models.Media] = []
        by_id: dict[str, scheduler.Job] = {}
        alone: list[scheduler.Job] = []
        for queued in batch_jobs:
            entry = state.media.get(queued.object_id or "")
            if entry is None or entry.gone:
                continue
            if entry.expires_at is not None and (
                now >= entry.expires_at - self.cadence.story_final_lead
            ):
                # late into its final window (or past it): a final snapshot, one by one
                alone.append(dataclasses.replace(queued, final=True))
                continue
            by_id[queued.object_id or ""] = queued
            items.append(_media_record(uid, queued.object_id or "", entry, now))
        for queued in alone:
            await self._media_job(state, queued)
        if not items:
            return
        batch = await jobs.media_insights_many(state.context, state.target, items)
        await self._write(batch)
        now = self.clock.now()
        polls = {p.media_id: p for p in batch.media_polls}
        for media_id, queued in by_id.items():
            entry = state.media[media_id]
            poll = polls.get(models.MediaId(media_id))
            if poll is None:
                # no answer through every retry round: recorded as an error, tried again later
                self.scheduler.add(dataclasses.replace(queued, due_at=now + FAILED_RETRY))
                continue
            entry.last_polled = now
            if poll.status in (
                models.InsightsStatus.GONE,
                models.InsightsStatus.BEFORE_CONVERSION,
                models.InsightsStatus.UNAVAILABLE,
            ):
                entry.gone = True
                if entry.expires_at is not None and not entry.final_taken:
                    self._story_missed(uid, media_id, entry, poll.reason or "gone")
                continue
            self._schedule_media(uid, media_id, entry, now)

    async def _media_job(self, state: AccountState, job: scheduler.Job) -> None:
        media_id = job.object_id or ""
        entry = state.media.get(media_id)
        if entry is None or entry.gone:
            return
        uid = state.target.ig_user_id
        media = _media_record(uid, media_id, entry, self.clock.now())
        # a final snapshot uses the reserve above the pause mark: it cannot wait
        ctx = (
            dataclasses.replace(state.context, yield_at_pause=False) if job.final else state.context
        )
        batch = await jobs.media_insights(ctx, state.target, media)
        await self._write(batch)
        now = self.clock.now()
        entry.last_polled = now
        poll = batch.media_polls[-1] if batch.media_polls else None
        status = poll.status if poll else models.InsightsStatus.OK
        if entry.expires_at is not None:
            if poll is not None and poll.is_final:
                entry.final_taken = True
                self.stats.stories_finalised += 1
                lead = (entry.expires_at - poll.polled_at).total_seconds()
                self.stats.final_leads.append(lead)
                if self.telemetry is not None:
                    self.telemetry.story_final(True, lead)
                self.log.info(
                    "story_finalised",
                    account=state.target.name,
                    media_id=media_id,
                    lead_seconds=round(lead, 1),
                    late_seconds=round((now - job.due_at).total_seconds(), 1),
                )
            elif job.final and status is models.InsightsStatus.BELOW_THRESHOLD:
                entry.final_taken = True  # below 5 viewers at the end: that is the final word
            elif status is models.InsightsStatus.GONE:
                entry.gone = True
                if not entry.final_taken:
                    self._story_missed(
                        uid, media_id, entry, (poll.reason if poll else None) or "gone"
                    )
                return
        elif status in (
            models.InsightsStatus.GONE,
            models.InsightsStatus.BEFORE_CONVERSION,
            models.InsightsStatus.UNAVAILABLE,
        ):
            entry.gone = True
            return
        self._schedule_media(uid, media_id, entry, now)

    async def _token_check(self, state: AccountState) -> None:
        target = state.target
        try:
            info, batch = await jobs.token_check(state.context, target)
        except errors.TokenInvalid as exc:
            if isinstance(exc.batch, models.Batch):
                await self._write(exc.batch)  # token_valid = false, for account_health
            raise
        await self._write(batch)
        now = self.clock.now()
        if self.telemetry is not None:
            expires = info.expires_at or target.token_expires_at
            self.telemetry.set_token_lifetime(
                target.name, (expires - now).total_seconds() if expires is not None else None
            )
        soonest = min(
            (t for t in (info.expires_at, info.data_access_expires_at) if t is not None),
            default=None,
        )
        if soonest is not None and soonest - now <= self.cadence.token_expiry_warning:
            self.log.warning(
                "token_expiring",
                account=target.name,
                ig_user_id=target.ig_user_id,
                expires_at=soonest.isoformat(),
                days_left=round((soonest - now).total_seconds() / 86400, 1),
            )


def _media_record(uid: str, media_id: str, entry: _MediaState, now: datetime) -> models.Media:
    """What a job needs of a media object, from the runner's light in-memory state."""
    return models.Media(
        media_id=models.MediaId(media_id),
        ig_user_id=models.IgUserId(uid),
        media_type=entry.media_type,
        media_product_type=entry.product_type,
        posted_at=entry.posted_at,
        permalink=None,
        caption=None,
        expires_at=entry.expires_at,
        seen_at=now,
    )
