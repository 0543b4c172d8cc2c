"""``run --once`` end to end for issue 11: an agency source, an Instagram Login account on its
own host, and Instagram Login tokens renewed, kept and used after a restart."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from collector import clock, config, daemon, tokens
from collector.simulator import server


def write(tmp_path: Path, sim: server.Simulator, dsn: str, body: str) -> config.Settings:
    text = f"""
[database]
dsn = "{dsn}"

[graph]
base_url = "{sim.base_url}"
instagram_base_url = "{sim.instagram_base_url}"
retry_base = 0.001
retry_max = 0.01

[state]
directory = "{tmp_path / "state"}"
{body}
"""
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return config.load(path, environ={})


async def run_once(settings: config.Settings, fake: clock.FakeClock) -> tuple[int, str]:
    out = io.StringIO()
    rc = await daemon.run_once(settings, clock=fake, out=out)
    return rc, out.getvalue()


async def test_one_agency_source_collects_exactly_the_allowed_accounts(
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
    db_dsn: str,
    db_conn: asyncpg.Connection,
) -> None:
    # a new app (after 2026-11-04): the simulator refuses ?ids=, aliases and async batch
    sim = await sim_factory(
        accounts=7, extra_pages=3, unreadable=frozenset({2}), media_per_account=3, new_app=True
    )
    w = sim.world
    (tmp_path / "agency.token").write_text(w.user_token)
    body = f"""
[[sources]]
name = "agency"
token_file = "{tmp_path / "agency.token"}"
allow = ["sim_acct_*"]
deny = ["sim_acct_4", "{w.accounts[4].ig_user_id}"]
"""
    settings = write(tmp_path, sim, db_dsn, body)
    with structlog.testing.capture_logs() as logs:
        rc, summary = await run_once(settings, fake_clock)
    assert rc == 0, summary
    allowed = {w.accounts[i].ig_user_id for i in (0, 1, 5, 6)}
    rows = await db_conn.fetch("select ig_user_id, name, status, source, login from account_health")
    assert {r["ig_user_id"] for r in rows} == allowed
    assert {(r["status"], r["source"], r["login"]) for r in rows} == {("ok", "agency", "facebook")}
    assert {r["name"] for r in rows} == {w.accounts[i].username for i in (0, 1, 5, 6)}
    snapshots = await db_conn.fetch("select distinct ig_user_id from account_snapshot")
    assert {r["ig_user_id"] for r in snapshots} == allowed
    # nothing was collected from the accounts left out (the unreadable one was read once)
    touched = {r.account for r in sim.stats.requests if r.account is not None}
    assert touched == allowed
    probe = [r for r in sim.stats.requests if w.accounts[2].ig_user_id in r.path]
    assert [(r.kind, r.status) for r in probe] == [("ig_user", 400)]
    skips = sorted((e["reason"], e["page_id"]) for e in logs if e["event"] == "account_skipped")
    assert [reason for reason, _ in skips] == [
        "denied",
        "denied",
        "no_instagram_account",
        "no_instagram_account",
        "no_instagram_account",
        "no_permission",
    ]
    # the Page tokens the listing handed over never reach a log line
    assert not any(a.token in repr(logs) for a in w.accounts)
    # a Page leaves the agency: at the next listing its account is removed, its data kept
    w.remove_page(w.accounts[5].ig_user_id)
    fake_clock.advance(3600)
    rc, summary = await run_once(settings, fake_clock)
    assert rc == 0, summary
    gone = await db_conn.fetchrow(
        "select status, status_reason from account where ig_user_id = $1", w.accounts[5].ig_user_id
    )
    assert tuple(gone) == ("removed", "no longer listed by source agency")
    kept = await db_conn.fetchval(
        "select count(*) from account_snapshot where ig_user_id = $1", w.accounts[5].ig_user_id
    )
    assert kept == 1


async def test_instagram_login_account_end_to_end_on_its_own_host(
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
    db_dsn: str,
    db_conn: asyncpg.Connection,
) -> None:
    sim = await sim_factory(
        accounts=2,
        instagram_login=frozenset({1}),
        media_per_account=6,
        stories_per_account=2,
        new_app=True,
    )
    fb, ig = sim.world.accounts
    (tmp_path / "fb.token").write_text(fb.token)
    (tmp_path / "ig.token").write_text(ig.token)
    body = f"""
[[accounts]]
name = "brand"
ig_user_id = "{fb.ig_user_id}"
token_file = "{tmp_path / "fb.token"}"

[[accounts]]
name = "creator"
ig_user_id = "{ig.ig_user_id}"
login = "instagram"
token_file = "{tmp_path / "ig.token"}"
"""
    settings = write(tmp_path, sim, db_dsn, body)
    rc, summary = await run_once(settings, fake_clock)
    assert rc == 0, summary
    mine = [r for r in sim.stats.requests if r.account == ig.ig_user_id]
    assert mine
    assert {r.host for r in mine} == {"instagram"}
    assert not any(r.in_batch or r.kind == "batch" for r in mine)
    assert {r.kind for r in mine} >= {
        "ig_user",
        "ig_media_list",
        "ig_stories",
        "user_insights",
        "media_insights",
        "me",
    }
    assert {r.host for r in sim.stats.requests if r.account == fb.ig_user_id} == {"facebook"}
    # (#10) is a story under five viewers: an answer about the story, not about the account
    assert all(r.status == 200 or r.error == "10" for r in mine), [
        r for r in mine if r.status != 200
    ]
    row = await db_conn.fetchrow(
        "select status, login, source from account_health where ig_user_id = $1", ig.ig_user_id
    )
    assert tuple(row) == ("ok", "instagram", "configured")
    counts = await db_conn.fetchrow(
        """
        select (select count(*) from account_snapshot where ig_user_id = $1) as profiles,
               (select count(*) from media where ig_user_id = $1 and not is_story) as media,
               (select count(*) from media where ig_user_id = $1 and is_story) as stories,
               (select count(*) from media_metric mm join media m using (media_id)
                 where m.ig_user_id = $1 and m.is_story) as story_metrics,
               (select count(*) from media_metric mm join media m using (media_id)
                 where m.ig_user_id = $1 and not m.is_story) as media_metrics,
               (select count(*) from account_metric where ig_user_id = $1) as account_metrics
        """,
        ig.ig_user_id,
    )
    assert counts["profiles"] == 1
    assert counts["media"] == 6
    assert counts["stories"] >= 1
    assert counts["story_metrics"] > 0
    assert counts["media_metrics"] > 0
    assert counts["account_metrics"] > 0
    # its own metric set: nothing Facebook-Login-only was asked of the instagram host
    asked = " ".join(r.path for r in mine)
    assert "total_" not in asked


async def test_instagram_login_token_renewed_kept_used_after_restart_and_parked_on_failure(
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
    db_dsn: str,
    db_conn: asyncpg.Connection,
) -> None:
    sim = await sim_factory(
        accounts=1, instagram_login=frozenset({0}), media_per_account=2, stories_per_account=0
    )
    (acct,) = sim.world.accounts
    seed = acct.token
    (tmp_path / "ig.token").write_text(seed)
    body = f"""
[[accounts]]
name = "creator"
ig_user_id = "{acct.ig_user_id}"
login = "instagram"
token_file = "{tmp_path / "ig.token"}"
"""
    settings = write(tmp_path, sim, db_dsn, body)
    with structlog.testing.capture_logs() as logs:
        rc, summary = await run_once(settings, fake_clock)
    assert rc == 0, summary
    renewed = acct.token
    assert renewed != seed
    assert "token_refreshed" in [e["event"] for e in logs]
    assert seed not in repr(logs)
    assert renewed not in repr(logs)
    # every call after the refresh carried the new token (the simulator refuses the seed now)
    refresh_at = next(
        i for i, r in enumerate(sim.stats.requests) if r.kind == "refresh_access_token"
    )
    assert not [r for r in list(sim.stats.requests)[refresh_at:] if str(r.error).startswith("190")]
    assert sum(r.status == 200 for r in list(sim.stats.requests)[refresh_at:]) > 5
    kept = tmp_path / "state" / "tokens" / f"{acct.ig_user_id}.json"
    assert renewed in kept.read_text()
    assert seed not in kept.read_text()
    assert tokens.fingerprint(seed) in kept.read_text()
    # a restart, the config unchanged: the kept token is used, and not renewed again yet
    fake_clock.advance(3600)
    before = len(sim.stats.requests)
    rc, summary = await run_once(settings, fake_clock)
    assert rc == 0, summary
    after = list(sim.stats.requests)[before:]
    assert not [r for r in after if str(r.error).startswith("190")]
    assert after
    assert not any(r.kind == "refresh_access_token" for r in after)
    assert acct.token == renewed
    # inside the refresh window the renewal fails; near the expiry the account is parked, while
    # its token still works
    sim.world.set_refresh_fails(acct.ig_user_id)
    fake_clock.advance((timedelta(days=59, hours=12) - timedelta(hours=1)).total_seconds())
    assert acct.token_expires_at is not None
    assert fake_clock.now() < acct.token_expires_at
    rc, summary = await run_once(settings, fake_clock)
    assert rc == 1
    status, reason = await db_conn.fetchrow(
        "select status, status_reason from account where ig_user_id = $1", acct.ig_user_id
    )
    assert status == "unhealthy"
    assert "could not be renewed" in reason
    assert renewed not in reason


async def test_day_buckets_in_the_accounts_time_zone_are_stored_as_returned(
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
    db_dsn: str,
    db_conn: asyncpg.Connection,
) -> None:
    # airbyte PR #74006: Meta cuts days in the account's zone; a UTC+ account's days end at
    # its midnight (15:00 UTC for Tokyo), not Pacific midnight
    sim = await sim_factory(
        accounts=1,
        day_time_zones={0: "Asia/Tokyo"},
        low_follower_fraction=0.0,
        media_per_account=1,
        stories_per_account=0,
    )
    (acct,) = sim.world.accounts
    (tmp_path / "t.token").write_text(acct.token)
    body = f"""
[[accounts]]
name = "tokyo"
ig_user_id = "{acct.ig_user_id}"
token_file = "{tmp_path / "t.token"}"
"""
    settings = write(tmp_path, sim, db_dsn, body)
    rc, summary = await run_once(settings, fake_clock)
    assert rc == 0, summary
    served = {
        v.end_time: v.value
        for v in sim.stats.served
        if v.metric == "follower_count" and v.end_time is not None
    }
    stored = {
        r["end_time"]: r["value"]
        for r in await db_conn.fetch(
            "select end_time, value from account_metric where metric = 'follower_count'"
        )
    }
    assert stored
    assert stored == {k: v for k, v in served.items() if k in stored}
    assert {t.hour for t in stored} == {15}
    # account_metric_daily reads them as Pacific days, as its column comment says
    comment = await db_conn.fetchval(
        "select col_description('account_metric_daily'::regclass, "
        "(select attnum from pg_attribute where attrelid = 'account_metric_daily'::regclass "
        "and attname = 'day'))"
    )
    assert "own time zone" in comment
