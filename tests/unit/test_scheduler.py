"""The deadline scheduler, stepped on a fake clock: no sleeps, no network, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector import scheduler

T0 = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
TIERS = [(timedelta(days=2), H), (timedelta(days=14), 6 * H), (timedelta(days=90), 24 * H)]


def _periodic(
    kind: scheduler.JobKind, account: str, due: datetime, obj: str | None = None
) -> scheduler.Job:
    return scheduler.job(kind, account, due, every=H, object_id=obj)


def test_media_tiers() -> None:
    assert scheduler.media_every(timedelta(hours=5), TIERS) == H
    assert scheduler.media_every(timedelta(days=3), TIERS) == 6 * H
    assert scheduler.media_every(timedelta(days=91), TIERS) is None
    fresh = scheduler.media_poll("m", "a", posted_at=T0 - H, last_polled=None, now=T0, tiers=TIERS)
    assert fresh is not None
    assert fresh.due_at == T0
    old = scheduler.media_poll(
        "m", "a", posted_at=T0 - timedelta(days=5), last_polled=T0 - H, now=T0, tiers=TIERS
    )
    assert old is not None
    assert old.due_at == T0 + 5 * H
    assert (
        scheduler.media_poll(
            "m", "a", posted_at=T0 - timedelta(days=100), last_polled=None, now=T0, tiers=TIERS
        )
        is None
    )


def test_story_lifecycle_ends_with_a_final_inside_the_window() -> None:
    expires = T0 + 5 * H
    lead = 25 * M
    first = scheduler.story_poll(
        "s",
        "a",
        expires_at=expires,
        last_polled=None,
        final_taken=False,
        now=T0,
        poll_every=2 * H,
        lead=lead,
    )
    assert first is not None
    assert (first.due_at, first.final) == (T0, False)
    second = scheduler.story_poll(
        "s",
        "a",
        expires_at=expires,
        last_polled=T0,
        final_taken=False,
        now=T0,
        poll_every=2 * H,
        lead=lead,
    )
    assert second is not None
    assert (second.due_at, second.final) == (T0 + 2 * H, False)
    # the next regular poll would fall in the final window: the final replaces it
    last = scheduler.story_poll(
        "s",
        "a",
        expires_at=expires,
        last_polled=T0 + 4 * H,
        final_taken=False,
        now=T0 + 4 * H,
        poll_every=2 * H,
        lead=lead,
    )
    assert last is not None
    assert last.final
    assert last.due_at == expires - lead
    assert last.deadline == expires
    assert last.priority is scheduler.Priority.STORY_FINAL
    done = scheduler.story_poll(
        "s",
        "a",
        expires_at=expires,
        last_polled=T0,
        final_taken=True,
        now=T0,
        poll_every=2 * H,
        lead=lead,
    )
    assert done is None
    expired = scheduler.story_poll(
        "s",
        "a",
        expires_at=expires,
        last_polled=T0,
        final_taken=False,
        now=expires,
        poll_every=2 * H,
        lead=lead,
    )
    assert expired is None


def test_story_found_near_its_cutoff_goes_straight_to_final() -> None:
    expires = T0 + 10 * M
    job = scheduler.story_poll(
        "s",
        "a",
        expires_at=expires,
        last_polled=None,
        final_taken=False,
        now=T0,
        poll_every=2 * H,
        lead=25 * M,
    )
    assert job is not None
    assert job.final
    assert job.due_at == T0


def test_final_story_snapshots_beat_everything_when_short() -> None:
    sched = scheduler.Scheduler()
    sched.add(_periodic(scheduler.JobKind.MEDIA_INSIGHTS, "a", T0 - H, "m1"))
    sched.add(_periodic(scheduler.JobKind.PROFILE, "b", T0 - H))
    sched.add(
        scheduler.Job(
            scheduler.JobKind.STORY_INSIGHTS,
            "c",
            "s1",
            T0,
            T0 + 10 * M,
            scheduler.Priority.STORY_FINAL,
            True,
        )
    )
    sched.add(_periodic(scheduler.JobKind.STORY_DISCOVERY, "d", T0 - M))
    order = []
    while (taken := sched.take(T0)) is not None:
        order.append(taken.kind)
    assert order == [
        scheduler.JobKind.STORY_INSIGHTS,
        scheduler.JobKind.STORY_DISCOVERY,
        scheduler.JobKind.PROFILE,
        scheduler.JobKind.MEDIA_INSIGHTS,
    ]


def test_earliest_deadline_first_within_a_priority() -> None:
    sched = scheduler.Scheduler()
    sched.add(scheduler.job(scheduler.JobKind.PROFILE, "a", T0, every=6 * H))
    sched.add(scheduler.job(scheduler.JobKind.PROFILE, "b", T0, every=H))
    first = sched.take(T0)
    assert first is not None
    assert first.account == "b"


def test_one_request_per_account_at_a_time() -> None:
    sched = scheduler.Scheduler(per_account=1)
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0))
    sched.add(_periodic(scheduler.JobKind.MEDIA_DISCOVERY, "a", T0))
    sched.add(_periodic(scheduler.JobKind.PROFILE, "b", T0))
    first = sched.take(T0)
    second = sched.take(T0)
    assert first is not None
    assert second is not None
    assert {first.account, second.account} == {"a", "b"}
    assert sched.take(T0) is None  # a is busy
    sched.done(first if first.account == "a" else second)
    third = sched.take(T0)
    assert third is not None
    assert third.account == "a"


def test_jobs_wait_until_due_and_wakeup_is_reported() -> None:
    sched = scheduler.Scheduler()
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0 + H))
    assert sched.take(T0) is None
    assert sched.next_wakeup(T0) == T0 + H
    taken = sched.take(T0 + H)
    assert taken is not None
    assert sched.next_wakeup(T0 + H) is None


def test_a_new_job_replaces_the_queued_one_with_the_same_key() -> None:
    sched = scheduler.Scheduler()
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0 + H))
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0))
    assert len(sched) == 1
    taken = sched.take(T0)
    assert taken is not None
    assert taken.due_at == T0
    sched.done(taken)
    assert sched.take(T0 + 2 * H) is None  # the replaced job is gone


def test_blocked_account_is_skipped_not_lost() -> None:
    sched = scheduler.Scheduler()
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0))
    sched.add(_periodic(scheduler.JobKind.PROFILE, "b", T0))
    sched.block("a", T0 + 10 * M)
    taken = sched.take(T0)
    assert taken is not None
    assert taken.account == "b"
    assert sched.take(T0) is None
    assert sched.next_wakeup(T0) == T0 + 10 * M
    later = sched.take(T0 + 10 * M)
    assert later is not None
    assert later.account == "a"


def test_parked_account_runs_nothing_until_unparked() -> None:
    sched = scheduler.Scheduler()
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0))
    sched.park("a")
    assert sched.take(T0) is None
    sched.park("a", parked=False)
    assert sched.take(T0) is not None


def test_removed_account_jobs_vanish() -> None:
    sched = scheduler.Scheduler()
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0))
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0 + H, None))
    sched.add(_periodic(scheduler.JobKind.MEDIA_DISCOVERY, "a", T0 + H))
    sched.remove_account("a")
    assert len(sched) == 0
    assert sched.take(T0 + 2 * H) is None


def test_counts_due_and_overdue() -> None:
    sched = scheduler.Scheduler()
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0 - 2 * H))
    sched.add(_periodic(scheduler.JobKind.PROFILE, "b", T0))
    sched.add(_periodic(scheduler.JobKind.PROFILE, "c", T0 + H))
    assert sched.due_count(T0) == 2
    assert sched.overdue_count(T0) == 1


def test_large_backlog_takes_in_priority_order() -> None:
    sched = scheduler.Scheduler()
    for i in range(2000):
        sched.add(
            _periodic(
                scheduler.JobKind.MEDIA_INSIGHTS,
                f"acct{i % 50}",
                T0 - timedelta(seconds=i),
                f"m{i}",
            )
        )
    sched.add(
        scheduler.Job(
            scheduler.JobKind.STORY_INSIGHTS,
            "acct7",
            "s",
            T0,
            T0 + M,
            scheduler.Priority.STORY_FINAL,
            True,
        )
    )
    first = sched.take(T0)
    assert first is not None
    assert first.final
    sched.done(first)
    taken = 1
    while (j := sched.take(T0)) is not None:
        sched.done(j)
        taken += 1
    assert taken == 2001


def test_restricted_account_starts_only_urgent_jobs() -> None:
    sched = scheduler.Scheduler()
    sched.add(_periodic(scheduler.JobKind.MEDIA_INSIGHTS, "a", T0, "m1"))
    sched.restrict("a", scheduler.Priority.STORY_FINAL, T0 + 5 * M)
    assert sched.take(T0) is None
    assert sched.next_wakeup(T0) == T0 + 5 * M
    final = scheduler.Job(
        scheduler.JobKind.STORY_INSIGHTS,
        "a",
        "s",
        T0,
        T0 + 10 * M,
        scheduler.Priority.STORY_FINAL,
        True,
    )
    sched.add(final)
    assert sched.take(T0) is final
    sched.done(final)
    assert sched.take(T0 + M) is None
    later = sched.take(T0 + 5 * M)
    assert later is not None
    assert later.kind is scheduler.JobKind.MEDIA_INSIGHTS
    sched.done(later)
    sched.add(_periodic(scheduler.JobKind.PROFILE, "a", T0 + 6 * M))
    sched.restrict("a", None, None)
    assert sched.take(T0 + 6 * M) is not None
