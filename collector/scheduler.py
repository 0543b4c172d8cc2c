"""The job queue: earliest deadline first, final story snapshots before everything else.

Nothing here reads the clock, touches the network or the database: every decision is a function
of ``now`` and the state handed in, so it is tested by stepping a fake clock.

Shape: jobs wait in one heap ordered by ``due_at``; once due they move into their account's
ready heap, ordered by ``(priority, deadline)``; idle, unblocked accounts with ready work sit in
a global heap ordered by their best job. Taking a job is O(log n), whatever the backlog, and an
account busy with one request (the API serves one account's statistics at a time) or paused by
a rate limit is simply absent from the global heap.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta


class JobKind(enum.StrEnum):
    TOKEN_CHECK = "token_check"  # noqa: S105  (a job name, not a password)
    PROFILE = "profile"
    ACCOUNT_INSIGHTS = "account_insights"
    DEMOGRAPHICS = "demographics"
    MEDIA_DISCOVERY = "media_discovery"
    MEDIA_INSIGHTS = "media_insights"
    STORY_DISCOVERY = "story_discovery"
    STORY_INSIGHTS = "story_insights"


class Priority(enum.IntEnum):
    """Lower runs first when the budget is short."""

    STORY_FINAL = 0
    STORY = 1
    ACCOUNT = 2
    MEDIA = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    kind: JobKind
    account: str
    object_id: str | None
    due_at: datetime
    deadline: datetime
    priority: Priority
    #: a story poll inside ``[expires_at - lead, expires_at)``
    final: bool = False

    @property
    def key(self) -> tuple[str, JobKind, str | None]:
        """At most one job per key is queued; a new one replaces the old."""
        return (self.account, self.kind, self.object_id)


def job(
    kind: JobKind,
    account: str,
    due_at: datetime,
    *,
    every: timedelta,
    object_id: str | None = None,
    priority: Priority | None = None,
) -> Job:
    """A periodic job: its deadline is its next occurrence (later than that, one is missed)."""
    if priority is None:
        priority = {
            JobKind.MEDIA_INSIGHTS: Priority.MEDIA,
            JobKind.STORY_DISCOVERY: Priority.STORY,
            JobKind.STORY_INSIGHTS: Priority.STORY,
        }.get(kind, Priority.ACCOUNT)
    return Job(kind, account, object_id, due_at, due_at + every, priority)


# --------------------------------------------------------------------------- due-time rules


def next_due(last: datetime | None, every: timedelta, now: datetime) -> datetime:
    """A periodic job last done at ``last`` is due ``every`` later (now if never done)."""
    return now if last is None else last + every


def media_every(age: timedelta, tiers: Sequence[tuple[timedelta, timedelta]]) -> timedelta | None:
    """How often media of ``age`` are polled: the first tier whose max age it is under."""
    for max_age, every in tiers:
        if age < max_age:
            return every
    return None


def media_poll(
    media_id: str,
    account: str,
    *,
    posted_at: datetime | None,
    last_polled: datetime | None,
    now: datetime,
    tiers: Sequence[tuple[timedelta, timedelta]],
) -> Job | None:
    """The next insights poll of a feed media object, or None when it is too old to poll."""
    age = now - posted_at if posted_at is not None else tiers[-1][0]
    every = media_every(age, tiers)
    if every is None:
        return None
    due = now if last_polled is None else last_polled + every
    return job(JobKind.MEDIA_INSIGHTS, account, due, every=every, object_id=media_id)


def story_poll(
    story_id: str,
    account: str,
    *,
    expires_at: datetime,
    last_polled: datetime | None,
    final_taken: bool,
    now: datetime,
    poll_every: timedelta,
    lead: timedelta,
) -> Job | None:
    """The next poll of a live story; the last one falls inside ``[expires_at - lead, expires_at)``.

    A story seen for the first time is polled at once; one found inside its final window goes
    straight to the final snapshot; one whose final snapshot is taken, or that has expired, has
    no next poll.
    """
    if final_taken or now >= expires_at:
        return None
    final_start = expires_at - lead
    if now >= final_start:
        return Job(
            JobKind.STORY_INSIGHTS, account, story_id, now, expires_at, Priority.STORY_FINAL, True
        )
    due = now if last_polled is None else last_polled + poll_every
    if due >= final_start:
        return Job(
            JobKind.STORY_INSIGHTS,
            account,
            story_id,
            final_start,
            expires_at,
            Priority.STORY_FINAL,
            True,
        )
    return Job(
        JobKind.STORY_INSIGHTS,
        account,
        story_id,
        due,
        min(due + poll_every, final_start),
        Priority.STORY,
    )


# --------------------------------------------------------------------------- the queue


@dataclasses.dataclass(slots=True)
class _Account:
    ready: list[tuple[int, datetime, int, Job]] = dataclasses.field(default_factory=list)
    running: int = 0
    blocked_until: datetime | None = None
    #: while set, only jobs at or above this urgency start (usage near the limit)
    ceiling: Priority | None = None
    ceiling_until: datetime | None = None
    parked: bool = False


class Scheduler:
    """Earliest-deadline-first queue with per-account serialisation and pauses."""

    def __init__(self, *, per_account: int = 1) -> None:
        self.per_account = per_account
        self._seq = itertools.count()
        self._waiting: list[tuple[datetime, int, Job]] = []
        self._accounts: dict[str, _Account] = {}
        self._idle: list[tuple[int, datetime, int, str]] = []
        #: the job currently queued for each key (stale heap entries are skipped against it)
        self._queued: dict[tuple[str, JobKind, str | None], Job] = {}

    # -- adding

    def add(self, new: Job) -> None:
        """Queue ``new``, replacing any job queued under the same key."""
        self._queued[new.key] = new
        heapq.heappush(self._waiting, (new.due_at, next(self._seq), new))
        self._accounts.setdefault(new.account, _Account())

    def discard(self, key: tuple[str, JobKind, str | None]) -> None:
        self._queued.pop(key, None)

    def queued(self, key: tuple[str, JobKind, str | None]) -> Job | None:
        return self._queued.get(key)

    def remove_account(self, account: str) -> None:
        """Forget an account's jobs (removed from the config, or parked)."""
        for key in [k for k in self._queued if k[0] == account]:
            del self._queued[key]
        state = self._accounts.get(account)
        if state is not None:
            state.ready.clear()

    # -- account state

    def block(self, account: str, until: datetime) -> None:
        """Take no job of ``account`` before ``until`` (rate limit)."""
        state = self._accounts.setdefault(account, _Account())
        if state.blocked_until is None or until > state.blocked_until:
            state.blocked_until = until

    def restrict(self, account: str, ceiling: Priority | None, until: datetime | None) -> None:
        """Until ``until``, start only ``account``'s jobs of priority ``ceiling`` or more urgent."""
        state = self._accounts.setdefault(account, _Account())
        state.ceiling = ceiling
        state.ceiling_until = until if ceiling is not None else None
        self._push_idle(account)

    def _held(self, state: _Account, priority: int, now: datetime) -> datetime | None:
        """Until when ``state`` may not start a job of ``priority`` (None: it may now)."""
        held: datetime | None = None
        if state.blocked_until is not None and state.blocked_until > now:
            held = state.blocked_until
        if (
            state.ceiling is not None
            and state.ceiling_until is not None
            and state.ceiling_until > now
            and priority > state.ceiling
            and (held is None or state.ceiling_until > held)
        ):
            held = state.ceiling_until
        return held

    def park(self, account: str, parked: bool = True) -> None:
        """A parked account (bad token, missing permission) runs nothing until unparked."""
        self._accounts.setdefault(account, _Account()).parked = parked
        if not parked:
            self._push_idle(account)

    def is_parked(self, account: str) -> bool:
        state = self._accounts.get(account)
        return state is not None and state.parked

    # -- taking

    def _live(self, entry_job: Job) -> bool:
        return self._queued.get(entry_job.key) is entry_job

    def _promote(self, now: datetime) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            _, seq, waiting = heapq.heappop(self._waiting)
            if not self._live(waiting):
                continue
            state = self._accounts.setdefault(waiting.account, _Account())
            heapq.heappush(state.ready, (waiting.priority, waiting.deadline, seq, waiting))
            self._push_idle(waiting.account)

    def _best(self, state: _Account) -> tuple[int, datetime, int, Job] | None:
        while state.ready and not self._live(state.ready[0][3]):
            heapq.heappop(state.ready)
        return state.ready[0] if state.ready else None

    def _push_idle(self, account: str) -> None:
        state = self._accounts.get(account)
        if state is None or state.parked or state.running >= self.per_account:
            return
        best = self._best(state)
        if best is not None:
            heapq.heappush(self._idle, (best[0], best[1], best[2], account))

    def take(self, now: datetime, *, max_priority: Priority | None = None) -> Job | None:
        """The most urgent runnable job, or None; the caller must call :meth:`done` after.

        ``max_priority`` holds back every less urgent job (the write spool is full).
        """
        self._promote(now)
        deferred: list[str] = []
        try:
            while self._idle:
                _, _, seq, account = heapq.heappop(self._idle)
                state = self._accounts[account]
                best = self._best(state)
                if (
                    best is None
                    or state.parked
                    or state.running >= self.per_account
                    or best[2] != seq
                ):
                    continue  # stale entry: a fresher one exists or the account is busy
                if self._held(state, best[0], now) is not None or (
                    max_priority is not None and best[0] > max_priority
                ):
                    deferred.append(account)
                    continue
                heapq.heappop(state.ready)
                picked = best[3]
                del self._queued[picked.key]
                state.running += 1
                self._push_idle(account)
                return picked
            return None
        finally:
            for account in deferred:
                self._push_idle(account)

    def take_companions(
        self, account: str, kind: JobKind, now: datetime, limit: int, *, final: bool | None = None
    ) -> list[Job]:
        """Up to ``limit`` more due jobs of ``kind`` for ``account``, to run in one request
        together with one just taken (the batch endpoint answers 50 operations at once)."""
        self._promote(now)
        state = self._accounts.get(account)
        if state is None or limit <= 0:
            return []
        found: list[Job] = []
        for _, _, _, queued_job in sorted(state.ready):
            if len(found) >= limit:
                break
            if (
                queued_job.kind is kind
                and (final is None or queued_job.final is final)
                and self._live(queued_job)
                and queued_job.due_at <= now
            ):
                found.append(queued_job)
                # the heap entry turns stale; _best skips it
                del self._queued[queued_job.key]
        return found

    def done(self, finished: Job) -> None:
        """``finished`` stopped running (whatever the outcome); its account may take more."""
        state = self._accounts.get(finished.account)
        if state is None:
            return
        state.running = max(0, state.running - 1)
        self._push_idle(finished.account)

    # -- waiting and reporting

    def next_wakeup(self, now: datetime) -> datetime | None:
        """When something may become runnable without any job finishing."""
        candidates = []
        while self._waiting and not self._live(self._waiting[0][2]):
            heapq.heappop(self._waiting)
        if self._waiting:
            candidates.append(self._waiting[0][0])
        for state in self._accounts.values():
            if state.parked or state.running >= self.per_account:
                continue
            best = self._best(state)
            if best is None:
                continue
            held = self._held(state, best[0], now)
            if held is not None:
                candidates.append(held)
        return min(candidates) if candidates else None

    def jobs(self) -> Iterator[Job]:
        return iter(list(self._queued.values()))

    def due_count(self, now: datetime) -> int:
        return sum(1 for j in self._queued.values() if j.due_at <= now)

    def overdue_count(self, now: datetime) -> int:
        return sum(1 for j in self._queued.values() if j.deadline < now)

    def __len__(self) -> int:
        return len(self._queued)
