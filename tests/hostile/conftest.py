"""Fixtures of the hostile tier: the simulator on a fake clock, the hostile proxy in front of
it, a config pointing the collector at the proxy, and ground truth per account."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collector import clock, config, daemon
from collector.simulator import server as sim_server
from collector.simulator import world
from tests.integration import conftest as integration

from . import server

Key = tuple[Any, ...]


@pytest.fixture
def fake_clock() -> clock.FakeClock:
    return clock.FakeClock(integration.START)


@pytest.fixture
async def sim(fake_clock: clock.FakeClock) -> AsyncIterator[sim_server.Simulator]:
    """Three accounts: the tests make the first one hostile, the others stay healthy."""
    started = await sim_server.start(
        world.WorldConfig(
            seed=11,
            accounts=3,
            media_per_account=12,
            stories_per_account=2,
            webhook_poll_interval=None,
            low_follower_fraction=0.0,
        ),
        clock=fake_clock,
    )
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def hostile(sim: sim_server.Simulator) -> AsyncIterator[server.Hostile]:
    proxy = await server.Hostile.start(sim.base_url)
    try:
        yield proxy
    finally:
        await proxy.close()


Run = Callable[..., Any]


@pytest.fixture
def run_once(
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    tmp_path: Path,
    db_dsn: str,
    fake_clock: clock.FakeClock,
) -> Run:
    """``run --once`` through the hostile proxy: returns (exit code, summary)."""

    async def run(graph: dict[str, Any] | None = None) -> tuple[int, str]:
        sections: dict[str, dict[str, Any]] = {
            "graph": {"base_url": hostile.base_url, "max_retries": 2, **(graph or {})},
            "schedule": {"account_insights_backfill_days": 2},
        }
        path = integration.write_config(tmp_path / "collector.toml", sim, db_dsn, sections=sections)
        settings = config.load(path, environ={})
        out = io.StringIO()
        rc = await daemon.run_once(settings, clock=fake_clock, out=out)
        return rc, out.getvalue()

    return run


def _num(value: Any) -> Decimal:
    return Decimal(str(value))


async def assert_ground_truth(
    sim: sim_server.Simulator,
    conn: asyncpg.Connection,
    accounts: list[str],
    *,
    served_again: bool = False,
) -> None:
    """Every value the simulator served for ``accounts`` is stored exactly once, and nothing
    else is stored for them (media and story metrics, account metrics).

    ``served_again``: answers the hostile server spoiled were asked again at the same (fake)
    time, so the simulator served some values more than once; each is stored once.
    """
    wanted = set(accounts)
    served: Counter[Key] = Counter()
    served_acct: dict[Key, Decimal] = {}
    for v in sim.stats.served:
        if v.account not in wanted or v.source == "webhook":
            continue
        if v.object_id in wanted:
            if v.source == "insights":
                served_acct[
                    (v.object_id, v.metric, v.breakdown or "", v.dimension or "", v.end_time)
                ] = _num(v.value)
            continue
        served[
            (
                v.object_id,
                v.metric,
                v.breakdown or "",
                v.dimension or "",
                v.served_at,
                _num(v.value),
            )
        ] += 1
    rows = await conn.fetch(
        "select m.media_id, metric, breakdown, dimension, captured_at, value"
        " from media_metric m join media using (media_id) where media.ig_user_id = any($1)",
        accounts,
    )
    stored = Counter(tuple(r) for r in rows)
    assert served, "the simulator served no media values for the healthy accounts"
    if served_again:
        assert set(stored) == set(served)
        assert max(stored.values()) == 1
    else:
        assert stored == served
    account_rows = await conn.fetch(
        "select ig_user_id, metric, breakdown, dimension, end_time, value from account_metric"
        " where ig_user_id = any($1)",
        accounts,
    )
    by_key = {tuple(r)[:5]: r["value"] for r in account_rows}
    assert served_acct
    for key, value in served_acct.items():
        if key[4] is None:  # demographics: stored on the capture day's bucket
            assert [v for k, v in by_key.items() if k[:4] == key[:4]] == [value], key
        else:
            assert by_key[key] == value, key
    assert len(account_rows) == len(served_acct)


async def statuses(conn: asyncpg.Connection) -> dict[str, tuple[str, str | None]]:
    return {
        r["ig_user_id"]: (r["status"], r["status_reason"])
        for r in await conn.fetch("select ig_user_id, status, status_reason from account")
    }


async def errors_of(conn: asyncpg.Connection, ig_user_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "select job, error_class, message from collection_error where ig_user_id = $1"
            " order by occurred_at",
            ig_user_id,
        )
    )
