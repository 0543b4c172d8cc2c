"""No token, app secret or DSN password ever reaches the output, whatever happens in a run."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import urllib.parse
from pathlib import Path

import pytest

from collector import clock
from collector.simulator import server, world

from ..integration.conftest import write_config
from . import proc as proc_mod

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]
PASSWORD = "Pw-do-not-log-8c41f2"
APP_SECRET = "app-secret-do-not-log-77e1"


async def _collector(*args: str, stop_after: float | None = None) -> tuple[int, str]:
    proc = await proc_mod.spawn(*args)
    if stop_after is not None:
        # the daemon: let it collect for a moment, then stop it the way systemd does
        await asyncio.sleep(stop_after)
        proc.terminate()
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_a_full_run_never_prints_a_secret(tmp_path: Path, db_dsn: str) -> None:
    cfg = world.WorldConfig(
        seed=3,
        accounts=4,
        media_per_account=6,
        stories_per_account=2,
        app_secret=APP_SECRET,
        webhook_poll_interval=None,
    )
    parts = urllib.parse.urlsplit(db_dsn)
    # trust authentication ignores the password, so it can be a canary
    dsn = urllib.parse.urlunsplit(
        parts._replace(netloc=f"postgres:{PASSWORD}@{parts.hostname}:{parts.port}")
    )
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        sim.world.set_token_state(sim.world.accounts[0].ig_user_id, "expired")
        sim.world.set_token_state(sim.world.accounts[1].ig_user_id, "no_permission")
        sim.faults.script(r"/insights\?", ["http500", "nonjson", "truncated"])
        sim.faults.script(r"/media\?", ["reset", "reset", "html502"])
        config = write_config(
            tmp_path / "collector.toml",
            sim,
            dsn,
            sections={
                "log": {"level": "debug", "format": "json"},
                "graph": {"retry_base": 0.01, "retry_max": 0.05},
                "schedule": {"account_insights_backfill_days": 2},
            },
        )
        # a literal token too: the warning about it must not quote it
        literal = config.read_text().replace(
            f'token_file = "{tmp_path}/{sim.world.accounts[3].username}.token"',
            f'token = "{sim.world.accounts[3].token}"',
        )
        config.write_text(literal)
        outputs = [
            await _collector("check", "--config", str(config)),
            await _collector("run", "--once", "--config", str(config)),
            await _collector("run", "--once", "--config", str(config)),
            await _collector("run", "--config", str(config), stop_after=4),
        ]
        bad = tmp_path / "bad.toml"
        bad.write_text(literal.replace('api_version = "v25.0"', 'api_version = "25"'))
        outputs.append(await _collector("run", "--once", "--config", str(bad)))
        secrets = [a.token for a in sim.world.accounts] + [APP_SECRET, PASSWORD]
        secrets += [
            hmac.new(APP_SECRET.encode(), a.token.encode(), hashlib.sha256).hexdigest()
            for a in sim.world.accounts
        ]
    codes = [code for code, _ in outputs]
    assert codes[1] == 1  # two accounts fail: their errors were logged
    assert codes[3] == 0  # the daemon stopped cleanly on SIGTERM
    assert codes[4] == 2  # the broken config was reported
    text = "".join(out for _, out in outputs)
    assert "account_failed" in text
    assert "api_version" in text
    assert len(text) > 5000
    for secret in secrets:
        assert secret not in text
        assert urllib.parse.quote(secret) not in text


async def test_discovered_page_tokens_and_renewed_tokens_never_leak(
    tmp_path: Path, db_dsn: str
) -> None:
    cfg = world.WorldConfig(
        seed=5,
        accounts=4,
        media_per_account=3,
        stories_per_account=1,
        extra_pages=1,
        unreadable=frozenset({1}),
        instagram_login=frozenset({3}),
        app_secret=APP_SECRET,
        webhook_poll_interval=None,
    )
    async with server.running(cfg, clock=clock.SystemClock()) as sim:
        w = sim.world
        creator = w.accounts[3]
        seed = creator.token
        config = write_config(
            tmp_path / "collector.toml",
            sim,
            db_dsn,
            accounts=[creator],
            sections={
                "log": {"level": "debug", "format": "json"},
                "graph": {
                    "retry_base": 0.01,
                    "retry_max": 0.05,
                    "instagram_base_url": sim.instagram_base_url,
                },
                "schedule": {"account_insights_backfill_days": 2},
                "web": {"port": 0},
            },
        )
        (tmp_path / "agency.token").write_text(w.user_token)
        text = config.read_text().replace("[[accounts]]", '[[accounts]]\nlogin = "instagram"')
        text += f'\n[[sources]]\nname = "agency"\ntoken_file = "{tmp_path / "agency.token"}"\n'
        config.write_text(text)
        # a Page token dies between the listing and the collection: its errors get logged
        w.set_token_state(w.accounts[2].ig_user_id, "no_permission")
        outputs = [
            await _collector("check", "--config", str(config)),
            await _collector("run", "--once", "--config", str(config)),
            await _collector("run", "--once", "--config", str(config)),
            await _collector("run", "--config", str(config), stop_after=4),
        ]
        renewed = list(creator.issued_tokens)
        secrets = [a.token for a in w.accounts] + [w.user_token, seed, *renewed]
        secrets += [
            hmac.new(APP_SECRET.encode(), s.encode(), hashlib.sha256).hexdigest() for s in secrets
        ]
    assert renewed, "the Instagram Login token was renewed"
    text = "".join(out for _, out in outputs)
    assert "token_refreshed" in text
    assert "account_skipped" in text
    assert len(text) > 3000
    for secret in secrets:
        assert secret not in text
        assert urllib.parse.quote(secret) not in text
    # nor in the database, anywhere
    import asyncpg

    conn = await asyncpg.connect(db_dsn)
    try:
        tables = await conn.fetch("select tablename from pg_tables where schemaname = 'public'")
        dump = []
        for row in tables:
            dump += [r[0] for r in await conn.fetch(f'select t::text from "{row["tablename"]}" t')]
    finally:
        await conn.close()
    stored = "\n".join(dump)
    assert creator.ig_user_id in stored
    for secret in secrets:
        assert secret not in stored
    # the renewed token lives in the 0600 file of the state directory, and only there
    kept = (tmp_path / "state" / "tokens" / f"{creator.ig_user_id}.json").read_text()
    assert renewed[-1] in kept
    assert seed not in kept
