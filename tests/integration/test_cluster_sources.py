"""Cluster mode shares what the sources found and what a member renewed (issue 12): daemons in
this process on one database, against the simulator, on a fake clock. Only the member holding
the sources lease lists them; the others collect the discovered accounts they hold with the
Page tokens they ask for; the lease moves when its holder stops or its TTL runs out. A renewed
Instagram Login token reaches the next holder sealed, and no secret lands in the database or a
log line."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from collector import clock, cluster, config, daemon, models, runner, tokens, vault
from collector import store as store_mod
from collector.simulator import server

from ..pgproxy import PgProxy

NAMES = ("alpha", "bravo", "charlie")


class Mono:
    """A monotonic clock the test can make jump (the process froze), else the real one."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return asyncio.get_running_loop().time() + self.offset


class Member:
    """One daemon of the cluster, with its own name, state directory and database proxy."""

    def __init__(self, name: str, settings: config.Settings, fake: clock.FakeClock) -> None:
        self.name = name
        self.mono = Mono()
        self.stop = asyncio.Event()
        self.shell = daemon.Daemon(settings, clock=fake, stop=self.stop, monotonic=self.mono)
        self.task: asyncio.Task[int] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.shell.run(), name=f"member-{self.name}")

    async def halt(self) -> int:
        self.stop.set()
        assert self.task is not None
        return await self.task

    @property
    def member(self) -> cluster.Membership:
        assert self.shell.membership is not None
        return self.shell.membership

    @property
    def run(self) -> runner.Runner:
        assert self.shell.runner is not None
        return self.shell.runner

    def calls(self, endpoint: str, login: str = "facebook") -> int:
        """The API calls this member's own client made to ``endpoint`` (any outcome)."""
        if self.shell.roster is None:
            return 0
        client = self.shell.roster.logins[login].client
        return sum(n for (e, _), n in client.calls.items() if e == endpoint)

    def lists(self) -> bool:
        return self.shell.membership is not None and self.member.lists_sources()


async def until(check: Callable[[], Awaitable[bool]], *, within: float = 60.0) -> None:
    """Poll (never a fixed sleep) until ``check()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not await check():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def write(tmp_path: Path, sim: server.Simulator, dsn: str, body: str, *, ttl: str = "30s") -> Path:
    secret = sim.world.config.app_secret
    text = f"""
[database]
dsn = "{dsn}"
connect_timeout = "1s"
command_timeout = "3s"

[graph]
base_url = "{sim.base_url}"
instagram_base_url = "{sim.instagram_base_url}"
retry_base = 0.001
retry_max = 0.01
{f'app_secret = "{secret}"' if secret else ""}

[web]
enabled = false

[log]
format = "json"

[cluster]
enabled = true
lease_ttl = "{ttl}"
heartbeat = "1s"
{body}
"""
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return path


def load(path: Path, name: str, dsn: str) -> config.Settings:
    """The same file for every member; its own name, state directory and database route."""
    return config.load(
        path,
        environ={
            "COLLECTOR_CLUSTER__NAME": name,
            "COLLECTOR_STATE__DIRECTORY": str(path.parent / f"state-{name}"),
            "COLLECTOR_DATABASE__DSN": dsn,
        },
    )


async def holders(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "select resource, holder from lease where holder is not null and expires_at > now()"
    )
    return {r["resource"]: r["holder"] for r in rows}


async def database_text(conn: asyncpg.Connection) -> str:
    """Every row of every table, as text (bytea as hex)."""
    tables = await conn.fetch(
        "select tablename from pg_tables where schemaname = 'public' order by 1"
    )
    parts = []
    for t in tables:
        rows = await conn.fetch(f'select t::text as row from public."{t["tablename"]}" t')
        parts += [r["row"] for r in rows]
    return "\n".join(parts)


def assert_no_secret(secrets: list[str], *texts: str) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text
            assert secret.encode().hex() not in text


@pytest.fixture
async def proxies(db_dsn: str) -> AsyncIterator[dict[str, PgProxy]]:
    made = {name: PgProxy(db_dsn) for name in NAMES}
    for p in made.values():
        await p.start()
    yield made
    for p in made.values():
        await p.close()


@pytest.fixture
def members() -> Iterator[dict[str, Member]]:
    made: dict[str, Member] = {}
    yield made
    for m in made.values():
        m.stop.set()


async def test_one_member_lists_the_sources_the_others_collect_and_the_lease_moves(
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
    db_conn: asyncpg.Connection,
    proxies: dict[str, PgProxy],
    members: dict[str, Member],
) -> None:
    sim = await sim_factory(accounts=6, extra_pages=1, media_per_account=1, stories_per_account=0)
    w = sim.world
    (tmp_path / "agency.token").write_text(w.user_token)
    path = write(
        tmp_path,
        sim,
        proxies["alpha"].dsn,
        f'[[sources]]\nname = "agency"\ntoken_file = "{tmp_path / "agency.token"}"\n',
    )
    discovered = {a.ig_user_id for a in w.accounts}
    secrets = [w.user_token, *(a.token for a in w.accounts)]
    with structlog.testing.capture_logs() as logs:
        for name in NAMES:
            members[name] = Member(name, load(path, name, proxies[name].dsn), fake_clock)
            members[name].start()

        async def balanced() -> bool:
            held = await holders(db_conn)
            shares = [sum(h == n for r, h in held.items() if r != cluster.SOURCES) for n in NAMES]
            return cluster.SOURCES in held and shares == [2, 2, 2]

        await until(balanced)
        listers = [m for m in members.values() if m.lists()]
        assert len(listers) == 1
        lister = listers[0]
        assert (await holders(db_conn))[cluster.SOURCES] == lister.name
        rows = await db_conn.fetch("select ig_user_id, source, page_id, status from account")
        assert {r["ig_user_id"] for r in rows} == discovered
        assert {r["source"] for r in rows} == {"agency"}
        pages = {a.ig_user_id: a.page_id for a in w.accounts}
        assert {r["ig_user_id"]: r["page_id"] for r in rows} == pages
        # only the lease holder listed: its client made every listing call the API saw
        assert lister.calls("me/accounts") == sim.stats.calls_by_kind["me_accounts"] > 0
        assert all(m.calls("me/accounts") == 0 for m in members.values() if m is not lister)

        # a collection cycle later, each member collects the accounts it holds, the others
        # with the Page token they asked for with the source's token (not the source's own)
        fake_clock.advance(2 * 3600)
        done_before = {
            n: {uid: s.tally.jobs_done for uid, s in m.run.accounts.items()}
            for n, m in members.items()
        }
        for m in members.values():
            m.run._wake.set()

        async def collected() -> bool:
            for n, m in members.items():
                held = m.member.accounts()
                if set(m.run.accounts) != held or len(held) != 2:
                    return False
                if any(
                    s.tally.jobs_done <= done_before[n].get(uid, 0) or s.status is None
                    for uid, s in m.run.accounts.items()
                ):
                    return False
            return True

        await until(collected)
        tokens_of = {a.ig_user_id: a.token for a in w.accounts}
        for m in members.values():
            for uid, state in m.run.accounts.items():
                assert state.target.token == tokens_of[uid] != w.user_token
                assert state.status is models.AccountStatus.OK
        asked = [r for r in sim.stats.requests if r.kind == "page"]
        assert {r.param("fields") for r in asked} == {"access_token"}
        assert len(asked) >= 4  # the four accounts the non-listing members hold, at least

        # the holder stops: its leases are given back, another member lists from then on
        listed_by_first = lister.calls("me/accounts")
        assert await lister.halt() == 0
        rest = [m for m in members.values() if m is not lister]

        async def taken_over() -> bool:
            held = await holders(db_conn)
            accounts = [h for r, h in held.items() if r != cluster.SOURCES]
            return (
                held.get(cluster.SOURCES) in {m.name for m in rest}
                and sorted(accounts.count(m.name) for m in rest) == [3, 3]
                and any(m.calls("me/accounts") > 0 for m in rest)
                and all(len(m.run.accounts) == 3 for m in rest)
            )

        await until(taken_over)
        second = next(m for m in rest if m.lists())
        other = next(m for m in rest if m is not second)
        assert sim.stats.calls_by_kind["me_accounts"] == listed_by_first + second.calls(
            "me/accounts"
        )
        assert other.calls("me/accounts") == 0

        async def all_ok() -> bool:
            statuses = await db_conn.fetch("select status from account")
            return {r["status"] for r in statuses} == {"ok"}

        # the bookkeeping of the member that stopped went out before its leases were given
        # back (else it would have been refused as stale), the others' reach it soon
        await until(all_ok)

        # the second holder freezes past its TTL, cut from the database: the third takes the
        # sources over and lists; the frozen one, back, never lists again
        listed_by_second = second.calls("me/accounts")
        await proxies[second.name].cut()
        second.mono.offset += 31.0
        assert not second.lists()
        await db_conn.execute(
            "update lease set expires_at = now() - interval '1 second' where holder = $1",
            second.name,
        )
        await db_conn.execute(
            "update cluster_member set heartbeat_at = now() - interval '1 hour' where name = $1",
            second.name,
        )

        async def third_lists() -> bool:
            held = await holders(db_conn)
            return (
                held.get(cluster.SOURCES) == other.name
                and other.calls("me/accounts") > 0
                and len(other.run.accounts) == 6
                and not second.run.accounts
            )

        await until(third_lists)
        assert second.calls("me/accounts") == listed_by_second
        await proxies[second.name].restore()

        async def rebalanced() -> bool:
            held = await holders(db_conn)
            accounts = [h for r, h in held.items() if r != cluster.SOURCES]
            return accounts.count(second.name) == 3 and len(second.run.accounts) == 3

        await until(rebalanced)
        assert second.calls("me/accounts") == listed_by_second
        assert not second.lists()
        assert (await holders(db_conn))[cluster.SOURCES] == other.name
        for m in rest:
            assert await m.halt() == 0
    # no token in a log line or anywhere in the database
    assert_no_secret(secrets, repr(logs), await database_text(db_conn))
    events = [e["event"] for e in logs]
    assert "sources_lease_changed" in events
    assert "page_token_fetched" in events


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(os.urandom(32).hex() + "\n")
    return path


async def test_a_renewed_token_reaches_the_next_holder_sealed_and_a_frozen_one_renews_nothing(
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
    db_conn: asyncpg.Connection,
    store: store_mod.Store,
    proxies: dict[str, PgProxy],
    members: dict[str, Member],
) -> None:
    sim = await sim_factory(
        accounts=1, instagram_login=frozenset({0}), media_per_account=1, stories_per_account=0
    )
    (acct,) = sim.world.accounts
    seed = acct.token
    (tmp_path / "ig.token").write_text(seed)
    key = key_file(tmp_path)
    path = write(
        tmp_path,
        sim,
        proxies["alpha"].dsn,
        f'secret_file = "{key}"\n\n[[accounts]]\nname = "creator"\n'
        f'ig_user_id = "{acct.ig_user_id}"\nlogin = "instagram"\n'
        f'token_file = "{tmp_path / "ig.token"}"\n',
    )
    resource = cluster.resource(acct.ig_user_id)

    def refreshes() -> int:
        return int(sim.stats.calls_by_kind["refresh_access_token"])

    with structlog.testing.capture_logs() as logs:
        a = members["alpha"] = Member(
            "alpha", load(path, "alpha", proxies["alpha"].dsn), fake_clock
        )
        a.start()

        async def renewed_and_shared() -> bool:
            return (
                await db_conn.fetchval("select count(*) from sealed_token") == 1
                and acct.ig_user_id in a.run.accounts
            )

        await until(renewed_and_shared)
        renewed = acct.token
        assert renewed != seed
        assert refreshes() == 1
        row = await db_conn.fetchrow("select * from sealed_token")
        assert row["seed_sha256"] == tokens.fingerprint(seed)
        assert row["written_by"] == "alpha"
        assert row["expires_at"] == fake_clock.now() + timedelta(days=60)
        assert renewed.encode() not in bytes(row["sealed"])

        # bravo joins; alpha stops (its lease given back): bravo takes the account over with
        # the renewed token before its first call, and does not renew it again
        b = members["bravo"] = Member(
            "bravo", load(path, "bravo", proxies["bravo"].dsn), fake_clock
        )
        b.start()

        async def bravo_joined() -> bool:
            live = await db_conn.fetch("select name from cluster_member")
            return {r["name"] for r in live} == {"alpha", "bravo"}

        await until(bravo_joined)
        assert await a.halt() == 0
        before = len(sim.stats.requests)

        async def bravo_collects() -> bool:
            state = b.run.accounts.get(acct.ig_user_id) if b.shell.runner else None
            return state is not None and state.target.token == renewed

        await until(bravo_collects)
        fake_clock.advance(2 * 3600)
        b.run._wake.set()
        done = b.run.accounts[acct.ig_user_id].tally.jobs_done

        async def bravo_called() -> bool:
            state = b.run.accounts.get(acct.ig_user_id)
            return state is not None and state.tally.jobs_done > done

        await until(bravo_called)
        after = list(sim.stats.requests)[before:]
        mine = [r for r in after if r.account == acct.ig_user_id]
        assert mine
        # the simulator takes only the renewed token now: every call of bravo's went through
        assert not [r for r in mine if str(r.error).startswith("190")]
        assert refreshes() == 1
        assert "token_taken_over" in [e["event"] for e in logs]

        # bravo freezes past its TTL (cut from the database, its clock jumps); inside the
        # renewal window it renews nothing, and its late write would be refused; charlie takes
        # the account over and renews it once
        assert b.shell.roster is not None
        frozen_epoch = b.member.epoch(acct.ig_user_id)
        assert frozen_epoch is not None
        (held,) = b.shell.roster.keeper.accounts()
        await proxies["bravo"].cut()
        fake_clock.advance(51 * 86400)
        assert b.shell.roster.keeper.refresh_due(fake_clock.now()) == [acct.ig_user_id]
        b.mono.offset += 31.0
        assert not b.member.holds(acct.ig_user_id)
        assert b.shell.roster.keeper.refresh_due(fake_clock.now()) == []
        update = await b.shell.roster.update(fake_clock.now())
        assert refreshes() == 1
        assert not update.changed
        await db_conn.execute(
            "update lease set expires_at = now() - interval '1 second' where resource = $1",
            resource,
        )
        await db_conn.execute(
            "update cluster_member set heartbeat_at = now() - interval '1 hour'"
            " where name = 'bravo'"
        )
        c = members["charlie"] = Member(
            "charlie", load(path, "charlie", proxies["charlie"].dsn), fake_clock
        )
        c.start()

        async def charlie_renewed() -> bool:
            return refreshes() == 2 and (await holders(db_conn)).get(resource) == "charlie"

        await until(charlie_renewed)
        newest = acct.token
        await until(
            lambda: db_conn.fetchval(
                "select written_by = 'charlie' from sealed_token where ig_user_id = $1",
                acct.ig_user_id,
            )
        )
        # bravo's seal under its lost epoch is refused (charlie's row stays)
        share = tokens.TokenShare(
            store,
            vault.Vault(bytes.fromhex(key.read_text().strip())),
            holder="bravo",
            epoch_of=lambda uid: frozen_epoch,
        )
        assert not await share.put(held)
        assert await db_conn.fetchval("select written_by from sealed_token") == "charlie"
        for m in (b, c):
            assert await m.halt() == 0
    assert_no_secret(
        [seed, renewed, newest, key.read_text().strip()],
        repr(logs),
        await database_text(db_conn),
    )


async def test_an_instagram_login_source_account_keeps_its_renewed_token_across_holders(
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
    db_conn: asyncpg.Connection,
    proxies: dict[str, PgProxy],
    members: dict[str, Member],
) -> None:
    sim = await sim_factory(
        accounts=1, instagram_login=frozenset({0}), media_per_account=1, stories_per_account=0
    )
    (acct,) = sim.world.accounts
    seed = acct.token
    (tmp_path / "solo.token").write_text(seed)
    key = key_file(tmp_path)
    path = write(
        tmp_path,
        sim,
        proxies["alpha"].dsn,
        f'secret_file = "{key}"\n\n[[sources]]\nname = "solo"\nlogin = "instagram"\n'
        f'token_file = "{tmp_path / "solo.token"}"\n',
    )

    def refreshes() -> int:
        return int(sim.stats.calls_by_kind["refresh_access_token"])

    with structlog.testing.capture_logs() as logs:
        a = members["alpha"] = Member(
            "alpha", load(path, "alpha", proxies["alpha"].dsn), fake_clock
        )
        a.start()

        async def listed_renewed_shared() -> bool:
            source = await db_conn.fetchval(
                "select source from account where ig_user_id = $1", acct.ig_user_id
            )
            sealed = await db_conn.fetchval("select count(*) from sealed_token")
            return bool(source == "solo" and sealed == 1)

        await until(listed_renewed_shared)
        renewed = acct.token
        assert renewed != seed
        assert await a.halt() == 0
        # bravo alone: before it lists the source, it collects the account it found in the
        # database with the token alpha renewed (the configured one is dead by now)
        before = len(sim.stats.requests)
        b = members["bravo"] = Member(
            "bravo", load(path, "bravo", proxies["bravo"].dsn), fake_clock
        )
        b.start()

        async def bravo_listed_and_holds() -> bool:
            state = b.run.accounts.get(acct.ig_user_id) if b.shell.runner else None
            return (
                state is not None
                and state.target.token == renewed
                and b.calls("me", login="instagram") > 0
            )

        await until(bravo_listed_and_holds)
        fake_clock.advance(2 * 3600)
        b.run._wake.set()
        done = b.run.accounts[acct.ig_user_id].tally.jobs_done

        async def bravo_collected() -> bool:
            return b.run.accounts[acct.ig_user_id].tally.jobs_done > done

        await until(bravo_collected)
        mine = [r for r in list(sim.stats.requests)[before:] if r.account == acct.ig_user_id]
        assert mine
        assert not [r for r in mine if str(r.error).startswith("190")]
        assert refreshes() == 1
        assert b.run.accounts[acct.ig_user_id].target.token == renewed
        assert await b.halt() == 0
    assert_no_secret([seed, renewed], repr(logs), await database_text(db_conn))
