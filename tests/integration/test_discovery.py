"""Discovery from one agency token against the simulator: allow/deny, Pages without an
Instagram account, a Page token that cannot read its account, removal at a later listing."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from collector import clock, config, discovery, graph, models
from collector import store as store_mod
from collector.simulator import server

WORLD = {
    "accounts": 7,
    "extra_pages": 3,
    "unreadable": frozenset({2}),
    "media_per_account": 2,
    "stories_per_account": 0,
}


def agency_settings(tmp_path: Path, sim: server.Simulator, *, deny_id: str) -> config.Settings:
    (tmp_path / "agency.token").write_text(sim.world.user_token + "\n")
    text = f"""
[graph]
base_url = "{sim.base_url}"
instagram_base_url = "{sim.instagram_base_url}"
retry_base = 0.001
retry_max = 0.01

[[sources]]
name = "agency"
token_file = "agency.token"
allow = ["SIM_ACCT_*"]
deny = ["sim_acct_4", "{deny_id}"]
"""
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return config.load(path, environ={})


@pytest.fixture
async def clients(fake_clock: clock.FakeClock) -> AsyncIterator[dict[str, Any]]:
    made: dict[str, Any] = {}

    def make(sim: server.Simulator) -> dict[str, graph.GraphClient]:
        made["facebook"] = graph.GraphClient(
            base_url=sim.base_url, api_version="v25.0", clock=fake_clock, retry_base=0.001
        )
        made["instagram"] = graph.GraphClient(
            base_url=sim.instagram_base_url,
            api_version="v25.0",
            clock=fake_clock,
            retry_base=0.001,
            limiter=made["facebook"].limiter,
        )
        return made

    made["make"] = make
    yield made
    for key in ("facebook", "instagram"):
        if key in made:
            await made[key].close()


async def test_agency_source_collects_exactly_the_allowed_accounts(
    sim_factory: Any,
    clients: dict[str, Any],
    fake_clock: clock.FakeClock,
    tmp_path: Path,
    store: store_mod.Store,
    db_conn: asyncpg.Connection,
) -> None:
    sim = await sim_factory(**WORLD)
    w = sim.world
    settings = agency_settings(tmp_path, sim, deny_id=w.accounts[4].ig_user_id)
    hosts = clients["make"](sim)
    finder = discovery.Discoverer(hosts, page_size=4)
    with structlog.testing.capture_logs() as logs:
        await finder.refresh(settings.sources, fake_clock.now())
        first = finder.accounts([])
        fake_clock.advance(86400)
        assert finder.due(settings.sources[0], fake_clock.now())
        await finder.refresh(settings.sources, fake_clock.now())
        again = finder.accounts([])
    expected = [w.accounts[i] for i in (0, 1, 5, 6)]
    assert [(f.ig_user_id, f.username) for f in first] == [
        (a.ig_user_id, a.username) for a in expected
    ]
    assert again == first
    # each Page's own token, as the listing handed it over
    assert [f.token for f in first] == [a.token for a in expected]
    assert {f.source for f in first} == {"agency"}
    skips = [e for e in logs if e["event"] == "account_skipped"]
    assert Counter(e["reason"] for e in skips) == {
        "no_instagram_account": 3,
        "denied": 2,
        "no_permission": 1,
    }
    assert len({(e["page_id"], e["reason"]) for e in skips}) == len(skips), "each logged once"
    assert {e["ig_user_id"] for e in skips if e["reason"] == "denied"} == {
        w.accounts[3].ig_user_id,
        w.accounts[4].ig_user_id,
    }
    assert next(e for e in skips if e["reason"] == "no_permission")["ig_user_id"] == (
        w.accounts[2].ig_user_id
    )
    assert not any(a.token in repr(logs) for a in w.accounts)

    def rows(found: list[discovery.Found]) -> list[models.AccountRow]:
        return [
            models.AccountRow(
                models.IgUserId(f.ig_user_id), f.username, True, login=f.login, source=f.source
            )
            for f in found
        ]

    await store.sync_accounts(rows(first), fake_clock.now())
    # a Page leaves the agency's Business: its account is removed at the next listing
    w.remove_page(w.accounts[0].ig_user_id)
    fake_clock.advance(86400)
    await finder.refresh(settings.sources, fake_clock.now())
    later = finder.accounts([])
    assert [f.ig_user_id for f in later] == [a.ig_user_id for a in expected[1:]]
    await store.sync_accounts(rows(later), fake_clock.now())
    health = {
        r["ig_user_id"]: r
        for r in await db_conn.fetch(
            "select ig_user_id, name, status, status_reason, source, login from account_health"
        )
    }
    gone = health[w.accounts[0].ig_user_id]
    assert (gone["status"], gone["status_reason"], gone["source"]) == (
        "removed",
        "no longer listed by source agency",
        "agency",
    )
    assert {r["status"] for k, r in health.items() if k != w.accounts[0].ig_user_id} == {"unknown"}
    assert {r["login"] for r in health.values()} == {"facebook"}


async def test_a_failed_listing_keeps_the_accounts_and_configured_entries_win(
    sim_factory: Any,
    clients: dict[str, Any],
    fake_clock: clock.FakeClock,
    tmp_path: Path,
    store: store_mod.Store,
    db_conn: asyncpg.Connection,
) -> None:
    sim = await sim_factory(**WORLD)
    w = sim.world
    settings = agency_settings(tmp_path, sim, deny_id="1")
    finder = discovery.Discoverer(clients["make"](sim))
    await finder.refresh(settings.sources, fake_clock.now())
    with structlog.testing.capture_logs() as logs:
        found = finder.accounts([w.accounts[0].ig_user_id])
        finder.accounts([w.accounts[0].ig_user_id])
    assert w.accounts[0].ig_user_id not in {f.ig_user_id for f in found}
    duplicates = [e for e in logs if e.get("reason") == "configured"]
    assert len(duplicates) == 1
    rows = [
        models.AccountRow(models.IgUserId(f.ig_user_id), f.username, True, source=f.source)
        for f in found
    ]
    await store.sync_accounts(rows, fake_clock.now())
    # the agency token dies: the listing fails, what it found stays collected and not removed
    w.user_token = "EAAsimUrevoked0000000000"
    with structlog.testing.capture_logs() as logs:
        await finder.refresh(settings.sources, fake_clock.now(), force=True)
    assert "agency" in finder.failed
    assert [e["event"] for e in logs] == ["source_listing_failed"]
    assert finder.accounts([w.accounts[0].ig_user_id]) == found
    await store.sync_accounts([], fake_clock.now(), keep_sources=list(finder.failed))
    statuses = {r["status"] for r in await db_conn.fetch("select status from account")}
    assert statuses == {"unknown"}
