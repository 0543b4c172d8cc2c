"""PostgreSQL goes away in the middle of a run: collection goes on, rows are spooled, replayed
in order when it is back, and nothing is lost or duplicated (checked against ground truth)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from collector import clock, metrics_catalog, spool, wiring, writer
from collector import store as store_mod

from ..pgproxy import PgProxy
from .conftest import MakeSettings
from .test_once import served_media, stored_media


async def test_outage_loses_and_duplicates_nothing(
    sim_factory: Any,
    make_settings: MakeSettings,
    fake_clock: clock.FakeClock,
    db_dsn: str,
    proxy: PgProxy,
    tmp_path: Path,
) -> None:
    sim = await sim_factory(
        accounts=3,
        media_per_account=8,
        stories_per_account=2,
        story_lifetime=timedelta(hours=2),
        stories_per_day=24.0,
        quiet_story_fraction=0.0,
    )
    settings = make_settings(
        sim,
        sections={
            "database": {"dsn": proxy.dsn},
            "schedule": {
                "story_lifetime": "2h",
                "story_final_lead": "10m",
                "story_discovery_every": "10m",
                "story_poll_every": "30m",
                "account_insights_backfill_days": 2,
            },
        },
    )
    st = await store_mod.Store.open(proxy.dsn, connect_timeout=2, command_timeout=5)
    limiter = wiring.build_limiter(settings)
    client = wiring.build_client(settings, fake_clock, limiter)
    try:
        await wiring.prepare(settings, st, fake_clock)
        sp = spool.Spool(tmp_path / "state", max_bytes=10**9)
        wr = writer.Writer(st, sp)
        catalog = metrics_catalog.Catalog("v25.0", [])
        run = wiring.build_runner(
            settings,
            store=st,
            client=client,
            limiter=limiter,
            writer=wr,
            catalog=catalog,
            clock=fake_clock,
        )
        await run.set_accounts(wiring.targets_of(settings))

        async def advance(hours: float) -> None:
            end = fake_clock.now() + timedelta(hours=hours)
            while True:
                await run.run_until_idle()
                await wr.flush()
                wake = run.scheduler.next_wakeup(fake_clock.now())
                if wake is None or wake > end:
                    fake_clock.set(end)
                    await run.run_until_idle()
                    await wr.flush()
                    return
                fake_clock.set(max(wake, fake_clock.now()))

        await advance(1)
        assert sp.size == 0
        await proxy.cut()
        await advance(2)
        # collection went on while the database was away; its rows wait in the spool
        assert sp.size > 0
        up_during_outage = wr.db_up
        assert not up_during_outage
        spooled = sp.count()
        assert spooled > 3
        assert run.stats.stories_finalised > 0
        copy = tmp_path / "copy"
        copy.mkdir()
        (copy / spool.FILENAME).write_bytes(sp.path.read_bytes())
        await proxy.restore()
        for _ in range(3):
            if await wr.replay():
                break
        assert sp.size == 0
        assert wr.db_up
        await advance(1)
        await wr.close()

        conn = await asyncpg.connect(db_dsn)
        try:
            stored = await stored_media(conn)
            served = served_media(sim)
            assert stored == served
            assert max(stored.values()) == 1
            finals = await conn.fetchval(
                "select count(*) from media where final_captured_at is not null"
            )
            assert finals == run.stats.stories_finalised
            # replaying the spooled batches a second time changes nothing
            before = await conn.fetchval("select count(*) from media_metric")
            replayed = list(spool.Spool(copy, max_bytes=1).batches())
            assert len(replayed) == spooled
            for batch in replayed:
                await st.write(batch)
            assert await conn.fetchval("select count(*) from media_metric") == before
            assert await stored_media(conn) == served
        finally:
            await conn.close()
    finally:
        await client.close()
        await st.close()
