"""Prometheus metrics: every method shows up in the text exposition, on a private registry."""

from __future__ import annotations

import prometheus_client
from prometheus_client import parser

import collector
from collector import telemetry


def samples(t: telemetry.Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition parsed back: (sample name, sorted labels) → value."""
    found = {}
    for family in parser.text_string_to_metric_families(t.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_content_type_is_the_prometheus_text_format() -> None:
    assert telemetry.CONTENT_TYPE.startswith("text/plain; version=")


def test_build_info() -> None:
    s = samples(telemetry.Telemetry())
    assert s[("collector_build_info", (("version", collector.__version__),))] == 1


def test_api_calls_match_the_graph_client_hook() -> None:
    t = telemetry.Telemetry()
    t.api_call("/{ig-user-id}/insights", "ok", 0.2)
    t.api_call("/{ig-user-id}/insights", "ok", 0.3)
    t.api_call("/{ig-user-id}/insights", "RateLimited", 0.1)
    t.api_retry("/{ig-user-id}/insights", "TransientError")
    s = samples(t)
    ok = (("endpoint", "/{ig-user-id}/insights"), ("outcome", "ok"))
    assert s[("collector_api_calls_total", ok)] == 2
    limited = (("endpoint", "/{ig-user-id}/insights"), ("outcome", "RateLimited"))
    assert s[("collector_api_calls_total", limited)] == 1
    endpoint = (("endpoint", "/{ig-user-id}/insights"),)
    assert s[("collector_api_call_duration_seconds_count", endpoint)] == 3
    assert abs(s[("collector_api_call_duration_seconds_sum", endpoint)] - 0.6) < 1e-9
    le = (("endpoint", "/{ig-user-id}/insights"), ("le", "0.25"))
    assert s[("collector_api_call_duration_seconds_bucket", le)] == 2
    retry = (("endpoint", "/{ig-user-id}/insights"), ("reason", "TransientError"))
    assert s[("collector_api_retries_total", retry)] == 1


def test_jobs_and_story_finals() -> None:
    t = telemetry.Telemetry()
    t.job_done("story_insights", "ok", lateness_s=3.0)
    t.job_done("story_insights", "ok", lateness_s=-1.0)  # early: counted as on time
    t.job_done("profile", "failed")
    t.story_final(True, lead_s=1200.0)
    t.story_final(False, None)
    s = samples(t)
    assert s[("collector_jobs_total", (("kind", "story_insights"), ("outcome", "ok")))] == 2
    assert s[("collector_jobs_total", (("kind", "profile"), ("outcome", "failed")))] == 1
    assert s[("collector_job_lateness_seconds_count", (("kind", "story_insights"),))] == 2
    assert s[("collector_job_lateness_seconds_sum", (("kind", "story_insights"),))] == 3.0
    assert ("collector_job_lateness_seconds_count", (("kind", "profile"),)) not in s
    assert s[("collector_story_finals_total", (("result", "taken"),))] == 1
    assert s[("collector_story_finals_total", (("result", "missed"),))] == 1
    assert s[("collector_story_final_lead_seconds_sum", ())] == 1200.0
    assert s[("collector_story_final_lead_seconds_bucket", (("le", "1200.0"),))] == 1


def test_story_finals_start_at_zero() -> None:
    s = samples(telemetry.Telemetry())
    # alert rules on rate(...missed) need the series before the first miss
    assert s[("collector_story_finals_total", (("result", "missed"),))] == 0
    assert s[("collector_accounts", (("status", "unhealthy"),))] == 0


def test_rows_and_webhooks() -> None:
    t = telemetry.Telemetry()
    t.rows_written("media_metric", 120)
    t.rows_written("media_metric", 0)
    t.rows_written("media", 4)
    t.webhook("accepted")
    t.webhook("bad_signature")
    t.webhook("bad_signature")
    s = samples(t)
    assert s[("collector_rows_written_total", (("table", "media_metric"),))] == 120
    assert s[("collector_rows_written_total", (("table", "media"),))] == 4
    assert s[("collector_webhook_deliveries_total", (("outcome", "bad_signature"),))] == 2
    assert s[("collector_webhook_deliveries_total", (("outcome", "accepted"),))] == 1


def test_usage_per_account_and_removal() -> None:
    t = telemetry.Telemetry()
    t.set_usage("acme", 42.5)
    t.set_usage("globex", 97)
    t.set_usage("globex", None)
    t.set_usage("never-seen", None)
    s = samples(t)
    assert s[("collector_usage_percent", (("account", "acme"),))] == 42.5
    assert ("collector_usage_percent", (("account", "globex"),)) not in s


def test_accounts_and_levels() -> None:
    t = telemetry.Telemetry()
    t.set_accounts({"ok": 10, "throttled": 2, "unhealthy": 1})
    t.set_gauges(
        jobs_due=7,
        jobs_overdue=1,
        spool_bytes=4096,
        spool_batches=3,
        database_up=False,
        loop_lag_s=0.012,
    )
    s = samples(t)
    assert s[("collector_accounts", (("status", "ok"),))] == 10
    assert s[("collector_accounts", (("status", "failing"),))] == 0
    assert s[("collector_accounts_throttled", ())] == 2
    assert s[("collector_accounts_unhealthy", ())] == 1
    assert s[("collector_jobs_due", ())] == 7
    assert s[("collector_jobs_overdue", ())] == 1
    assert s[("collector_spool_bytes", ())] == 4096
    assert s[("collector_spool_batches", ())] == 3
    assert s[("collector_database_up", ())] == 0
    assert s[("collector_loop_lag_seconds", ())] == 0.012
    # None leaves a gauge alone
    t.set_gauges(database_up=True)
    t.set_accounts({"ok": 11})
    s = samples(t)
    assert s[("collector_database_up", ())] == 1
    assert s[("collector_jobs_due", ())] == 7
    assert s[("collector_accounts_throttled", ())] == 0


def test_each_instance_has_its_own_registry() -> None:
    a, b = telemetry.Telemetry(), telemetry.Telemetry()
    a.rows_written("media", 5)
    assert ("collector_rows_written_total", (("table", "media"),)) not in samples(b)
    # and nothing lands in the process-wide registry
    assert prometheus_client.REGISTRY.get_sample_value("collector_rows_written_total") is None
