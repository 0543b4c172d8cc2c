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
    table = text.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == [
        "account",
        "found",
        "login",
        "token",
        "reads",
        "account",
        "scopes",
        "expiry",
    ]
    for acct, line in zip(sim.world.accounts, table[1:], strict=True):
        assert line.split()[:6] == [
            "ok",
            acct.username,
            "configured",
            "facebook",
            "valid",
            "yes",
        ]
        assert "3/3 needed" in line
        assert "2026-08-14 (60 days)" in line


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
    by_what = {line.split()[1]: line for line in lines if line.strip()}
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
    table = out.getvalue().split("\n\n", 1)[1].splitlines()[1:]
    rows = {line.split()[1]: line for line in table}
    # both tokens are valid: only reading the account tells
    assert rows[mistyped.username].split()[4] == "valid"
    for acct, uid in ((mistyped, "17841400000000001"), (borrowed, borrowed.ig_user_id)):
        line = rows[acct.username]
        assert line.startswith("FAIL"), line
        assert f"the token cannot read account {uid}" in line
        assert "mistyped ig_user_id or another account's token" in line
    assert rows[fine.username].startswith("ok")
    assert f"yes (@{fine.username})" in rows[fine.username]


async def test_check_table_for_a_source_and_an_instagram_login_account(
    sim_factory: Any, tmp_path: Path, db_dsn: str, fake_clock: clock.FakeClock
) -> None:
    sim = await sim_factory(
        accounts=4, extra_pages=1, unreadable=frozenset({1}), instagram_login=frozenset({3})
    )
    w = sim.world
    path = write_config(tmp_path / "c.toml", sim, db_dsn, accounts=[w.accounts[3]])
    text = (
        path.read_text().replace("[[accounts]]", '[[accounts]]\nlogin = "instagram"')
        + f"""
[[sources]]
name = "agency"
token = "{w.user_token}"
deny = ["sim_acct_3"]
"""
    )
    text = text.replace("[graph]\n", f'[graph]\ninstagram_base_url = "{sim.instagram_base_url}"\n')
    path.write_text(text)
    out = io.StringIO()
    code = await checks.run(config.load(path, environ={}), out=out, clock=fake_clock)
    report = out.getvalue()
    assert code == 0, report
    assert "ok    source agency" in report
    assert "facebook login: 1 account(s), 3 skipped" in report
    rows = {line.split()[1]: line for line in report.split("\n\n", 1)[1].splitlines()[1:]}
    assert set(rows) == {"sim_acct_1", "sim_acct_4"}
    assert rows["sim_acct_1"].split()[:6] == [
        "ok",
        "sim_acct_1",
        "agency",
        "facebook",
        "valid",
        "yes",
    ]
    creator = rows["sim_acct_4"].split()
    assert creator[:6] == ["ok", "sim_acct_4", "configured", "instagram", "valid", "yes"]
    assert "not reported by Instagram Login" in rows["sim_acct_4"]
    assert "until the first renewal: unknown" in rows["sim_acct_4"]
    # an account that cannot be collected makes check fail, saying why
    w.set_token_state(w.accounts[0].ig_user_id, "no_permission")
    w.set_token_state(w.accounts[3].ig_user_id, "invalid")
    out = io.StringIO()
    assert await checks.run(config.load(path, environ={}), out=out, clock=fake_clock) == 1
    rows = {line.split()[1]: line for line in out.getvalue().split("\n\n", 1)[1].splitlines()[1:]}
    assert rows["sim_acct_1"].startswith("FAIL")
    assert "missing scopes instagram_manage_insights" in rows["sim_acct_1"]
    assert rows["sim_acct_4"].split()[:5] == [
        "FAIL",
        "sim_acct_4",
        "configured",
        "instagram",
        "INVALID",
    ]
    assert w.user_token not in out.getvalue()
    assert w.accounts[0].token not in out.getvalue()
