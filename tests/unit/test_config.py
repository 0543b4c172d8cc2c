"""The configuration loader: TOML + environment + secrets, and the errors it reports."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

from collector import config, errors, models

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "collector.example.toml"

TOKEN = "EAAGtokenvalue0123456789"
ACCOUNT = f"""
[[accounts]]
name = "acme"
ig_user_id = "17841400000000001"
token = "{TOKEN}"
"""


def write(tmp_path: Path, text: str, name: str = "collector.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> config.Settings:
    return config.load(write(tmp_path, text), environ=environ or {})


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(errors.ConfigError) as info:
        load(tmp_path, text, environ)
    return str(info.value)


def account(name: str = "acme", ig_user_id: str = '"1784"', source: str = "") -> str:
    source = source or f'token = "{TOKEN}"'
    return f"\n[[accounts]]\nname = {json.dumps(name)}\nig_user_id = {ig_user_id}\n{source}\n"


# --------------------------------------------------------------------------- sources


def test_no_file_means_defaults_and_environment() -> None:
    settings = config.load(environ={})
    assert settings.source_path is None
    assert settings.accounts == ()
    assert settings.warnings == ()
    assert settings.database.dsn is None
    assert settings.database.resolved_dsn() is None
    assert settings.database.pool_min_size == 1
    assert settings.database.pool_max_size == 10
    assert settings.database.connect_timeout == timedelta(seconds=10)
    assert settings.graph.base_url == "https://graph.facebook.com"
    assert settings.graph.api_version == "v25.0"
    assert settings.graph.app_secret is None
    assert settings.graph.max_retries == 4
    assert settings.limits.max_in_flight == 8
    assert settings.limits.usage_high_water == 80
    assert settings.limits.app_backoff_max == timedelta(minutes=15)
    assert settings.schedule.media_insights_max_age == timedelta(days=730)
    assert [(t.max_age.days, t.every) for t in settings.schedule.media_tiers] == [
        (2, timedelta(hours=1)),
        (14, timedelta(hours=6)),
        (90, timedelta(days=1)),
        (730, timedelta(days=7)),
    ]
    assert settings.schedule.story_final_lead == timedelta(minutes=25)
    assert settings.state.directory == Path("/var/lib/collector")
    assert settings.state.spool_max_bytes == 256 * 1024 * 1024
    assert settings.web.port == 9108
    assert settings.web.webhook_max_body == 1024 * 1024
    assert settings.log.level == "info"
    assert settings.log.format == "auto"
    assert settings.shutdown.drain_timeout == timedelta(seconds=20)


def test_path_from_collector_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_in_flight = 3\n" + ACCOUNT)
    settings = config.load(environ={"COLLECTOR_CONFIG": str(path)})
    assert settings.source_path == path
    assert settings.limits.max_in_flight == 3
    assert settings.accounts[0].name == "acme"


def test_explicit_path_wins_over_collector_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_in_flight = 3\n")
    other = str(tmp_path / "absent.toml")
    assert config.load(path, environ={"COLLECTOR_CONFIG": other}).limits.max_in_flight == 3


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"absent\.toml does not exist.*--config"):
        config.load(tmp_path / "absent.toml", environ={})


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_in_flight = 3\nthis is not toml\n")
    with pytest.raises(errors.ConfigError) as info:
        config.load(path, environ={})
    assert str(path) in str(info.value)
    assert "invalid TOML" in str(info.value)
    assert "line 3" in str(info.value)


def test_environment_overrides_file(tmp_path: Path) -> None:
    environ = {
        "COLLECTOR_DATABASE__DSN": "postgresql://collector:pw-from-env@db:5432/collector",
        "COLLECTOR_LIMITS__MAX_IN_FLIGHT": "4",
        "COLLECTOR_GRAPH__API_VERSION": "v24.0",
        "collector_schedule__profile_every": "2h",
        "COLLECTOR_WEB__ENABLED": "false",
        "COLLECTOR_LOG__LEVEL": "DEBUG",
        "COLLECTOR_SHUTDOWN__DRAIN_TIMEOUT": "",  # empty: as if unset
    }
    settings = load(tmp_path, "[limits]\nmax_in_flight = 3\nper_account_in_flight = 2\n", environ)
    assert settings.limits.max_in_flight == 4
    assert settings.limits.per_account_in_flight == 2  # the file's other keys stay
    assert settings.graph.api_version == "v24.0"
    assert settings.schedule.profile_every == timedelta(hours=2)
    assert settings.web.enabled is False
    assert settings.log.level == "debug"
    assert settings.shutdown.drain_timeout == timedelta(seconds=20)
    assert settings.database.resolved_dsn() == environ["COLLECTOR_DATABASE__DSN"]
    assert settings.database.dsn_source == "the configuration (literal value)"


def test_environment_json_for_lists() -> None:
    tiers = '[{"max_age": "1d", "every": "30m"}, {"max_age": "10d", "every": "1d"}]'
    settings = config.load(environ={"COLLECTOR_SCHEDULE__MEDIA_TIERS": tiers})
    assert [t.every for t in settings.schedule.media_tiers] == [
        timedelta(minutes=30),
        timedelta(days=1),
    ]


def test_invalid_environment_override_names_the_variable(tmp_path: Path) -> None:
    message = problems(
        tmp_path,
        "[limits]\nmax_in_flight = 3\n",
        {"COLLECTOR_LIMITS__MAX_IN_FLIGHT": "many", "COLLECTOR_LIMITS__MAX_INFLIGHT": "2"},
    )
    assert "limits.max_in_flight: must be a valid integer" in message
    assert "got 'many' (environment variable COLLECTOR_LIMITS__MAX_IN_FLIGHT)" in message
    assert "limits.max_inflight: unknown key: did you mean 'max_in_flight'?" in message
    assert "(environment variable COLLECTOR_LIMITS__MAX_INFLIGHT)" in message


def test_invalid_json_in_environment() -> None:
    with pytest.raises(errors.ConfigError, match="must be JSON"):
        config.load(environ={"COLLECTOR_SCHEDULE__MEDIA_TIERS": "[{not json"})


def test_load_reads_only_the_given_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_LIMITS__MAX_IN_FLIGHT", "999")
    monkeypatch.setenv("STATE_DIRECTORY", "/elsewhere")
    settings = config.load(environ={})
    assert settings.limits.max_in_flight == 8
    assert settings.state.directory == Path("/var/lib/collector")


def test_state_directory_from_systemd(tmp_path: Path) -> None:
    environ = {"STATE_DIRECTORY": "/var/lib/collector-a:/var/lib/other"}
    assert config.load(environ=environ).state.directory == Path("/var/lib/collector-a")
    settings = load(tmp_path, '[state]\ndirectory = "/srv/state"\n', environ)
    assert settings.state.directory == Path("/srv/state")
    both = {**environ, "COLLECTOR_STATE__DIRECTORY": "/from/env"}
    assert config.load(environ=both).state.directory == Path("/from/env")


# --------------------------------------------------------------------------- durations and sizes


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("30", timedelta(seconds=30)),
        ("2.5", timedelta(seconds=2.5)),
        ('"90s"', timedelta(seconds=90)),
        ('"10m"', timedelta(minutes=10)),
        ('"6h"', timedelta(hours=6)),
        ('"1d"', timedelta(days=1)),
        ('"1h30m"', timedelta(hours=1, minutes=30)),
        ('"300d"', timedelta(days=300)),
        ('"1d12h"', timedelta(days=1, hours=12)),
        ('"45"', timedelta(seconds=45)),
    ],
)
def test_durations(tmp_path: Path, given: str, expected: timedelta) -> None:
    settings = load(tmp_path, f"[schedule]\nprofile_every = {given}\n")
    assert settings.schedule.profile_every == expected


@pytest.mark.parametrize(
    "given",
    ["0", "-5", '"soon"', '"10 minutes"', '"1x"', '""', "true", '"0s"', "1e300", "nan", '"9e99d"'],
)
def test_bad_durations(tmp_path: Path, given: str) -> None:
    message = problems(tmp_path, f"[shutdown]\n\ndrain_timeout = {given}\n")
    assert "shutdown.drain_timeout: must be a positive duration such as" in message
    assert '"1h30m"' in message
    assert "(collector.toml line 3)" in message


def test_duration_round_trip() -> None:
    for text in ("90s", "10m", "1h30m", "7d", "1d6h", "1.5s"):
        assert config.format_duration(config.parse_duration(text)) in (text, "1m30s")


def test_sizes(tmp_path: Path) -> None:
    settings = load(tmp_path, '[state]\nspool_max_bytes = "1GiB"\n[web]\nwebhook_max_body = 2048\n')
    assert settings.state.spool_max_bytes == 1024**3
    assert settings.web.webhook_max_body == 2048
    message = problems(tmp_path, '[state]\nspool_max_bytes = "lots"\n')
    assert "state.spool_max_bytes:" in message


# --------------------------------------------------------------------------- accounts and tokens


def test_literal_token_works_with_a_warning(tmp_path: Path) -> None:
    settings = load(tmp_path, account("first", '"1"', 'token_env = "T"') + ACCOUNT, {"T": TOKEN})
    acme = settings.accounts[1]
    assert acme.token.get_secret_value() == TOKEN
    assert acme.token_source == "the configuration (literal value)"
    assert settings.warnings == (
        "accounts[1] (acme): the token is written in the config file; "
        "prefer token_file, token_env or token_credential",
    )


def test_token_file_is_stripped_and_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "acme").write_text(f"\n  {TOKEN}\n")
    settings = load(tmp_path, account(source='token_file = "tokens/acme"'))
    acme = settings.accounts[0]
    assert acme.token.get_secret_value() == TOKEN
    assert acme.token_source == f"file {tmp_path / 'tokens' / 'acme'}"
    assert acme.token_path == tmp_path / "tokens" / "acme"
    assert settings.warnings == ()


def test_token_env(tmp_path: Path) -> None:
    settings = load(tmp_path, account(source='token_env = "ACME_TOKEN"'), {"ACME_TOKEN": TOKEN})
    assert settings.accounts[0].token.get_secret_value() == TOKEN
    assert settings.accounts[0].token_source == "environment variable ACME_TOKEN"
    assert settings.accounts[0].token_path is None


def test_token_credential(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "acme").write_text(TOKEN + "\n")
    settings = load(
        tmp_path,
        account(source='token_credential = "acme"'),
        {"CREDENTIALS_DIRECTORY": str(credentials)},
    )
    acme = settings.accounts[0]
    assert acme.token.get_secret_value() == TOKEN
    assert acme.token_source == f"credential acme ({credentials / 'acme'})"
    assert acme.token_path == credentials / "acme"


@pytest.mark.parametrize(
    ("source", "environ", "expected"),
    [
        (
            'token_file = "/nonexistent/acme"',
            {},
            "accounts[0].token_file: file /nonexistent/acme does not exist: create it holding "
            "the access token, or fix the path (collector.toml line 5)",
        ),
        (
            'token_file = "empty"',
            {},
            "accounts[0].token_file: file {tmp}/empty is empty: it must hold the access token",
        ),
        (
            'token_file = "."',
            {},
            "accounts[0].token_file: {tmp} is a directory",
        ),
        (
            'token_env = "ACME_TOKEN"',
            {},
            "accounts[0].token_env: environment variable ACME_TOKEN is not set: export it with "
            "the access token, or use token_file (collector.toml line 5)",
        ),
        (
            'token_env = "ACME_TOKEN"',
            {"ACME_TOKEN": "  "},
            "accounts[0].token_env: environment variable ACME_TOKEN is empty",
        ),
        (
            'token_env = "not a name"',
            {},
            "accounts[0].token_env: must be the name of an environment variable",
        ),
        (
            'token_credential = "acme"',
            {},
            "accounts[0].token_credential: $CREDENTIALS_DIRECTORY is not set, so credential "
            "'acme' cannot be found: systemd sets it for LoadCredential=; outside systemd use "
            "token_file (collector.toml line 5)",
        ),
        (
            'token_credential = "../acme"',
            {"CREDENTIALS_DIRECTORY": "/run/credentials/collector.service"},
            "accounts[0].token_credential: must be a file name inside $CREDENTIALS_DIRECTORY",
        ),
        (
            'token_credential = "absent"',
            {"CREDENTIALS_DIRECTORY": "/run/credentials/none"},
            "accounts[0].token_credential: file /run/credentials/none/absent does not exist",
        ),
        (
            "",
            {},
            "accounts[0]: no access token: set one of token_file, token_env, token_credential "
            "(or token) (collector.toml line 2)",
        ),
        (
            'token_env = "A"\ntoken_file = "b"',
            {"A": TOKEN},
            "accounts[0].token_env: token_file and token_env are both set: keep exactly one "
            "source for the access token (collector.toml line 5)",
        ),
        (
            'token = ""',
            {},
            "accounts[0].token: token is empty: it must hold the access token",
        ),
    ],
)
def test_token_errors(tmp_path: Path, source: str, environ: dict[str, str], expected: str) -> None:
    (tmp_path / "empty").write_text("\n")
    text = f'\n[[accounts]]\nname = "acme"\nig_user_id = "1784"\n{source}\n'
    message = problems(tmp_path, text, environ)
    assert expected.format(tmp=tmp_path) in message
    assert str(tmp_path / "collector.toml") in message.splitlines()[0]


def test_ig_user_id_as_integer_or_string(tmp_path: Path) -> None:
    settings = load(
        tmp_path, account("a", "17841400000000001") + account("b", '"17841400000000002"')
    )
    assert [a.ig_user_id for a in settings.accounts] == ["17841400000000001", "17841400000000002"]
    assert settings.accounts[0].row() == models.AccountRow(
        ig_user_id=models.IgUserId("17841400000000001"), name="a", enabled=True
    )


def test_bad_account_fields_with_line_numbers(tmp_path: Path) -> None:
    text = (
        account("ok", '"1"')
        + account("ok2", '"2"')
        + '\n[[accounts]]\nname = "bad name!"\nig_user_id = "abc"\nenabled = "maybe"\n'
        + f'token = "{TOKEN}"\n'
    )
    message = problems(tmp_path, text)
    assert message.splitlines()[0] == (
        f"invalid configuration in {tmp_path / 'collector.toml'}: 3 problems"
    )
    assert (
        "accounts[2].name: must be 1-64 characters among letters, digits, '_', '.' and '-', "
        "got 'bad name!' (collector.toml line 13)"
    ) in message
    assert (
        "accounts[2].ig_user_id: must be the numeric Instagram user id (digits only, e.g. "
        "'17841400000000000'), got 'abc' (collector.toml line 14)"
    ) in message
    assert "accounts[2].enabled: must be a valid boolean" in message
    assert TOKEN not in message


def test_missing_required_account_keys(tmp_path: Path) -> None:
    message = problems(tmp_path, f'[[accounts]]\ntoken = "{TOKEN}"\n')
    assert "accounts[0].name: required key is missing: add name = …" in message
    assert "accounts[0].ig_user_id: required key is missing" in message
    assert "(collector.toml line 1)" in message


def test_duplicate_names_and_ids_name_both_indices(tmp_path: Path) -> None:
    text = account("acme", '"1"') + account("other", '"2"') + account("acme", "2")
    message = problems(tmp_path, text)
    assert (
        "accounts[2].name: 'acme' is also the name of accounts[0]: each account needs its own "
        "name (collector.toml line 13)"
    ) in message
    assert "accounts[2].ig_user_id: '2' is also the ig_user_id of accounts[1]" in message
    assert "(collector.toml line 14)" in message


def test_enabled_accounts(tmp_path: Path) -> None:
    text = account("a", '"1"') + "enabled = false\n" + account("b", '"2"')
    settings = load(tmp_path, text)
    assert [a.name for a in settings.accounts] == ["a", "b"]
    assert [a.name for a in settings.enabled_accounts()] == ["b"]


def test_metric_overrides(tmp_path: Path) -> None:
    text = ACCOUNT + '[accounts.metrics]\nstory = ["reach", "views"]\nreels = []\n'
    acme = load(tmp_path, text).accounts[0]
    assert acme.metrics == {
        models.ObjectKind.STORY: ("reach", "views"),
        models.ObjectKind.REELS: (),
    }


def test_bad_metric_overrides(tmp_path: Path) -> None:
    text = ACCOUNT + '[accounts.metrics]\nstories = ["reach"]\nfeed_image = ["Reach", 3]\n'
    message = problems(tmp_path, text)
    assert "accounts[0].metrics.stories (key): must be 'account', 'feed_image'" in message
    assert "accounts[0].metrics.feed_image[0]: must be a Graph API metric name" in message
    assert "got 'Reach'" in message
    assert "accounts[0].metrics.feed_image[1]: must be a valid string" in message
    assert "(collector.toml line 8)" in message


# --------------------------------------------------------------------------- unknown keys


def test_unknown_keys_everywhere(tmp_path: Path) -> None:
    text = (
        'colour = "blue"\n'
        "[databse]\nx = 1\n"
        '[graph]\napi_verison = "v25.0"\n'
        f'[[accounts]]\nname = "a"\nig_user_id = "1"\ntoken = "{TOKEN}"\ntokenfile = "x"\n'
        '[[schedule.media_tiers]]\nmax_age = "1d"\nevery = "1h"\noften = true\n'
    )
    message = problems(tmp_path, text)
    assert "colour: unknown key: did you mean 'cluster'? valid keys here are database" in message
    assert "(collector.toml line 1)" in message
    assert "databse: unknown key: did you mean 'database'?" in message
    assert "(collector.toml line 2)" in message
    assert "graph.api_verison: unknown key: did you mean 'api_version'?" in message
    assert "(collector.toml line 5)" in message
    assert "accounts[0].tokenfile: unknown key: did you mean 'token_file'?" in message
    assert "(collector.toml line 10)" in message
    assert (
        "schedule.media_tiers[0].often: unknown key: valid keys here are max_age, every" in message
    )
    assert "(collector.toml line 14)" in message
    assert "'x'" not in message  # the values of unknown keys are not echoed: they may be secrets


def test_settings_metadata_are_not_keys(tmp_path: Path) -> None:
    message = problems(tmp_path, 'warnings = ["x"]\nsource_path = "/x"\n')
    assert "warnings: unknown key" in message
    assert "source_path: unknown key" in message


# --------------------------------------------------------------------------- sections


def test_database_dsn_sources(tmp_path: Path) -> None:
    dsn = "postgresql://collector:s3cret-pw@db.example:5432/collector?sslmode=require"
    (tmp_path / "dsn").write_text(dsn + "\n")
    settings = load(tmp_path, '[database]\ndsn_file = "dsn"\n')
    assert settings.database.resolved_dsn() == dsn
    assert settings.database.dsn_source == f"file {tmp_path / 'dsn'}"
    assert settings.database.dsn_for_display() == (
        "postgresql://collector:***@db.example:5432/collector?sslmode=require"
    )
    assert "s3cret-pw" not in repr(settings)
    assert "s3cret-pw" not in str(settings.database)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "dsn").write_text(dsn)
    settings = load(
        tmp_path, '[database]\ndsn_credential = "dsn"\n', {"CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert settings.database.resolved_dsn() == dsn
    assert config.load(environ={}).database.dsn_for_display() == "(embedded PostgreSQL)"


def test_mask_dsn() -> None:
    assert config.mask_dsn("postgresql://u:p@h/d") == "postgresql://u:***@h/d"
    assert config.mask_dsn("postgresql://u@h/d") == "postgresql://u@h/d"
    assert (
        config.mask_dsn("postgres://h/d?user=u&password=x") == "postgres://h/d?user=u&password=***"
    )


def test_database_errors(tmp_path: Path) -> None:
    dsn = "postgresql://collector:s3cret-pw@db/collector"
    message = problems(
        tmp_path, f'[database]\ndsn = "{dsn}"\ndsn_file = "dsn"\npool_min_size = 0\n'
    )
    assert "database.pool_min_size: must be greater than or equal to 1, got 0" in message
    message = problems(tmp_path, f'[database]\ndsn = "{dsn}"\ndsn_file = "dsn"\n')
    assert "database.dsn_file: dsn and dsn_file are both set: keep exactly one source" in message
    assert "s3cret-pw" not in message
    message = problems(tmp_path, "[database]\npool_min_size = 5\npool_max_size = 2\n")
    assert (
        "database.pool_max_size: must be at least pool_min_size (5), got 2 (collector.toml line 3)"
    ) in message
    message = problems(tmp_path, '[database]\ndsn = "mysql://root:s3cret-pw@db/x"\n')
    assert "database.dsn: must be a PostgreSQL URL such as postgresql://" in message
    assert "s3cret-pw" not in message
    message = problems(tmp_path, "[database]\ndsn = 12345678\n")
    assert "database.dsn: must be a valid string" in message
    assert "12345678" not in message


def test_graph_section(tmp_path: Path) -> None:
    text = (
        '[graph]\nbase_url = "http://127.0.0.1:8080/"\napp_id = 12345\n'
        'app_secret_env = "APP_SECRET"\npage_size = 100\nmax_retries = 0\n'
    )
    settings = load(tmp_path, text, {"APP_SECRET": "app-secret-value"})
    assert settings.graph.base_url == "http://127.0.0.1:8080"
    assert settings.graph.app_id == "12345"
    assert settings.graph.app_secret is not None
    assert settings.graph.app_secret.get_secret_value() == "app-secret-value"
    assert settings.graph.app_secret_source == "environment variable APP_SECRET"
    assert settings.warnings == ()


def test_literal_app_secret_warns(tmp_path: Path) -> None:
    settings = load(tmp_path, '[graph]\napp_secret = "app-secret-value"\n')
    assert settings.graph.app_secret is not None
    assert settings.warnings == (
        "graph.app_secret: the app secret is written in the config file; "
        "prefer app_secret_file, app_secret_env or app_secret_credential",
    )
    from_env = config.load(environ={"COLLECTOR_GRAPH__APP_SECRET": "app-secret-value"})
    assert from_env.warnings == ()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('base_url = "ftp://x"', "graph.base_url: must be an http(s) URL without a path"),
        ('base_url = "https://graph.facebook.com/v25.0"', "graph.base_url: must be an http(s)"),
        ('api_version = "25.0"', "graph.api_version: must be a Graph API version such as 'v25.0'"),
        ('api_version = "v25.1"', "got 'v25.1'"),
        ('app_id = "abc"', "graph.app_id: must be the numeric Meta app id"),
        ("max_retries = 11", "graph.max_retries: must be less than or equal to 10, got 11"),
        ("page_size = 0", "graph.page_size: must be greater than or equal to 1"),
        ('retry_base = "1m"\nretry_max = "10s"', "graph.retry_max: must be at least retry_base"),
        (
            'app_secret = "app-secret-value"\napp_secret_file = "x"',
            "graph.app_secret_file: app_secret and app_secret_file are both set",
        ),
    ],
)
def test_graph_errors(tmp_path: Path, line: str, expected: str) -> None:
    message = problems(tmp_path, f"[graph]\n{line}\n")
    assert expected in message
    assert "app-secret-value" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[limits]\nmax_in_flight = 0", "limits.max_in_flight: must be greater than or equal to 1"),
        ("[limits]\nmax_in_flight = 1001", "limits.max_in_flight: must be less than or equal"),
        ("[limits]\nper_account_in_flight = 11", "limits.per_account_in_flight: must be less"),
        ("[limits]\nusage_high_water = 0", "limits.usage_high_water: must be greater than"),
        (
            "[limits]\nusage_high_water = 90\nusage_pause = 85",
            "limits.usage_pause: must be at least usage_high_water (90), got 85",
        ),
        (
            '[schedule]\nmedia_tiers = [{max_age = "2d", every = "1h"}, '
            '{max_age = "1d", every = "1d"}]',
            "schedule.media_tiers[1].max_age: must be greater than media_tiers[0].max_age (2d)",
        ),
        ("[schedule]\nmedia_tiers = []", "schedule.media_tiers: must list at least one tier"),
        (
            '[schedule]\ndemographics_timeframe = "last_14_days"',
            "schedule.demographics_timeframe: must be 'this_week' or 'this_month', "
            "got 'last_14_days'",
        ),
        ("[schedule]\naccount_insights_backfill_days = 91", "account_insights_backfill_days"),
        (
            '[schedule]\nstory_final_lead = "1d"',
            "schedule.story_final_lead: must be shorter than a story's lifetime (1d), "
            "e.g. '25m', got 1d",
        ),
        # the example fits the lifetime: it never suggests the value it rejects
        (
            '[schedule]\nstory_final_lead = "25m"\nstory_lifetime = "10m"',
            "schedule.story_final_lead: must be shorter than a story's lifetime (10m), "
            "e.g. '2m30s', got 25m",
        ),
        ("[web]\nport = 70000", "web.port: must be less than or equal to 65535, got 70000"),
        ('[web]\nwebhook_verify_token_env = "WVT"', "environment variable WVT is not set"),
        ('[log]\nlevel = "verbose"', "log.level: must be 'debug', 'info', 'warning' or 'error'"),
        ('[log]\nformat = "xml"', "log.format: must be 'auto', 'json' or 'console', got 'xml'"),
        ("database = 5", "database: must be a valid dictionary or instance of DatabaseSettings"),
    ],
)
def test_section_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problems(tmp_path, text + "\n")


def test_webhook_verify_token(tmp_path: Path) -> None:
    (tmp_path / "wvt").write_text("verify-me-please\n")
    settings = load(tmp_path, '[web]\nwebhook_verify_token_file = "wvt"\nport = 0\n')
    assert settings.web.webhook_verify_token is not None
    assert settings.web.webhook_verify_token.get_secret_value() == "verify-me-please"
    assert settings.web.port == 0


def test_media_poll_interval() -> None:
    schedule = config.load(environ={}).schedule
    assert schedule.story_lifetime == timedelta(hours=24)
    assert schedule.media_poll_interval(timedelta(hours=3)) == timedelta(hours=1)
    assert schedule.media_poll_interval(timedelta(days=2)) == timedelta(hours=6)
    assert schedule.media_poll_interval(timedelta(days=100)) == timedelta(days=7)
    assert schedule.media_poll_interval(timedelta(days=800)) is None


# --------------------------------------------------------------------------- the whole object


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load(tmp_path, ACCOUNT)
    with pytest.raises(pydantic.ValidationError):
        settings.limits.max_in_flight = 3
    with pytest.raises(pydantic.ValidationError):
        settings.accounts[0].name = "x"
    with pytest.raises(pydantic.ValidationError):
        settings.accounts = ()


def test_all_problems_in_one_error(tmp_path: Path) -> None:
    text = '[limits]\nmax_in_flight = 0\n[web]\nport = -1\n[log]\nlevel = "loud"\n'
    message = problems(tmp_path, text)
    assert message.startswith(f"invalid configuration in {tmp_path / 'collector.toml'}: 3 problems")
    assert len(message.splitlines()) == 4


def test_no_secret_in_repr_errors_or_describe(tmp_path: Path) -> None:
    dsn = "postgresql://collector:db-password-1@db/collector"
    environ = {"COLLECTOR_DATABASE__DSN": dsn, "APP_SECRET": "app-secret-value"}
    text = ACCOUNT + '[graph]\napp_secret_env = "APP_SECRET"\n'
    settings = load(tmp_path, text, environ)
    shown = repr(settings) + str(settings) + json.dumps(config.describe(settings))
    for secret in (TOKEN, "db-password-1", "app-secret-value"):
        assert secret not in shown
    assert set(settings.secrets()) >= {TOKEN, dsn, "db-password-1", "app-secret-value"}
    bad = problems(tmp_path, text + "[limits]\nmax_in_flight = 0\n", environ)
    for secret in (TOKEN, "db-password-1", "app-secret-value"):
        assert secret not in bad


def test_describe(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text(TOKEN)
    settings = load(tmp_path, account(source='token_file = "tok"'))
    described = config.describe(settings)
    json.dumps(described)
    assert described["source_path"] == str(tmp_path / "collector.toml")
    assert described["accounts"][0]["token"] == "**********"
    assert described["accounts"][0]["token_source"] == f"file {tmp_path / 'tok'}"
    assert described["schedule"]["media_tiers"][0] == {"max_age": "2d", "every": "1h"}
    assert described["schedule"]["story_final_lead"] == "25m"
    assert described["database"]["dsn"] == "(embedded PostgreSQL)"
    assert described["graph"]["app_secret"] is None
    assert described["warnings"] == []


def test_account_built_directly() -> None:
    acme = config.Account(name="acme", ig_user_id="1", token=pydantic.SecretStr(TOKEN))
    assert acme.token.get_secret_value() == TOKEN
    settings = config.Settings(accounts=(acme,))
    assert settings.enabled_accounts() == (acme,)


# --------------------------------------------------------------------------- the example file


def test_example_loads_and_documents_the_defaults() -> None:
    example = config.load(EXAMPLE, environ={})
    defaults = config.load(environ={})
    assert example.model_dump() == defaults.model_dump()
    assert example.warnings == ()


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    sections: dict[str, type[pydantic.BaseModel]] = {
        "database": config.DatabaseSettings,
        "graph": config.GraphSettings,
        "limits": config.LimitsSettings,
        "schedule": config.ScheduleSettings,
        "state": config.StateSettings,
        "web": config.WebSettings,
        "log": config.LogSettings,
        "shutdown": config.ShutdownSettings,
        "retention": config.RetentionSettings,
        "cluster": config.ClusterSettings,
        "tokens": config.TokensSettings,
    }
    assert set(sections) | {"accounts", "sources", "allow_no_accounts"} == set(
        config.Settings.model_fields
    )
    assert re.search(r"^allow_no_accounts = false$", text.split("\n[", 1)[0], re.MULTILINE)
    for name, model in sections.items():
        body = text.split(f"\n[{name}]\n", 1)[1].split("\n[", 1)[0]
        for key in model.model_fields:
            if key.startswith("webhook_verify_token") or key in ("app_secret", "dsn"):
                # secret sources are described together once rather than each shown
                assert key.split("_")[0] in body
                continue
            assert re.search(rf"^#?{key} = ", body, re.MULTILINE), f"[{name}] {key}"
    for key in config.Account.model_fields:
        assert key in text.split("# ---- ", 1)[-1], key
    sources = text.split("# ---- ", 1)[-1].split("---- sources", 1)[1]
    for key in config.Source.model_fields:
        assert key in sources, key


def test_example_accounts_load_when_uncommented(tmp_path: Path) -> None:
    head, accounts = EXAMPLE.read_text().split("# Uncomment and edit:", 1)
    uncommented = re.sub(r"^#(?=[\[a-z])", "", accounts, flags=re.MULTILINE)
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "acme-shoes").write_text("token-acme-shoes\n")
    (tokens / "initech").write_text("token-initech\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "acme").write_text("token-acme\n")
    (creds / "agency.token").write_text("token-agency\n")
    text = head + uncommented.replace("/etc/collector/tokens", str(tokens))
    environ = {"GLOBEX_TOKEN": "token-globex", "CREDENTIALS_DIRECTORY": str(creds)}
    settings = load(tmp_path, text, environ)
    assert [(a.name, a.token.get_secret_value()) for a in settings.accounts] == [
        ("acme", "token-acme"),
        ("acme-shoes", "token-acme-shoes"),
        ("globex", "token-globex"),
        ("initech", "token-initech"),
    ]
    assert [a.name for a in settings.enabled_accounts()] == ["acme", "acme-shoes", "initech"]
    assert settings.accounts[3].login == "instagram"
    (agency,) = settings.sources
    assert (agency.name, agency.login, agency.token.get_secret_value()) == (
        "agency",
        "facebook",
        "token-agency",
    )
    assert agency.allow == ("acme*", "17841400000000001")
    assert agency.deny == ("acme-test*",)
    assert models.ObjectKind.STORY in settings.accounts[1].metrics
    assert settings.warnings == ()


# --------------------------------------------------------------------------- sources, logins, tokens


def source(name: str = "agency", extra: str = "") -> str:
    return f'\n[[sources]]\nname = {json.dumps(name)}\ntoken = "{TOKEN}"\n{extra}\n'


def test_a_source_as_the_issue_writes_it(tmp_path: Path) -> None:
    (tmp_path / "agency.token").write_text("EAAGagencytoken000\n")
    text = """
[[sources]]
name = "agency"
token_file = "agency.token"
login = "facebook"
allow = ["acme*", "17841400000000001"]
deny = ["acme-test*"]
every = "1d"
"""
    settings = load(tmp_path, text)
    (agency,) = settings.sources
    assert agency.token.get_secret_value() == "EAAGagencytoken000"
    assert agency.token_source == f"file {tmp_path / 'agency.token'}"
    assert agency.every == timedelta(days=1)
    assert "EAAGagencytoken000" in settings.secrets()
    assert config.describe(settings)["sources"][0]["token"] == "**********"
    assert settings.warnings == ()


def test_source_defaults_and_literal_token_warning(tmp_path: Path) -> None:
    settings = load(tmp_path, source())
    (agency,) = settings.sources
    assert (agency.login, agency.allow, agency.deny) == ("facebook", (), ())
    assert settings.warnings == (
        "sources[0] (agency): the token is written in the config file; "
        "prefer token_file, token_env or token_credential",
    )


def test_source_problems_name_the_field_and_the_fix(tmp_path: Path) -> None:
    text = (
        source("agency", 'login = "tiktok"')
        + source("agency", 'allow = ["acme corp"]')
        + '\n[[sources]]\nname = "bare"\n'
    )
    message = problems(tmp_path, text)
    assert "sources[0].login: must be 'facebook' or 'instagram', got 'tiktok'" in message
    assert "sources[1].allow[0]: each entry must be an Instagram username, a shell glob" in message
    assert "sources[2]: no access token: set one of token_file, token_env, token_credential" in (
        message
    )


def test_duplicate_source_names(tmp_path: Path) -> None:
    message = problems(tmp_path, source("agency") + source("agency"))
    assert "sources[1].name: 'agency' is also the name of sources[0]" in message


def test_instagram_login_account_refuses_facebook_only_metrics(tmp_path: Path) -> None:
    text = ACCOUNT + 'login = "instagram"\n[accounts.metrics]\nreels = ["reach", "total_views"]\n'
    message = problems(tmp_path, text)
    assert (
        "accounts[0].metrics.reels: total_views: only the Instagram API with Facebook Login "
        'serves it: remove it or set login = "facebook"'
    ) in message
    ok = load(tmp_path, ACCOUNT + 'login = "Instagram"\n')
    assert ok.accounts[0].login == "instagram"


def test_tokens_section_checks_its_order(tmp_path: Path) -> None:
    message = problems(tmp_path, '[tokens]\nrefresh_before = "2d"\npark_before = "3d"\n')
    assert "tokens.park_before: must be shorter than refresh_before (2d)" in message
    message = problems(tmp_path, '[tokens]\nrefresh_before = "60d"\n')
    assert "tokens.refresh_before: must be shorter than an Instagram Login token's 60-day" in (
        message
    )


def test_instagram_base_url_is_checked_like_base_url(tmp_path: Path) -> None:
    settings = load(tmp_path, '[graph]\ninstagram_base_url = "http://127.0.0.1:9/"\n')
    assert settings.graph.instagram_base_url == "http://127.0.0.1:9"
    message = problems(tmp_path, '[graph]\ninstagram_base_url = "graph.instagram.com/v25.0"\n')
    assert "graph.instagram_base_url: must be an http(s) URL without a path" in message


# --------------------------------------------------------------------------- bounds (issue 10)


def _duration_keys() -> list[tuple[str, str]]:
    """Every (section, key) whose value is a duration, walked from the models."""
    found = []
    for section, field in config.Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            continue
        for key, info in model.model_fields.items():
            if info.annotation is timedelta:
                found.append((section, key))
    return found


def test_every_duration_key_is_found() -> None:
    keys = _duration_keys()
    assert ("schedule", "profile_every") in keys
    assert ("shutdown", "drain_timeout") in keys
    assert len(keys) >= 20


@pytest.mark.parametrize(("section", "key"), _duration_keys())
def test_every_duration_has_an_upper_bound(tmp_path: Path, section: str, key: str) -> None:
    """Finding 9: "999999999d" was accepted and crashed `run` with an OverflowError."""
    message = problems(tmp_path, f'[{section}]\n{key} = "999999999d"\n')
    assert re.search(rf"  {section}\.{key}: must be at most \d+[dhms], got '999999999d'", message)
    assert "Overflow" not in message


def test_duration_bounds_name_the_limit(tmp_path: Path) -> None:
    message = problems(tmp_path, '[schedule]\nprofile_every = "999999999d"\n')
    assert "schedule.profile_every: must be at most 365d, got '999999999d'" in message
    tiers = '[schedule]\nmedia_tiers = [{max_age = "99999d", every = "400d"}]\n'
    message = problems(tmp_path, tiers)
    assert "schedule.media_tiers[0].max_age: must be at most 3650d, got '99999d'" in message
    assert "schedule.media_tiers[0].every: must be at most 365d, got '400d'" in message
    # the limit itself is fine
    assert load(tmp_path, '[schedule]\nprofile_every = "365d"\n').schedule.profile_every.days == 365


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[state]\nspool_max_bytes = "9PiB"', "state.spool_max_bytes: must be at most 1TiB"),
        ('[web]\nwebhook_max_body = "1GiB"', "web.webhook_max_body: must be at most 64MiB"),
        ("[database]\npool_max_size = 100000", "database.pool_max_size: must be less than or"),
        ("[database]\npool_min_size = 100000", "database.pool_min_size: must be less than or"),
        ("[web]\nmax_connections = 0", "web.max_connections: must be greater than or equal"),
        ('[web]\nheader_timeout = "2h"', "web.header_timeout: must be at most 1h"),
    ],
)
def test_size_and_count_bounds(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problems(tmp_path, text + "\n")


# --------------------------------------------------------------------------- secret files


def _load_within(seconds: float, path: Path, environ: dict[str, str]) -> str:
    """The ConfigError loading ``path`` raises, failing (not hanging) if it takes too long."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(config.load, path, environ=environ)
    try:
        future.result(seconds)
    except errors.ConfigError as exc:
        return str(exc)
    except concurrent.futures.TimeoutError:
        # today's code blocks in open(): give it a writer, so the thread (and pytest) can end
        for fifo in path.parent.glob("*.fifo"):
            with fifo.open("w"):
                pass
        pytest.fail(f"loading {path} blocked for more than {seconds}s")
    finally:
        pool.shutdown(wait=True)
    pytest.fail("the configuration was accepted")


def test_a_fifo_token_file_is_refused_without_blocking(tmp_path: Path) -> None:
    """Finding 9: a token_file that is a FIFO hung `check`."""
    os.mkfifo(tmp_path / "token.fifo")
    path = write(tmp_path, account(source='token_file = "token.fifo"'))
    message = _load_within(10, path, {})
    assert f"accounts[0].token_file: {tmp_path / 'token.fifo'} is a FIFO, not a regular file" in (
        message
    )


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b"x" * (64 * 1024 + 1)), "is larger than 64KiB"),
        (lambda p: p.write_bytes(b"\xff\xfe token"), "is not UTF-8 text"),
        (lambda p: p.write_text("two\nlines\n"), "holds more than one line"),
    ],
)
def test_secret_file_contents(tmp_path: Path, make: Any, expected: str) -> None:
    make(tmp_path / "secret")
    message = problems(tmp_path, f'[graph]\napp_secret_file = "secret"\n{ACCOUNT}')
    assert f"graph.app_secret_file: file {tmp_path / 'secret'} {expected}" in message


def test_device_and_odd_paths_are_refused(tmp_path: Path) -> None:
    message = problems(tmp_path, '[database]\ndsn_file = "/dev/zero"\n')
    assert "database.dsn_file: /dev/zero is a character device, not a regular file" in message
    message = problems(tmp_path, '[database]\ndsn_file = "~no-such-user-here/dsn"\n')
    assert "database.dsn_file: cannot expand '~no-such-user-here/dsn'" in message
    credentials = tmp_path / "creds"
    credentials.mkdir()
    os.mkfifo(credentials / "acme")
    message = _load_within(
        10,
        write(tmp_path, account(source='token_credential = "acme"')),
        {"CREDENTIALS_DIRECTORY": str(credentials)},
    )
    assert "is a FIFO, not a regular file" in message


def test_the_config_file_itself_must_be_a_bounded_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "collector.fifo")
    assert "is a FIFO, not a regular file" in _load_within(10, tmp_path / "collector.fifo", {})
    big = write(tmp_path, "# padding\n" * 1_700_000, "big.toml")
    with pytest.raises(errors.ConfigError, match="is larger than 16MiB"):
        config.load(big, environ={})


async def test_load_in_thread_gives_up_after_its_timeout(tmp_path: Path) -> None:
    path = write(tmp_path, ACCOUNT)
    settings = await config.load_in_thread(path, environ={}, within=30)
    assert settings.accounts[0].name == "acme"
    with pytest.raises(errors.ConfigError, match="invalid TOML"):
        await config.load_in_thread(write(tmp_path, "[[["), environ={}, within=30)
    release = threading.Event()

    def stuck(*args: Any, **kwargs: Any) -> config.Settings:
        release.wait(30)  # a file system that does not answer
        raise errors.ConfigError("late")

    with pytest.raises(errors.ConfigError, match=r"took more than 0\.2s"):
        await config.load_in_thread(path, environ={}, within=0.2, loader=stuck)
    release.set()


# --------------------------------------------------------------------------- no enabled account


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("", "no [[accounts]] table"),
        ("[limits]\nmax_in_flight = 2\n", "no [[accounts]] table"),
        (ACCOUNT + "enabled = false\n", "all 1 accounts are disabled"),
    ],
)
def test_no_enabled_account_is_a_problem(tmp_path: Path, text: str, found: str) -> None:
    """Finding 5: a config truncated to 0 bytes was taken for "collect nothing"."""
    settings = load(tmp_path, text)
    problem = config.no_accounts_problem(settings)
    assert problem is not None
    assert problem.startswith(f"{tmp_path / 'collector.toml'}: no enabled account ({found})")
    assert "allow_no_accounts = true" in problem


def test_no_accounts_allowed_when_the_file_says_so(tmp_path: Path) -> None:
    assert config.no_accounts_problem(load(tmp_path, "allow_no_accounts = true\n")) is None
    assert config.no_accounts_problem(load(tmp_path, ACCOUNT)) is None
    # a source produces accounts at run time: not "no accounts"
    assert config.no_accounts_problem(load(tmp_path, source())) is None
    settings = load(tmp_path, "", {"COLLECTOR_ALLOW_NO_ACCOUNTS": "true"})
    assert config.no_accounts_problem(settings) is None
    no_file = config.no_accounts_problem(config.load(environ={}))
    assert no_file is not None
    assert no_file.startswith("the configuration (no config file given): no enabled account")


def _key(tmp_path: Path, text: str | None = None, mode: int = 0o600) -> Path:
    path = tmp_path / "cluster.key"
    path.write_text(text if text is not None else os.urandom(32).hex() + "\n")
    path.chmod(mode)
    return path


def test_cluster_mode_with_instagram_login_needs_the_sealing_key(tmp_path: Path) -> None:
    creator = account("creator", source=f'token = "{TOKEN}"\nlogin = "instagram"')
    message = problems(tmp_path, "[cluster]\nenabled = true\n" + creator)
    assert "cluster.secret_file: cluster mode with Instagram Login accounts (creator) needs" in (
        message
    )
    assert "openssl rand -hex 32" in message
    # an Instagram Login source needs it too; Facebook Login alone does not (Page tokens are
    # asked for again, never stored); one process never does
    source = f'\n[[sources]]\nname = "solo"\nlogin = "instagram"\ntoken = "{TOKEN}"\n'
    assert "(sources.solo)" in problems(tmp_path, "[cluster]\nenabled = true\n" + source)
    assert load(tmp_path, "[cluster]\nenabled = true\n" + account()).cluster.key() is None
    assert load(tmp_path, creator).cluster.key() is None


def test_the_sealing_key_file_is_checked_and_never_shown(tmp_path: Path) -> None:
    creator = account("creator", source=f'token = "{TOKEN}"\nlogin = "instagram"')
    key = _key(tmp_path)
    text = f'[cluster]\nenabled = true\nsecret_file = "{key}"\n' + creator
    settings = load(tmp_path, text)
    secret = key.read_text().strip()
    assert settings.cluster.key() == bytes.fromhex(secret)
    assert secret in settings.secrets()  # the log redaction knows it
    assert secret not in repr(settings)
    assert secret not in json.dumps(config.describe(settings))
    key.chmod(0o640)
    assert (
        f"cluster.secret_file: file {key} may be read by other users (mode 0640): run chmod 600"
        in (problems(tmp_path, text))
    )
    _key(tmp_path, "not a key of 64 hex digits\n")
    message = problems(tmp_path, text)
    assert "must hold a 256-bit key as 64 hex digits: create it with" in message
    assert "not a key" not in message
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "cluster.key").write_text(secret)
    by_credential = load(
        tmp_path,
        '[cluster]\nenabled = true\nsecret_credential = "cluster.key"\n' + creator,
        {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")},
    )
    assert by_credential.cluster.key() == bytes.fromhex(secret)
