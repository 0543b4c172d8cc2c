"""Three real daemons (``[cluster] enabled = true``) share 30 accounts through leases in one
database, against the simulator on the real clock: one is SIGKILLed, another frozen (SIGSTOP)
past its lease TTL and woken; every story final still lands inside its window, no account ever
has two requests in flight at once, and every stored value is what the API served."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collector import clock
from collector.simulator import server, world

from ..integration.conftest import write_config
from . import proc as proc_mod

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(420)]

LIFETIME = timedelta(seconds=70)
LEAD = timedelta(seconds=20)
#: the takeover (TTL + a heartbeat + headroom) stays well inside the final window (LEAD)
TTL = 6.0
HEARTBEAT = 1.5


async def _wait_for(
    check: Callable[[], Awaitable[bool]], *, within: float, every: float = 0.25
) -> float:
    """Poll ``check`` until true; returns how long it took (real time passes by design)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        if loop.time() - started > within:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)
    return loop.time() - started


async def _holders(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "select resource, holder from lease where resource like 'account:%'"
        " and holder is not null and expires_at > now()"
    )
    return {r["resource"].removeprefix("account:"): r["holder"] for r in rows}


async def test_three_daemons_share_the_accounts_through_a_kill_and_a_freeze(
    tmp_path: Path, db_dsn: str
) -> None:
    cfg = world.WorldConfig(
        seed=23,
        accounts=30,
        media_per_account=2,
        stories_per_account=1,
        story_lifetime=LIFETIME,
        stories_per_day=86400 / 45,  # a new story every ~45 s per account
        quiet_story_fraction=0.0,
        webhook_poll_interval=None,
        latency=0.01,
    )
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        config = write_config(
            tmp_path / "collector.toml",
            sim,
            db_dsn,
            sections={
                "graph": {"retry_base": 0.05, "retry_max": 0.5},
                "limits": {"max_in_flight": 8},
                "web": {"port": 0},
                "cluster": {
                    "enabled": True,
                    "lease_ttl": f"{TTL:g}s",
                    "heartbeat": f"{HEARTBEAT:g}s",
                },
                "schedule": {
                    "story_lifetime": "70s",
                    "story_final_lead": "20s",
                    "story_discovery_every": "5s",
                    "story_poll_every": "20s",
                    "account_insights_backfill_days": 1,
                },
            },
        )
        conn = await asyncpg.connect(db_dsn)
        names = ["alpha", "bravo", "charlie"]
        procs: dict[str, asyncio.subprocess.Process] = {}
        outs: dict[str, proc_mod.Output] = {}
        accounts = {a.ig_user_id for a in sim.world.accounts}
        started = datetime.now(UTC)
        try:
            for name in names:
                # the same config file; each process its own name and state directory (spool)
                procs[name] = await proc_mod.spawn(
                    "run",
                    "--config",
                    str(config),
                    env={
                        "COLLECTOR_CLUSTER__NAME": name,
                        "COLLECTOR_STATE__DIRECTORY": str(tmp_path / f"state-{name}"),
                    },
                )
                outs[name] = proc_mod.Output(procs[name])

            async def balanced() -> bool:
                held = Counter((await _holders(conn)).values())
                return sum(held.values()) == len(accounts) and all(
                    8 <= held[n] <= 12 for n in names
                )

            await _wait_for(balanced, within=120)

            # SIGKILL one: its accounts are taken over within the TTL plus a heartbeat or so
            victim = (await _holders(conn)).copy()
            lost = {uid for uid, holder in victim.items() if holder == "alpha"}
            procs["alpha"].send_signal(signal.SIGKILL)
            assert await procs["alpha"].wait() == -signal.SIGKILL

            async def taken_over() -> bool:
                now = await _holders(conn)
                return all(now.get(uid) in ("bravo", "charlie") for uid in lost)

            took = await _wait_for(taken_over, within=60, every=0.1)
            # the TTL, a heartbeat, and headroom for a loaded two-core machine
            assert took <= TTL + HEARTBEAT + 4.0, took

            # SIGSTOP another past its TTL: the survivor takes everything; SIGCONT: the woken
            # one stops calling for what it lost, then gets its share back
            procs["bravo"].send_signal(signal.SIGSTOP)

            async def all_with_charlie() -> bool:
                now = await _holders(conn)
                return len(now) == len(accounts) and set(now.values()) == {"charlie"}

            await _wait_for(all_with_charlie, within=60)
            await asyncio.sleep(1.0)  # frozen a while longer still (the freeze is the point)
            procs["bravo"].send_signal(signal.SIGCONT)

            async def shared_again() -> bool:
                held = Counter((await _holders(conn)).values())
                return held["bravo"] >= 12 and held["charlie"] >= 12

            try:
                await _wait_for(shared_again, within=60)
            except AssertionError:
                held = Counter((await _holders(conn)).values())
                tails = {n: outs[n].text()[-4000:] for n in ("bravo", "charlie")}
                raise AssertionError(f"not shared again: {held}; {tails}") from None

            # let every story live when things happened expire, then stop cleanly
            last = max(
                s.expires_at
                for s in sim.world.stories_between(started, datetime.now(UTC))
                if s.expires_at is not None
            )

            async def past_last() -> bool:
                return datetime.now(UTC) > last + timedelta(seconds=2)

            await _wait_for(past_last, within=120)
            ended = datetime.now(UTC)
            for name in ("bravo", "charlie"):
                procs[name].send_signal(signal.SIGTERM)
            for name in ("bravo", "charlie"):
                rc = await asyncio.wait_for(procs[name].wait(), 60)
                assert rc == 0, outs[name].text()[-3000:]
            # a clean stop gives the leases back at once
            assert await _holders(conn) == {}

            # never two requests in flight for one account (per_account_in_flight = 1)
            assert sim.stats.max_in_flight
            assert max(sim.stats.max_in_flight.values()) == 1, sim.stats.max_in_flight

            # every story that expired while daemons ran has its final inside its window
            expired = [
                s
                for s in sim.world.stories_between(started, ended)
                if s.expires_at is not None
                and started + LEAD + timedelta(seconds=5) < s.expires_at <= ended
            ]
            assert len(expired) >= 30
            for story in expired:
                final = await conn.fetchval(
                    "select final_captured_at from media where media_id = $1", story.id
                )
                assert story.expires_at is not None
                assert final is not None, story.id
                assert story.expires_at - LEAD <= final < story.expires_at

            # every stored value is the one the simulator served at its capture time, once
            rows = await conn.fetch(
                "select media_id, metric, value, captured_at from media_metric where breakdown = ''"
            )
            assert rows
            served: dict[tuple[str, str], list[tuple[datetime, Any]]] = {}
            for v in sim.stats.served:
                if not v.breakdown:
                    served.setdefault((v.object_id, v.metric), []).append((v.served_at, v.value))
            for r in rows:
                # served within moments of its capture time (the real clock runs on, and one
                # poll's calls share the time of its first answer)
                matches = [
                    Decimal(str(value))
                    for at, value in served.get((r["media_id"], r["metric"]), [])
                    if abs((at - r["captured_at"]).total_seconds()) <= 5
                ]
                assert r["value"] in matches, (r["media_id"], r["metric"], r["captured_at"])
            dupes = await conn.fetchval(
                "select count(*) - count(distinct (media_id, metric, breakdown, dimension,"
                " captured_at)) from media_metric"
            )
            assert dupes == 0
            text = "".join(o.text() for o in outs.values())
            assert "Traceback" not in text
            assert '"event": "leases_lost"' in outs["bravo"].text() or (
                '"event": "leases_lapsed"' in outs["bravo"].text()
            )
        finally:
            for p in procs.values():
                if p.returncode is None:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                    await p.wait()
            for o in outs.values():
                await o.task
            await conn.close()
