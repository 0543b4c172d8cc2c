"""``python -m collector check``: config, database, schema and tokens in one readable table."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

from collector import checks, clock, config

from .conftest import MakeSettings, write_config


async def test_check_passes_on_a_healthy_setup(
    sim_factory: Any, make_settings: MakeSettings, fake_clock: clock.FakeClock
) -> None:
    sim = await sim_factory(accounts=2)
    out = io.StringIO()
    code = await checks.run(make_settings(sim), out=out, clock=fake_clock)
    text = out.getvalue()
    assert code == 0, text
    assert "FAIL" not in text
    assert "schema" in text
    for acct in sim.world.accounts:
        assert f"token {acct.username}" in text
    assert "valid" in text


async def test_check_reports_each_problem(
    sim_factory: Any, tmp_path: Path, empty_db_dsn: str, fake_clock: clock.FakeClock
) -> None:
    sim = await sim_factory(accounts=3)
    expired, expiring, _ = sim.world.accounts
    sim.world.set_token_state(expired.ig_user_id, "expired")
    sim.world.set_token_expiry(expiring.ig_user_id, sim.world.now() + timedelta(days=2))
    path = write_config(tmp_path / "c.toml", sim, empty_db_dsn)
    out = io.StringIO()
    assert await checks.run(config.load(path, environ={}), out=out, clock=fake_clock) == 1
    lines = out.getvalue().splitlines()
    by_what = {line.split()[1]: line for line in lines}
    assert lines[0].startswith("ok")  # the config itself is fine
    assert by_what["schema"].startswith("FAIL")
    assert "python -m collector migrate" in by_what["schema"]
    bad = [line for line in lines if expired.username in line]
    assert bad[0].startswith("FAIL")
    soon = [line for line in lines if expiring.username in line]
    assert soon[0].startswith("FAIL")
    assert "expires within 7 days" in soon[0]


async def test_check_without_a_reachable_database(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(accounts=1)
    path = write_config(tmp_path / "c.toml", sim, "postgresql://postgres:hunter2pw@127.0.0.1:1/x")
    out = io.StringIO()
    assert await checks.run(config.load(path, environ={}), out=out) == 1
    text = out.getvalue()
    assert "FAIL  database" in text
    assert "hunter2pw" not in text


async def test_check_names_an_account_its_token_cannot_read(
    sim_factory: Any, tmp_path: Path, db_dsn: str, fake_clock: clock.FakeClock
) -> None:
    sim = await sim_factory(accounts=3)
    mistyped, borrowed, fine = sim.world.accounts
    path = write_config(tmp_path / "c.toml", sim, db_dsn)
    # one ig_user_id mistyped, one account given another account's token
    path.write_text(path.read_text().replace(mistyped.ig_user_id, "17841400000000001"))
    (tmp_path / f"{borrowed.username}.token").write_text(fine.token + "\n")
    out = io.StringIO()
    assert await checks.run(config.load(path, environ={}), out=out, clock=fake_clock) == 1
    lines = out.getvalue().splitlines()

    def line_of(what: str) -> str:
        found = [line for line in lines if line[6:].startswith(what + " ")]
        assert len(found) == 1, (what, lines)
        return found[0]

    # both tokens are valid: only reading the account tells
    assert line_of(f"token {mistyped.username}").startswith("ok")
    for acct, uid in ((mistyped, "17841400000000001"), (borrowed, borrowed.ig_user_id)):
        line = line_of(f"account {acct.username}")
        assert line.startswith("FAIL"), line
        assert f"the token cannot read account {uid}" in line
        assert "mistyped ig_user_id or another account's token" in line
    assert line_of(f"account {fine.username}").startswith("ok")
    assert f"@{fine.username}" in line_of(f"account {fine.username}")
