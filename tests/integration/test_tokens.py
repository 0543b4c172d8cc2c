"""Instagram Login token renewal against the simulator's instagram host, on a fake clock."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from collector import clock, graph, tokens
from collector.simulator import server


@pytest.fixture
async def instagram(
    sim_factory: Any, fake_clock: clock.FakeClock
) -> AsyncIterator[tuple[server.Simulator, graph.GraphClient]]:
    sim = await sim_factory(accounts=2, instagram_login=frozenset({1}))
    client = graph.GraphClient(
        base_url=sim.instagram_base_url, api_version="v25.0", clock=fake_clock, retry_base=0.001
    )
    yield sim, client
    await client.close()


def keeper(directory: Path) -> tokens.TokenKeeper:
    return tokens.TokenKeeper(
        directory, refresh_before=timedelta(days=10), park_before=timedelta(days=1)
    )


async def test_renewed_token_is_used_kept_and_survives_a_restart(
    instagram: tuple[server.Simulator, graph.GraphClient],
    fake_clock: clock.FakeClock,
    tmp_path: Path,
) -> None:
    sim, client = instagram
    acct = sim.world.accounts[1]
    seed = acct.token
    directory = tmp_path / "state" / "tokens"
    keep = keeper(directory)
    assert keep.adopt(acct.ig_user_id, "creator", seed) == seed
    # a seed's expiry is unknown: it is renewed at once (it is older than 24 h)
    assert keep.refresh_due(fake_clock.now()) == [acct.ig_user_id]
    with structlog.testing.capture_logs() as logs:
        (outcome,) = await keep.refresh_all_due(client, fake_clock.now())
    assert outcome.renewed
    fresh = keep.current(acct.ig_user_id)
    assert fresh == acct.token != seed
    assert keep.expires_at(acct.ig_user_id) == fake_clock.now() + timedelta(days=60)
    assert [e["event"] for e in logs] == ["token_refreshed"]
    assert seed not in repr(logs)
    assert fresh not in repr(logs)
    # the next calls carry the new token (the simulator no longer takes the seed)
    resp = await client.get("me", {"fields": "username"}, token=fresh, account=None)
    assert resp.body["username"] == acct.username
    call = sim.stats.requests[-2]
    assert (call.kind, call.host, call.path) == (
        "refresh_access_token",
        "instagram",
        "/refresh_access_token",
    )
    # kept 0600 in a 0700 directory, the seed only as its fingerprint
    path = directory / f"{acct.ig_user_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    text = path.read_text()
    assert seed not in text
    assert json.loads(text)["seed_sha256"] == tokens.fingerprint(seed)
    assert not list(directory.glob(".*.tmp"))
    # not due again until 10 days before its expiry
    assert keep.refresh_due(fake_clock.now()) == []
    # a restart: the configured seed is still the old token, the kept one wins
    again = keeper(directory)
    assert again.adopt(acct.ig_user_id, "creator", seed) == fresh
    assert again.expires_at(acct.ig_user_id) == fake_clock.now() + timedelta(days=60)
    fake_clock.advance(51 * 86400)
    assert again.refresh_due(fake_clock.now()) == [acct.ig_user_id]
    (outcome,) = await again.refresh_all_due(client, fake_clock.now())
    assert outcome.renewed
    assert again.current(acct.ig_user_id) == acct.token != fresh


async def test_an_operator_edited_token_wins_over_the_kept_one(
    instagram: tuple[server.Simulator, graph.GraphClient],
    fake_clock: clock.FakeClock,
    tmp_path: Path,
) -> None:
    sim, client = instagram
    acct = sim.world.accounts[1]
    keep = keeper(tmp_path)
    keep.adopt(acct.ig_user_id, "creator", acct.token)
    await keep.refresh_all_due(client, fake_clock.now())
    assert (tmp_path / f"{acct.ig_user_id}.json").exists()
    # the operator logs in again and writes a brand-new token in the token file
    edited = "IGAAoperatorminted0000000000000000"
    restarted = keeper(tmp_path)
    with structlog.testing.capture_logs() as logs:
        assert restarted.adopt(acct.ig_user_id, "creator", edited) == edited
    assert [e["event"] for e in logs] == ["token_seed_changed"]
    assert not (tmp_path / f"{acct.ig_user_id}.json").exists()
    # a damaged file is ignored (the seed is used) and never echoed
    (tmp_path / f"{acct.ig_user_id}.json").write_text('{"token": "IGAAsecretish", ')
    with structlog.testing.capture_logs() as logs:
        assert keeper(tmp_path).adopt(acct.ig_user_id, "creator", edited) == edited
    assert [e["event"] for e in logs] == ["token_file_ignored"]
    assert "IGAAsecretish" not in repr(logs)


async def test_a_failing_refresh_backs_off_then_parks_before_expiry(
    instagram: tuple[server.Simulator, graph.GraphClient],
    fake_clock: clock.FakeClock,
    tmp_path: Path,
) -> None:
    sim, client = instagram
    acct = sim.world.accounts[1]
    keep = keeper(tmp_path)
    keep.adopt(acct.ig_user_id, "creator", acct.token)
    await keep.refresh_all_due(client, fake_clock.now())
    expires = keep.expires_at(acct.ig_user_id)
    assert expires is not None
    sim.world.set_refresh_fails(acct.ig_user_id)
    fake_clock.advance(50 * 86400)  # inside the 10-day window
    (first,) = await keep.refresh_all_due(client, fake_clock.now())
    assert (first.renewed, first.park_reason) == (False, None)
    assert "cannot be refreshed" in (first.error or "")
    # backoff: not again before the retry time, which doubles
    assert keep.refresh_due(fake_clock.now()) == []
    fake_clock.advance(600)
    (second,) = await keep.refresh_all_due(client, fake_clock.now())
    assert not second.renewed
    held = keep.accounts()[0]
    assert held.retry_at == fake_clock.now() + timedelta(minutes=20)
    # inside park_before of the expiry: the account is to be parked, while the token still works
    fake_clock.advance((expires - fake_clock.now() - timedelta(hours=20)).total_seconds())
    (last,) = await keep.refresh_all_due(client, fake_clock.now())
    assert last.park_reason is not None
    assert last.park_reason.startswith(
        f"the Instagram Login token expires at {expires.isoformat()} and could not be renewed"
    )
    assert fake_clock.now() < expires
