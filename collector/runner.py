"""The one collection engine: takes due jobs from the scheduler, runs them, writes, reschedules.

The daemon runs it until stopped; ``run --once`` runs it with every job due now until nothing
is due, then reads its per-account tallies for the summary. Both go through the same jobs, the
same writer and spool, and the same failure policy.

The runner owns the in-memory picture of each account (its media, its live stories, when each
periodic job last ran) seeded from PostgreSQL, so a restart resumes where the last process
stopped; when the database cannot be read at start, the account starts on story work and its
schedule is completed once the database answers. Memory follows live work: a story leaves it
when its final window closes, a post when it is too old to poll. The loop never sleeps on a bare
timer: it waits for "a job finished, the next job is due, or stop was asked".
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from collector import clock as clock_mod
from collector import (
    errors,
    graph,
    jobs,
    metrics_catalog,
    models,
    ratelimit,
    records,
    scheduler,
    stories,
)
from collector import plan as plan_mod
from collector import store as store_mod
from collector import telemetry as telemetry_mod
from collector import writer as writer_mod

Kind = scheduler.JobKind
Key = tuple[str, scheduler.JobKind, str | None]
#: retry spacing inside a story's final window after a failed final poll
FINAL_RETRY = timedelta(seconds=30)
#: how long a parked account (token, permission) waits before it is tried again by itself
PARK_RETRY = timedelta(hours=6)
#: retry spacing for a job whose transient failures outlasted the client's retries
FAILED_RETRY = timedelta(minutes=5)
#: ids of posts too old to poll kept per account, so discovery still knows where to stop
RETIRED_KEPT = 64
#: a media poll whose answer says there will be no more insights
_FINISHED = (
    models.InsightsStatus.GONE,
    models.InsightsStatus.BEFORE_CONVERSION,
    models.InsightsStatus.UNAVAILABLE,
)
#: how bad an account's outcome is, for the verdict of a pass (higher is worse)
_SEVERITY = {
    models.AccountStatus.OK: 0,
    models.AccountStatus.FAILING: 1,
    models.AccountStatus.THROTTLED: 2,
    models.AccountStatus.UNHEALTHY: 3,
}


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
class Tally:
    """What an account's jobs did (the ``run --once`` summary, logs)."""

    jobs_done: int = 0
    jobs_failed: int = 0
    media_seen: int = 0
    stories_seen: int = 0
    media_polled: int = 0
    metric_rows: int = 0
    errors: int = 0
    #: the worst outcome seen, and why (the verdict of a pass)
    worst: models.AccountStatus = models.AccountStatus.OK
    reason: str | None = None

    def saw(self, status: models.AccountStatus, reason: str | None) -> None:
        if _SEVERITY.get(status, 0) > _SEVERITY.get(self.worst, 0):
            self.worst, self.reason = status, reason


@dataclasses.dataclass(slots=True)
class AccountState:
    """What the runner knows about one account between jobs."""

    target: jobs.Target
    overrides: dict[str, Sequence[str]] | None
    context: jobs.Context
    media: dict[str, _MediaState] = dataclasses.field(default_factory=dict)
    #: newest ids of posts no longer polled (discovery stops at a known id)
    retired: collections.deque[str] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RETIRED_KEPT)
    )
    status: models.AccountStatus | None = None
    #: the schedule was read from the database (False: it could not be, story work only)
    seeded: bool = False
    #: end of the newest day bucket of account insights collected
    last_metric_end: datetime | None = None
    #: no nested story insights before this (the last expansion was refused)
    expand_after: datetime | None = None
    #: the rate-limit state last written to the account row
    usage_written: tuple[int | None, datetime | None, int] | None = None
    parked_reason: str | None = None
    parked_until: datetime | None = None
    tally: Tally = dataclasses.field(default_factory=Tally)

    def known_ids(self) -> set[str]:
        return {*self.media, *self.retired}


@dataclasses.dataclass
class Stats:
    """Counters for logs, ``/metrics`` and the demo (fixed size, whatever the uptime)."""

    jobs_done: int = 0
    jobs_failed: int = 0
    rows_buffered: int = 0
    stories_finalised: int = 0
    stories_missed: int = 0
    #: the misses by reason (a few keys: ``models.MissReason``)
    missed_by_reason: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    throttle_pauses: int = 0
    #: times an account near its usage limit was held to its urgent jobs
    paced: int = 0
    max_lateness: float = 0.0


class Runner:
    """The collection loop over every account it is given."""

    def __init__(
        self,
        *,
        client: graph.GraphClient,
        limiter: ratelimit.Limiter,
        store: store_mod.Store,
        writer: writer_mod.Writer,
        catalog: metrics_catalog.Catalog,
        clock: clock_mod.Clock,
        plan: plan_mod.Plan,
        telemetry: telemetry_mod.Telemetry | None = None,
        log: structlog.stdlib.BoundLogger | None = None,
        once: bool = False,
        logins: Mapping[str, jobs.Login] | None = None,
    ) -> None:
        self.client = client
        #: each login's client and catalog (Instagram Login accounts use their own host)
        self.logins = logins
        self.limiter = limiter
        self.store = store
        self.writer = writer
        self.catalog = catalog
        self.clock = clock
        self.plan = plan
        self.telemetry = telemetry
        self.log: structlog.stdlib.BoundLogger = log or structlog.get_logger()
        self.scheduler = scheduler.Scheduler(per_account=plan.per_account_in_flight)
        self.accounts: dict[str, AccountState] = {}
        self.stats = Stats()
        self.last_job_at: datetime | None = None
        #: ``run --once``: every job due now, each key run at most once
        self.once = once
        self._ran: set[Key] = set()
        #: (expires_at, account, story id) of every story in memory, soonest first
        self._expiries: list[tuple[datetime, str, str]] = []
        self._running: dict[asyncio.Task[None], scheduler.Job] = {}
        self._wake = asyncio.Event()
        #: cluster mode: whether this process still holds an account's lease, and its epoch
        self.gate: Callable[[str], bool] | None = None
        self.epoch_of: Callable[[str], int | None] | None = None

    # ------------------------------------------------------------------ plan and accounts

    def _context(
        self, target: jobs.Target, overrides: dict[str, Sequence[str]] | None
    ) -> jobs.Context:
        return jobs.context_for(
            client=self.client,
            limiter=self.limiter,
            catalog=self.catalog,
            clock=self.clock,
            plan=self.plan,
            log=self.log,
            overrides=overrides,
            target=target,
            logins=self.logins,
        )

    def apply_plan(self, plan: plan_mod.Plan) -> None:
        """Use a new plan from now on: the scheduler, every job context and every queued
        media and story poll (a new final lead moves the queued finals) change at once."""
        self.plan = plan
        self.scheduler.per_account = plan.per_account_in_flight
        now = self.clock.now()
        for uid, state in self.accounts.items():
            state.context = self._context(state.target, state.overrides)
            for media_id, media in list(state.media.items()):
                if media.gone or (media.expires_at is not None and media.final_taken):
                    continue
                self._schedule_media(state, media_id, media, now)
            self.log.debug("plan_applied", ig_user_id=uid)
        self._wake.set()

    async def set_accounts(
        self, targets: Sequence[tuple[jobs.Target, dict[str, Sequence[str]] | None]]
    ) -> None:
        """Start added accounts, stop removed ones, apply token and override changes."""
        wanted = {t.ig_user_id: (t, o) for t, o in targets}
        readable = True
        await self.stop_accounts([uid for uid in self.accounts if uid not in wanted])
        for uid, (target, overrides) in wanted.items():
            state = self.accounts.get(uid)
            if state is None:
                state = AccountState(target, overrides, self._context(target, overrides))
                self.accounts[uid] = state
                readable = await self._seed(state, read=readable)
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

    async def stop_accounts(self, uids: Sequence[str]) -> None:
        """Stop collecting accounts now: their running jobs are cancelled (what they collected
        goes to the writer while this process may still write for them) and they leave memory."""
        gone = set(uids) & set(self.accounts)
        if not gone:
            return
        running = [t for t, j in self._running.items() if j.account in gone]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
            for task in running:
                finished = self._running.pop(task, None)
                if finished is not None:
                    self.scheduler.done(finished)
        for uid in gone:
            self.scheduler.remove_account(uid)
            del self.accounts[uid]
            self.log.info("account_stopped", ig_user_id=uid)

    def _stamp(self, uid: str, batch: models.Batch) -> None:
        """The lease epoch on the account bookkeeping (cluster mode)."""
        epoch = self.epoch_of(uid) if self.epoch_of is not None else None
        if epoch is None:
            return
        for part in records.FENCED:
            found = getattr(batch, part)
            found[:] = [dataclasses.replace(r, epoch=epoch) for r in found]

    def _queue(self, job: scheduler.Job) -> None:
        """Queue a job; in ``run --once`` a job already run in this pass is not queued again
        (its next occurrence belongs to the next pass)."""
        if self.once and job.key in self._ran:
            return
        self.scheduler.add(job)

    async def _seed(self, state: AccountState, *, read: bool = True) -> bool:
        """Queue every job of one account, due as the database says (now if never done).

        When the database cannot be read, only the work that cannot wait is queued (stories,
        the profile, the token) and the rest follows once it answers (:meth:`seed_pending`).
        """
        uid = state.target.ig_user_id
        now = self.clock.now()
        p = self.plan
        try:
            last, schedule = await self._read_schedule(state, now, read=read)
        except errors.DatabaseUnavailable as exc:
            if not state.seeded and not self._has_story_jobs(uid):
                for kind, every in (
                    (Kind.STORY_DISCOVERY, p.story_discovery),
                    (Kind.TOKEN_CHECK, p.token_check),
                    (Kind.PROFILE, p.profile),
                ):
                    self._queue(scheduler.job(kind, uid, now, every=every))
            self.log.warning(
                "account_seed_deferred",
                account=state.target.name,
                reason="the database cannot be read: story work first, the rest once it answers",
                message=str(exc)[:200],
            )
            return False
        if self.once:
            last = {}  # a full pass: every periodic job now, every post polled
        periodic = [
            (Kind.TOKEN_CHECK, p.token_check),
            (Kind.PROFILE, p.profile),
            (Kind.MEDIA_DISCOVERY, p.media_discovery),
            (Kind.STORY_DISCOVERY, p.story_discovery),
            (Kind.ACCOUNT_INSIGHTS, p.account_insights),
            (Kind.DEMOGRAPHICS, p.demographics),
        ]
        for kind, every in periodic:
            if self.scheduler.queued((uid, kind, None)) is not None:
                continue  # queued while the database was away: it keeps its due time
            due = scheduler.next_due(last.get(str(kind)), every, now)
            self._queue(scheduler.job(kind, uid, due, every=every))
        for row in schedule:
            if row.media_id in state.media:
                continue  # already known from this process's own listings
            media = _MediaState(
                kind=models.ObjectKind.of_media(row.media_type, row.media_product_type),
                media_type=row.media_type,
                product_type=row.media_product_type,
                posted_at=row.posted_at,
                expires_at=row.expires_at,
                last_polled=None if self.once else row.last_polled_at,
                final_taken=row.final_captured_at is not None,
            )
            self._remember(state, row.media_id, media)
            self._schedule_media(state, row.media_id, media, now)
        state.seeded = True
        return True

    async def _read_schedule(
        self, state: AccountState, now: datetime, *, read: bool
    ) -> tuple[dict[str, datetime], list[models.MediaSchedule]]:
        if not read:
            raise errors.DatabaseUnavailable("the database did not answer for another account")
        uid = state.target.ig_user_id
        missed = await self.store.stories_missed_while_down(uid, now=now)
        if missed:
            self.stats.stories_missed += len(missed)
            self.stats.missed_by_reason[str(models.MissReason.PROCESS_DOWN)] += len(missed)
            if self.telemetry is not None:
                for _ in missed:
                    self.telemetry.story_final(False, reason=str(models.MissReason.PROCESS_DOWN))
            self.log.warning(
                "stories_missed_while_down",
                account=state.target.name,
                stories=len(missed),
                reason="they expired while no collector ran",
            )
        last = await self.store.last_captures(uid)
        state.last_metric_end = await self.store.last_account_metric_end(uid)
        return last, await self.store.media_schedule(uid, now=now)

    def _has_story_jobs(self, uid: str) -> bool:
        return self.scheduler.queued((uid, Kind.STORY_DISCOVERY, None)) is not None

    async def seed_pending(self) -> int:
        """Complete the schedule of accounts started while the database was away; returns
        how many were completed."""
        done = 0
        for state in list(self.accounts.values()):
            if state.seeded or state.parked_reason is not None:
                continue
            if not await self._seed(state):
                break  # still away
            done += 1
        if done:
            self.log.info("account_seeds_completed", accounts=done)
            self._wake.set()
        return done

    def _remember(self, state: AccountState, media_id: str, media: _MediaState) -> None:
        state.media[media_id] = media
        if media.expires_at is not None:
            heapq.heappush(self._expiries, (media.expires_at, state.target.ig_user_id, media_id))

    def _evict(self, now: datetime) -> None:
        """Stories whose final window has closed leave memory (nothing more is asked)."""
        while self._expiries and stories.expired(now, self._expiries[0][0]):
            _, uid, media_id = heapq.heappop(self._expiries)
            state = self.accounts.get(uid)
            if state is None:
                continue
            media = state.media.get(media_id)
            if (
                media is None
                or media.expires_at is None
                or not stories.expired(now, media.expires_at)
            ):
                continue
            if not media.final_taken and not media.gone:
                self._story_missed(state, media_id, media, self._why_missed(state, now), None)
            del state.media[media_id]
            self.scheduler.discard((uid, Kind.STORY_INSIGHTS, media_id))

    def _schedule_media(
        self, state: AccountState, media_id: str, media: _MediaState, now: datetime
    ) -> None:
        if media.gone:
            return
        uid = state.target.ig_user_id
        p = self.plan
        if media.expires_at is not None:
            next_job = scheduler.story_poll(
                media_id,
                uid,
                expires_at=media.expires_at,
                last_polled=media.last_polled,
                final_taken=media.final_taken,
                now=now,
                poll_every=p.story_poll,
                lead=p.story_final_lead,
            )
        else:
            next_job = scheduler.media_poll(
                media_id,
                uid,
                posted_at=media.posted_at,
                last_polled=media.last_polled,
                now=now,
                tiers=p.media_tiers,
            )
            if next_job is None:
                # too old to poll: forget it, but keep its id for discovery to stop at
                state.media.pop(media_id, None)
                state.retired.append(media_id)
                self.scheduler.discard((uid, Kind.MEDIA_INSIGHTS, media_id))
                return
        if next_job is not None:
            self._queue(next_job)

    async def park(self, ig_user_id: str, exc: errors.GraphError) -> None:
        """Stop an account from outside its jobs (a token that could not be renewed)."""
        state = self.accounts.get(ig_user_id)
        if state is not None and state.parked_reason is None:
            await self._park(state, exc)

    async def _park(self, state: AccountState, exc: errors.GraphError) -> None:
        uid = state.target.ig_user_id
        now = self.clock.now()
        state.parked_reason = exc.describe()[:500]
        state.parked_until = now + PARK_RETRY
        state.status = models.AccountStatus.UNHEALTHY
        state.tally.saw(models.AccountStatus.UNHEALTHY, state.parked_reason)
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
            ),
            state,
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

    async def _unpark(self, state: AccountState) -> None:
        state.parked_reason = None
        state.parked_until = None
        uid = state.target.ig_user_id
        self.scheduler.remove_account(uid)
        self.scheduler.park(uid, parked=False)
        state.media.clear()
        state.seeded = False
        await self._seed(state)

    async def _unpark_due(self, now: datetime) -> None:
        for state in list(self.accounts.values()):
            if state.parked_until is not None and state.parked_until <= now:
                self.log.info("account_retry", account=state.target.name, reason="park expired")
                await self._unpark(state)

    # ------------------------------------------------------------------ the loop

    def _start_ready(self) -> int:
        started = 0
        now = self.clock.now()
        # a full spool: only story work runs until the database takes rows again
        ceiling = scheduler.Priority.STORY if self.writer.backpressure else None
        while len(self._running) < self.plan.max_in_flight:
            next_job = self.scheduler.take(now, max_priority=ceiling)
            if next_job is None:
                break
            if self.gate is not None and not self.gate(next_job.account):
                # the lease is going (or gone): nothing starts for the account; the cluster
                # loop stops it or renews the lease within a heartbeat
                self.scheduler.done(next_job)
                self.scheduler.block(next_job.account, now + timedelta(seconds=1))
                self.scheduler.add(next_job)
                continue
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
            if self.once:
                self._ran.update(j.key for j in (next_job, *companions))
            task = asyncio.create_task(
                self._execute(next_job, companions), name=f"{next_job.kind}:{next_job.account}"
            )
            self._running[task] = next_job
            started += 1
        return started

    async def _reap(self, done: set[asyncio.Task[None]]) -> None:
        for task in done:
            finished = self._running.pop(task, None)
            if finished is not None:
                self.scheduler.done(finished)
            if task.cancelled():
                # stop_accounts cancelled it (a lease lost): reaped here or there, not a crash
                continue
            exc = task.exception()
            if exc is not None:
                # a bug: let the daemon stop loudly rather than lose it silently
                raise exc

    async def run_until_idle(self) -> None:
        """Run every job that is due now, and what they make due now, then return."""
        now = self.clock.now()
        self._evict(now)
        await self._unpark_due(now)
        while True:
            self._start_ready()
            if not self._running:
                return
            done, _ = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            await self._reap(done)

    async def run_once(self) -> None:
        """``run --once``: every job due now, until nothing is due; then each account's
        verdict (the worst outcome of its jobs) is recorded on its row."""
        await self.run_until_idle()
        now = self.clock.now()
        for uid, state in self.accounts.items():
            left = [j for j in self.scheduler.jobs() if j.account == uid and j.due_at <= now]
            tally = state.tally
            if left and tally.worst is models.AccountStatus.OK and state.parked_reason is None:
                tally.saw(
                    models.AccountStatus.THROTTLED,
                    f"usage near the limit: {len(left)} job(s) left for the next pass",
                )
            verdict = tally.worst
            self.log.info(
                "account_pass_done",
                account=state.target.name,
                ig_user_id=uid,
                status=str(verdict),
                reason=tally.reason,
                jobs_done=tally.jobs_done,
                jobs_failed=tally.jobs_failed,
                media_seen=tally.media_seen,
                stories_seen=tally.stories_seen,
                media_polled=tally.media_polled,
                metric_rows=tally.metric_rows,
                errors=tally.errors,
            )
            if verdict is not models.AccountStatus.OK:
                self.log.warning(
                    "account_failed",
                    account=state.target.name,
                    ig_user_id=uid,
                    status=str(verdict),
                    reason=(tally.reason or "")[:300],
                )
            batch = models.Batch(
                statuses=[models.AccountStatusChange(state.target.ig_user_id, verdict, None, now)]
            )
            if verdict is models.AccountStatus.OK:
                batch.successes.append(models.AccountSuccess(state.target.ig_user_id, now))
            else:
                batch.statuses[0] = dataclasses.replace(batch.statuses[0], reason=tally.reason)
            await self._write(batch, state)

    async def run(self, stop: asyncio.Event) -> None:
        """Run jobs until ``stop`` is set; in-flight jobs are left to :meth:`drain`."""
        while not stop.is_set():
            now = self.clock.now()
            self._evict(now)
            await self._unpark_due(now)
            self._start_ready()
            wakeup = self.scheduler.next_wakeup(now)
            parked = [s.parked_until for s in self.accounts.values() if s.parked_until is not None]
            expiry = self._expiries[0][0] if self._expiries else None
            candidates = [w for w in [wakeup, expiry, *parked] if w is not None]
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
        """Let in-flight jobs finish within ``deadline`` seconds, cancel the rest (what they
        had collected goes to the writer); returns how many were cancelled."""
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

    def _take_in(self, batch: models.Batch, state: AccountState | None) -> None:
        """Count a batch into the stats and the account's tally, stamp its lease epoch."""
        self.stats.rows_buffered += len(batch)
        if state is not None:
            state.tally.metric_rows += len(batch.media_metrics) + len(batch.account_metrics)
            state.tally.errors += len(batch.errors)
            self._stamp(state.target.ig_user_id, batch)

    async def _write(self, batch: models.Batch, state: AccountState | None = None) -> None:
        if not len(batch):
            return
        self._take_in(batch, state)
        await self.writer.write(batch)

    async def _set_status(
        self, state: AccountState, status: models.AccountStatus, reason: str | None
    ) -> None:
        state.status = status
        state.tally.saw(status, reason)
        change = models.AccountStatusChange(
            state.target.ig_user_id, status, reason, self.clock.now()
        )
        await self._write(models.Batch(statuses=[change]), state)

    def _pace(self, uid: str) -> None:
        """Near the account's usage limit, start only the jobs that cannot wait."""
        level = self.limiter.level(uid, self.clock.now())
        if level == "ok":
            self.scheduler.restrict(uid, None, None)
            return
        self.stats.paced += 1
        ceiling = scheduler.Priority.STORY_FINAL if level == "pause" else scheduler.Priority.STORY
        # re-examined after the floor: usage decays, and the next response tells
        self.scheduler.restrict(uid, ceiling, self.clock.now() + self.limiter.floor)

    def _batch_room(self, uid: str) -> int:
        """How many more media polls may ride along in one batch: as many as the account's
        budget allows before its high-water mark (a few while that is not known yet)."""
        headroom: int | None = self.limiter.headroom(uid)
        if headroom is None:
            return jobs.PROBE_BATCH - 1
        return max(0, min(graph.MAX_BATCH, headroom) - 1)

    async def _record_usage(self, state: AccountState) -> None:
        """Keep the account row's rate-limit columns current (on change, in whole percent)."""
        usage = self.limiter.accounts.get(state.target.ig_user_id)
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
            ),
            state,
        )

    async def _execute(self, job: scheduler.Job, companions: Sequence[scheduler.Job] = ()) -> None:
        state = self.accounts.get(job.account)
        if state is None or state.parked_reason is not None:
            return
        lateness = max(0.0, (self.clock.now() - job.due_at).total_seconds())
        outcome = "error"
        # what the job collects lands here as it goes: a job cancelled at the drain deadline
        # (or failing half way) still hands over every row it had
        out = models.Batch()
        try:
            outcome = await self._execute_guarded(state, job, companions, out)
        finally:
            if self.gate is not None and not self.gate(job.account):
                # collected while the lease ran out (a frozen process, a lost database):
                # another member may hold the account now, so none of it is written
                if len(out):
                    self.log.warning(
                        "rows_discarded",
                        account=state.target.name,
                        rows=len(out),
                        reason="the lease ran out while the job ran",
                    )
                out = models.Batch()
            self._take_in(out, state)
            self.writer.add(out)
            self._pace(job.account)
            self.last_job_at = self.clock.now()
            if self.telemetry is not None:
                self.telemetry.job_done(str(job.kind), outcome, lateness)
        await self._record_usage(state)

    async def _execute_guarded(
        self,
        state: AccountState,
        job: scheduler.Job,
        companions: Sequence[scheduler.Job],
        out: models.Batch,
    ) -> str:
        """Run one job; returns its outcome for telemetry."""
        log = self.log.bind(account=state.target.name, job=str(job.kind), object_id=job.object_id)
        started = self.clock.monotonic()
        try:
            await self._dispatch(state, job, companions, out)
        except errors.LeaseLost:
            self._queue(job)
            return "lease_lost"
        except errors.BudgetPause as exc:
            # Usage reached the pause mark mid-job: keep what it got, run the rest later.
            self._resume_after(state, exc)
            self._queue(job)
            if self.once:
                state.tally.saw(
                    models.AccountStatus.THROTTLED, f"{exc}: the rest is left for the next pass"
                )
            log.info("account_paced", reason=str(exc))
            return "paced"
        except (errors.AccountThrottled, errors.AppThrottled) as exc:
            self._resume_after(state, exc)
            self.stats.throttle_pauses += 1
            now = self.clock.now()
            until = self.limiter.blocked_until(job.account, now)
            until = until or now + timedelta(seconds=exc.retry_after or 60)
            self.scheduler.block(job.account, until)
            self._queue(dataclasses.replace(job, due_at=min(job.due_at, until)))
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
            self._resume_after(state, exc)
            self.stats.jobs_failed += 1
            state.tally.jobs_failed += 1
            now = self.clock.now()
            out.errors.append(
                jobs._error_record(state.target, str(job.kind), job.object_id, exc, now)
            )
            self._retry_later(state, job, now)
            reason = exc.describe()[:500]
            state.tally.saw(models.AccountStatus.FAILING, reason)
            if state.status is not models.AccountStatus.FAILING:
                await self._set_status(state, models.AccountStatus.FAILING, reason)
            log.warning(
                "job_failed",
                error=type(exc).__name__,
                code=exc.code,
                message=str(exc)[:300],
                seconds=round(self.clock.monotonic() - started, 3),
            )
            return "failed"
        self.stats.jobs_done += 1
        state.tally.jobs_done += 1
        if state.status is not models.AccountStatus.OK and not self.once:
            # (a pass records its verdict at the end instead: the worst of its jobs)
            await self._set_status(state, models.AccountStatus.OK, None)
        log.debug("job_done", seconds=round(self.clock.monotonic() - started, 3))
        return "ok"

    @staticmethod
    def _resume_after(state: AccountState, exc: errors.GraphError) -> None:
        """Account insights stopped midway (their rows are in ``out``) resume after the days
        they completed, not from the same first day again."""
        done = exc.complete_until
        if done is not None and (state.last_metric_end is None or done > state.last_metric_end):
            state.last_metric_end = done

    def _retry_later(self, state: AccountState, job: scheduler.Job, now: datetime) -> None:
        if job.kind is not Kind.STORY_INSIGHTS:
            self._queue(dataclasses.replace(job, due_at=now + FAILED_RETRY))
            return
        media = state.media.get(job.object_id or "")
        if media is None or media.expires_at is None:
            return
        lead = self.plan.story_final_lead
        retry_at = now + FINAL_RETRY if job.final else now + FAILED_RETRY
        if not job.final and stories.past_final_start(retry_at, media.expires_at, lead):
            retry_at = max(stories.final_start(media.expires_at, lead), now)
        if stories.expired(retry_at, media.expires_at):
            self._story_missed(
                state, job.object_id or "", media, models.MissReason.RETRIES_EXHAUSTED, None
            )
            return
        final = job.final or stories.in_final_window(retry_at, media.expires_at, lead)
        self._queue(
            dataclasses.replace(
                job,
                due_at=retry_at,
                final=final,
                priority=scheduler.Priority.STORY_FINAL if final else job.priority,
            )
        )

    def _story_missed(
        self,
        state: AccountState,
        story_id: str,
        media: _MediaState,
        reason: models.MissReason,
        detail: str | None,
    ) -> None:
        """A story will have no final snapshot: say why, on its row, in /metrics and the log."""
        if media.gone:
            return  # counted once
        media.gone = True
        self.stats.stories_missed += 1
        self.stats.missed_by_reason[str(reason)] += 1
        if self.telemetry is not None:
            self.telemetry.story_final(False, reason=str(reason))
        self.writer.add(
            models.Batch(
                misses=[
                    models.StoryMiss(
                        models.MediaId(story_id), self.clock.now(), reason, (detail or None)
                    )
                ]
            )
        )
        self.log.warning(
            "story_final_missed",
            account=state.target.name,
            media_id=story_id,
            reason=str(reason),
            detail=detail,
        )

    def _why_missed(self, state: AccountState, now: datetime) -> models.MissReason:
        """Why a story's window closed with no final snapshot taken, from the account's state."""
        if state.parked_reason is not None:
            return models.MissReason.TOKEN_PARKED
        if state.status is models.AccountStatus.THROTTLED or self.limiter.blocked_until(
            state.target.ig_user_id, now
        ):
            return models.MissReason.THROTTLED
        return models.MissReason.NOT_POLLED

    async def _dispatch(
        self,
        state: AccountState,
        job: scheduler.Job,
        companions: Sequence[scheduler.Job],
        out: models.Batch,
    ) -> None:
        ctx = state.context
        target = state.target
        uid = target.ig_user_id
        p = self.plan
        now = self.clock.now()
        kind = job.kind

        def again(every: timedelta) -> None:
            self._again(kind, uid, every)

        if kind is Kind.TOKEN_CHECK:
            await self._token_check(state, out)
            again(p.token_check)
        elif kind is Kind.PROFILE:
            await jobs.profile(ctx, target, out)
            out.successes.append(models.AccountSuccess(uid, self.clock.now()))
            again(p.profile)
        elif kind is Kind.MEDIA_DISCOVERY:
            known = state.known_ids()
            found = len(out.media)
            await jobs.media_discovery(ctx, target, known, walk_all=not known, out=out)
            for media in out.media[found:]:
                state.tally.media_seen += 1
                if media.media_id not in state.media and media.media_id not in state.retired:
                    entry = self._media_state(media)
                    self._remember(state, media.media_id, entry)
                    self._schedule_media(state, media.media_id, entry, self.clock.now())
            again(p.media_discovery)
        elif kind is Kind.STORY_DISCOVERY:
            await self._story_discovery(state, now, out)
            again(p.story_discovery)
        elif kind in (Kind.ACCOUNT_INSIGHTS, Kind.DEMOGRAPHICS):
            await self._account_insights(state, kind, now, out)
        elif kind is Kind.MEDIA_INSIGHTS or (kind is Kind.STORY_INSIGHTS and companions):
            try:
                await self._media_batch(state, [job, *companions], out)
            except BaseException as exc:
                # the caller puts the main job back; its companions go back here, as late
                # as the main job's retry unless a pause (which holds them anyway) stopped it
                paused = isinstance(exc, errors.AccountThrottled | errors.AppThrottled)
                retry_at = self.clock.now() + FAILED_RETRY
                for companion in companions:
                    self._ran.discard(companion.key)
                    self._queue(
                        companion
                        if paused
                        else dataclasses.replace(companion, due_at=max(companion.due_at, retry_at))
                    )
                raise
        elif kind is Kind.STORY_INSIGHTS:
            await self._story_job(state, job, now, out)

    async def _account_insights(
        self, state: AccountState, kind: scheduler.JobKind, now: datetime, out: models.Batch
    ) -> None:
        """Day buckets, or demographics, or both in the same round trips when both are due."""
        uid = state.target.ig_user_id
        p = self.plan
        other = Kind.DEMOGRAPHICS if kind is Kind.ACCOUNT_INSIGHTS else Kind.ACCOUNT_INSIGHTS
        along = self.scheduler.queued((uid, other, None))
        if along is not None and along.due_at <= now:
            self.scheduler.discard(along.key)
            if self.once:
                self._ran.add(along.key)
            kinds = {kind, other}
        else:
            kinds = {kind}
        daily = Kind.ACCOUNT_INSIGHTS in kinds
        since = (
            jobs.insights_since(
                state.last_metric_end, now, backfill_days=p.backfill_days, repoll_days=p.repoll_days
            )
            if daily
            else now
        )
        found = len(out.account_metrics)
        try:
            await jobs.account_insights(
                state.context,
                state.target,
                since=since,
                daily=daily,
                demographics=Kind.DEMOGRAPHICS in kinds,
                out=out,
            )
        except BaseException:
            if along is not None and len(kinds) == 2:
                # the job that came along goes back as it was; the caller handles this one
                self._ran.discard(along.key)
                self._queue(along)
            raise
        ends = [m.end_time for m in out.account_metrics[found:] if m.period == "day"]
        if ends and (state.last_metric_end is None or max(ends) > state.last_metric_end):
            state.last_metric_end = max(ends)
        for done in kinds:
            self._again(
                done, uid, p.demographics if done is Kind.DEMOGRAPHICS else p.account_insights
            )

    def _again(self, kind: scheduler.JobKind, uid: str, every: timedelta) -> None:
        """The next occurrence of a periodic job (later when the account's usage is high)."""
        stretch = self.limiter.pacing_delay(uid, every)
        self._queue(scheduler.job(kind, uid, self.clock.now() + every + stretch, every=every))

    async def _story_job(
        self, state: AccountState, job: scheduler.Job, now: datetime, out: models.Batch
    ) -> None:
        """One story's poll; a regular one rides on the listing when that is due as well."""
        uid = state.target.ig_user_id
        listing = self.scheduler.queued((uid, Kind.STORY_DISCOVERY, None))
        if (
            not job.final
            and listing is not None
            and listing.due_at <= now
            and self._should_expand(state, now)
        ):
            # the listing would snapshot this story with the others: one call instead of two
            self.scheduler.discard(listing.key)
            if self.once:
                self._ran.add(listing.key)
            polled = await self._story_discovery(state, now, out)
            self._again(Kind.STORY_DISCOVERY, uid, self.plan.story_discovery)
            if job.object_id in polled:
                return
        await self._media_job(state, job, out)

    @staticmethod
    def _media_state(media: models.Media) -> _MediaState:
        return _MediaState(
            kind=media.kind,
            media_type=media.media_type,
            product_type=media.media_product_type,
            posted_at=media.posted_at,
            expires_at=media.expires_at,
        )

    async def _story_discovery(
        self, state: AccountState, now: datetime, out: models.Batch
    ) -> set[str]:
        """List live stories; when a poll is due soon, their insights come in the same call.
        Returns the ids of the stories snapshotted."""
        ctx = state.context
        target = state.target
        expand = self._should_expand(state, now)
        listing = await jobs.story_discovery(
            ctx,
            target,
            insights=ctx.catalog.media_metrics(models.ObjectKind.STORY) if expand else (),
            out=out,
        )
        if listing.expansion_error is not None:
            state.expand_after = self.clock.now() + self.plan.story_poll
            self.log.info(
                "story_expansion_refused", account=target.name, reason=listing.expansion_error
            )
        polled_at = self.clock.now()
        state.tally.stories_seen += len(listing.stories)
        for story in listing.stories:
            entry = state.media.get(story.media_id)
            if entry is None:
                if stories.expired(polled_at, story.expires_at):
                    continue  # listed past its expiry: nothing more to ask
                entry = self._media_state(story)
                self._remember(state, story.media_id, entry)
            elif story.media_id not in listing.polled:
                continue
            if story.media_id in listing.polled:
                # a regular snapshot: the final one is a call of its own (it carries the
                # navigation breakdown), due now if the listing came inside the final window
                entry.last_polled = polled_at
                state.tally.media_polled += 1
            self._schedule_media(state, story.media_id, entry, polled_at)
        return listing.polled

    def _should_expand(self, state: AccountState, now: datetime) -> bool:
        """Ask ``/stories`` for insights too when a regular story poll is due before the next
        listing (in ``run --once``: always), and no story is in its final window: one call then
        snapshots every live story."""
        if state.expand_after is not None and state.expand_after > now:
            return False
        lead = self.plan.story_final_lead
        live = [
            (media_id, entry)
            for media_id, entry in state.media.items()
            if entry.expires_at is not None and not entry.gone
        ]
        if any(stories.past_final_start(now, e.expires_at, lead) for _, e in live):
            # a story in its final window: its last snapshot must be the final call's (with the
            # navigation breakdown), never a listing value taken after it
            return False
        if self.once:
            return True
        horizon = now + self.plan.story_discovery
        uid = state.target.ig_user_id
        for media_id, entry in live:
            if entry.final_taken:
                continue
            queued = self.scheduler.queued((uid, Kind.STORY_INSIGHTS, media_id))
            if queued is not None and not queued.final and queued.due_at <= horizon:
                return True
        return False

    async def _media_batch(
        self, state: AccountState, batch_jobs: list[scheduler.Job], out: models.Batch
    ) -> None:
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
            if stories.past_final_start(now, entry.expires_at, self.plan.story_final_lead):
                # late into its final window (or past it): a final snapshot, one by one
                alone.append(dataclasses.replace(queued, final=True))
                continue
            by_id[queued.object_id or ""] = queued
            items.append(_media_record(uid, queued.object_id or "", entry, now))
        for queued in alone:
            await self._media_job(state, queued, out)
        if not items:
            return
        found = len(out.media_polls)
        await jobs.media_insights_many(state.context, state.target, items, out=out)
        now = self.clock.now()
        polls = {p.media_id: p for p in out.media_polls[found:]}
        for media_id, queued in by_id.items():
            entry = state.media[media_id]
            poll = polls.get(models.MediaId(media_id))
            if poll is None:
                # no answer through every retry round: recorded as an error, tried again later
                self._ran.discard(queued.key)
                self._queue(dataclasses.replace(queued, due_at=now + FAILED_RETRY))
                continue
            entry.last_polled = now
            state.tally.media_polled += 1
            if poll.status in _FINISHED:
                if entry.expires_at is not None and not entry.final_taken:
                    self._story_missed(state, media_id, entry, _miss_of(poll.status), poll.reason)
                entry.gone = True
                continue
            self._schedule_media(state, media_id, entry, now)

    def _finalised(
        self,
        state: AccountState,
        media_id: str,
        entry: _MediaState,
        polled_at: datetime,
        *,
        job_due: datetime,
    ) -> None:
        assert entry.expires_at is not None
        entry.final_taken = True
        state.tally.media_polled += 1
        self.stats.stories_finalised += 1
        lead = (entry.expires_at - polled_at).total_seconds()
        if self.telemetry is not None:
            self.telemetry.story_final(True, lead, source="poll")
        self.log.info(
            "story_finalised",
            account=state.target.name,
            media_id=media_id,
            lead_seconds=round(lead, 1),
            late_seconds=round((self.clock.now() - job_due).total_seconds(), 1),
        )

    async def _media_job(self, state: AccountState, job: scheduler.Job, out: models.Batch) -> None:
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
        found = len(out.media_polls)
        await jobs.media_insights(ctx, state.target, media, out=out)
        now = self.clock.now()
        entry.last_polled = now
        polls = out.media_polls[found:]
        poll = polls[-1] if polls else None
        status = poll.status if poll else models.InsightsStatus.OK
        if entry.expires_at is not None:
            if poll is not None and poll.is_final:
                self._finalised(state, media_id, entry, poll.polled_at, job_due=job.due_at)
            elif job.final and status is models.InsightsStatus.BELOW_THRESHOLD:
                # below 5 viewers at the end: that is the final word, and it is no snapshot
                state.tally.media_polled += 1
                self._story_missed(state, media_id, entry, models.MissReason.BELOW_THRESHOLD, None)
                return
            elif status is models.InsightsStatus.GONE:
                if not entry.final_taken:
                    self._story_missed(
                        state,
                        media_id,
                        entry,
                        models.MissReason.GONE,
                        poll.reason if poll else None,
                    )
                entry.gone = True
                return
            else:
                state.tally.media_polled += 1
        else:
            state.tally.media_polled += 1
            if status in _FINISHED:
                entry.gone = True
                return
        self._schedule_media(state, media_id, entry, now)

    async def _token_check(self, state: AccountState, out: models.Batch) -> None:
        target = state.target
        info = await jobs.token_check(state.context, target, out)
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
        if soonest is not None and soonest - now <= self.plan.token_expiry_warning:
            self.log.warning(
                "token_expiring",
                account=target.name,
                ig_user_id=target.ig_user_id,
                expires_at=soonest.isoformat(),
                days_left=round((soonest - now).total_seconds() / 86400, 1),
            )


def _miss_of(status: models.InsightsStatus) -> models.MissReason:
    if status is models.InsightsStatus.BELOW_THRESHOLD:
        return models.MissReason.BELOW_THRESHOLD
    if status is models.InsightsStatus.GONE:
        return models.MissReason.GONE
    return models.MissReason.NOT_POLLED


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


def summary_table(runner: Runner) -> str:
    """A plain-text table of a pass, one line per account (for stderr)."""
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
    for state in sorted(runner.accounts.values(), key=lambda s: s.target.name):
        t = state.tally
        rows.append(
            (
                state.target.name,
                state.target.ig_user_id,
                str(t.worst),
                str(t.media_seen),
                str(t.stories_seen),
                str(t.media_polled),
                str(t.metric_rows),
                str(t.errors),
                (t.reason or "")[:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )
