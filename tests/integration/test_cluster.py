"""Leases in PostgreSQL: claims up to a fair share, balance when a member joins, takeover after
expiry under a new epoch, the gate of a member whose leases ran out, and fenced bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from collector import cluster, errors, models
from collector import store as store_mod

T0 = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)
ACCOUNTS = [f"1784140000000{i:04d}" for i in range(10)]


class Mono:
    """A monotonic clock the test moves (a frozen process wakes to a jump)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _member(st: store_mod.Store, name: str, mono: Mono) -> cluster.Membership:
    return cluster.Membership(
        st, name=name, ttl=TTL, heartbeat=timedelta(seconds=10), monotonic=mono
    )


@pytest.fixture
async def accounts(store: store_mod.Store) -> list[str]:
    await store.sync_accounts(
        [models.AccountRow(models.IgUserId(a), f"a{a[-2:]}", True) for a in ACCOUNTS], T0
    )
    return ACCOUNTS


async def test_members_share_fairly_and_a_joining_one_gets_its_share(
    store: store_mod.Store, accounts: list[str]
) -> None:
    mono = Mono()
    a, b = _member(store, "a", mono), _member(store, "b", mono)
    first = await a.beat(accounts)
    assert set(first.gained) == set(accounts)  # alone: everything
    assert all(a.holds(uid) for uid in accounts)
    joined = await b.beat(accounts)
    assert joined.members == 2
    assert joined.gained == {}  # nothing free yet
    balance = await a.beat(accounts)
    assert len(balance.surplus) == 5
    await a.release(sorted(balance.surplus))
    took = await b.beat(accounts)
    assert set(took.gained) == balance.surplus
    assert a.accounts() | b.accounts() == set(accounts)
    assert not a.accounts() & b.accounts()


async def test_an_expired_lease_is_taken_over_and_the_woken_holder_stops(
    store: store_mod.Store, accounts: list[str], db_conn: asyncpg.Connection
) -> None:
    mono_a, mono_b = Mono(), Mono()
    a, b = _member(store, "a", mono_a), _member(store, "b", mono_b)
    await a.beat(accounts)
    old_epoch = a.epoch(accounts[0])
    assert old_epoch is not None
    # a freezes past its TTL: its own clock jumps, and in the database its leases ran out
    mono_a.now += TTL.total_seconds() + 1
    await db_conn.execute("update lease set expires_at = now() - interval '1 second'")
    await db_conn.execute("update cluster_member set heartbeat_at = now() - interval '1 hour'")
    assert not a.holds(accounts[0])
    with pytest.raises(errors.LeaseLost):
        a.permit(accounts[0])
    took = await b.beat(accounts)
    assert set(took.gained) == set(accounts)
    assert took.gained[accounts[0]] == old_epoch + 1
    woke = await a.beat(accounts)
    assert woke.lost == set(accounts)
    assert a.accounts() == set()

    # bookkeeping a decided under its old epoch is refused; b's own goes through
    store.fence_holder = "a"
    stale = models.AccountStatusChange(
        models.IgUserId(accounts[0]), models.AccountStatus.FAILING, "stale", T0, epoch=old_epoch
    )
    await store.write(models.Batch(statuses=[stale]))
    assert store.stale_refused == 1
    store.fence_holder = "b"
    fresh = models.AccountStatusChange(
        models.IgUserId(accounts[0]),
        models.AccountStatus.OK,
        None,
        T0 + timedelta(seconds=1),
        epoch=old_epoch + 1,
    )
    await store.write(models.Batch(statuses=[fresh]))
    status = await db_conn.fetchval("select status from account where ig_user_id = $1", accounts[0])
    assert status == "ok"


async def test_a_clean_leave_frees_every_lease_at_once(
    store: store_mod.Store, accounts: list[str], db_conn: asyncpg.Connection
) -> None:
    a = _member(store, "a", Mono())
    await a.beat(accounts)
    await a.leave()
    held = await db_conn.fetchval("select count(*) from lease where holder is not null")
    assert held == 0
    assert await db_conn.fetchval("select count(*) from cluster_member") == 0


async def test_claims_take_the_soonest_story_final_first(
    store: store_mod.Store, accounts: list[str], db_conn: asyncpg.Connection
) -> None:
    urgent = accounts[7]
    await db_conn.execute(
        "insert into media (media_id, ig_user_id, media_type, media_product_type, posted_at,"
        " expires_at, first_seen_at, last_seen_at) values"
        " ('18000000000000001', $1, 'IMAGE', 'STORY', now(), now() + interval '10 minutes',"
        " now(), now())",
        urgent,
    )
    names = [cluster.resource(u) for u in accounts]
    await store.lease_ensure(names)
    got = await store.lease_claim("a", names, 1, TTL)
    assert list(got) == [cluster.resource(urgent)]


async def test_the_sources_lease_is_one_members_and_fences_the_listings_it_writes(
    store: store_mod.Store, accounts: list[str], db_conn: asyncpg.Connection
) -> None:
    mono_a, mono_b = Mono(), Mono()
    a, b = _member(store, "a", mono_a), _member(store, "b", mono_b)
    first = await a.beat(accounts, sources=True)
    assert first.sources_gained
    assert a.lists_sources()
    joined = await b.beat(accounts, sources=True)
    assert not joined.sources_gained
    assert not b.lists_sources()
    # outside the fair share: after balancing, a holds five accounts and the sources
    balance = await a.beat(accounts, sources=True)
    await a.release(sorted(balance.surplus))
    await b.beat(accounts, sources=True)
    assert (len(a.accounts()), len(b.accounts())) == (5, 5)
    assert a.lists_sources()
    epoch = a.sources_epoch()
    assert epoch is not None
    configured = [models.AccountRow(models.IgUserId(a), f"a{a[-2:]}", True) for a in ACCOUNTS[3:]]
    listed = configured + [
        models.AccountRow(models.IgUserId(uid), f"s{uid[-2:]}", True, source="agency", page_id="1")
        for uid in ACCOUNTS[:3]
    ]
    assert await store.sync_accounts(listed, T0, fence=("a", epoch))
    # b does not hold it: its listing is refused, nothing is marked removed
    assert not await store.sync_accounts(configured, T0, fence=("b", epoch))
    assert await db_conn.fetchval("select count(*) from account where status = 'removed'") == 0
    # a freezes past its TTL; b takes the sources over; a's late listing is refused
    mono_a.now += TTL.total_seconds() + 1
    assert not a.lists_sources()
    await db_conn.execute("update lease set expires_at = now() - interval '1 second'")
    await db_conn.execute("update cluster_member set heartbeat_at = now() - interval '1 hour'")
    took = await b.beat(accounts, sources=True)
    assert took.sources_gained
    assert b.sources_epoch() == epoch + 1
    assert not await store.sync_accounts(configured, T0, fence=("a", epoch))
    assert await db_conn.fetchval("select count(*) from account where status = 'removed'") == 0
    woke = await a.beat(accounts, sources=True)
    assert woke.sources_lost
    assert not a.lists_sources()
    # the discovered rows as the holder wrote them, Page ids included
    shared = await store.discovered_accounts()
    assert [(r.ig_user_id, r.source, r.page_id) for r in shared] == [
        (uid, "agency", "1") for uid in ACCOUNTS[:3]
    ]
    # a clean stop gives the sources lease back too
    await b.leave()
    assert await db_conn.fetchval("select holder from lease where resource = 'sources'") is None
