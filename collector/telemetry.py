"""Prometheus metrics: one :class:`Telemetry` per process, on its own registry.

Its own ``CollectorRegistry`` rather than prometheus_client's global one, so that two daemons in
one test process (or two tests) never see each other's counters. Every method is cheap and
synchronous: the daemon calls them from hooks on the hot path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import prometheus_client

import collector
from collector import models

#: the ``Content-Type`` of :meth:`Telemetry.render`
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

# Graph API calls take 50 ms to tens of seconds (timeouts); the default buckets stop at 10 s.
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# How late a job started: seconds when all is well, hours when an account was throttled.
_LATENESS_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
# How long before expiry a story's final snapshot was taken (the default lead is 25 min).
_LEAD_BUCKETS = (60, 300, 600, 900, 1200, 1500, 1800, 3600, 7200)

#: account statuses always exported, at 0 when no account has them
ACCOUNT_STATUSES = ("unknown", "ok", "unhealthy", "throttled", "failing", "disabled", "removed")


class Telemetry:
    """The collector's metrics and the small methods that move them."""

    def __init__(self, *, version: str = collector.__version__) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = prometheus_client.Info(
            "collector_build", "Version of the running collector.", registry=r
        )
        self.build_info.info({"version": version})
        self.api_calls = prometheus_client.Counter(
            "collector_api_calls",
            "Graph API calls by endpoint (ids replaced by placeholders) and outcome "
            "(ok, unreachable, malformed, http_error, or the error class).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.api_call_seconds = prometheus_client.Histogram(
            "collector_api_call_duration_seconds",
            "Duration of Graph API calls, by endpoint.",
            ["endpoint"],
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.api_retries = prometheus_client.Counter(
            "collector_api_retries",
            "Graph API calls retried after a transient failure, by endpoint and reason.",
            ["endpoint", "reason"],
            registry=r,
        )
        self.usage = prometheus_client.Gauge(
            "collector_usage_percent",
            "Highest usage percentage reported by the API for an account (0-100).",
            ["account"],
            registry=r,
        )
        self.token_lifetime = prometheus_client.Gauge(
            "collector_token_lifetime_seconds",
            "Seconds until the account's token expires (as debug_token, or the last renewal of "
            "an Instagram Login token, reported it); absent: the token does not expire.",
            ["account"],
            registry=r,
        )
        self.accounts = prometheus_client.Gauge(
            "collector_accounts", "Accounts by collector status.", ["status"], registry=r
        )
        self.accounts_throttled = prometheus_client.Gauge(
            "collector_accounts_throttled",
            "Accounts paused by a rate limit (they resume by themselves).",
            registry=r,
        )
        self.accounts_unhealthy = prometheus_client.Gauge(
            "collector_accounts_unhealthy",
            "Accounts that need an operator (invalid token, missing permission).",
            registry=r,
        )
        self.jobs_due = prometheus_client.Gauge(
            "collector_jobs_due", "Jobs whose due time has come, waiting to run.", registry=r
        )
        self.jobs_overdue = prometheus_client.Gauge(
            "collector_jobs_overdue",
            "Jobs past their deadline (a story final about to be missed, a stale poll).",
            registry=r,
        )
        self.jobs = prometheus_client.Counter(
            "collector_jobs", "Jobs run, by kind and outcome.", ["kind", "outcome"], registry=r
        )
        self.job_lateness = prometheus_client.Histogram(
            "collector_job_lateness_seconds",
            "How long after its due time a job started, by kind.",
            ["kind"],
            buckets=_LATENESS_BUCKETS,
            registry=r,
        )
        self.story_finals = prometheus_client.Counter(
            "collector_story_finals",
            "Stories whose final snapshot before expiry was taken or missed.",
            ["result"],
            registry=r,
        )
        self.story_final_sources = prometheus_client.Counter(
            "collector_story_final_sources",
            "Story final snapshots taken, by where they came from (poll or webhook).",
            ["source"],
            registry=r,
        )
        self.story_misses = prometheus_client.Counter(
            "collector_story_misses",
            "Stories that expired without a final snapshot, by reason (below_threshold, "
            "token_parked, throttled, process_down, retries_exhausted, gone, not_polled).",
            ["reason"],
            registry=r,
        )
        self.story_final_lead = prometheus_client.Histogram(
            "collector_story_final_lead_seconds",
            "How long before a story expired its final snapshot was taken.",
            buckets=_LEAD_BUCKETS,
            registry=r,
        )
        self.rows = prometheus_client.Counter(
            "collector_rows_written",
            "Rows handed to PostgreSQL, by table (replays may count rows stored once).",
            ["table"],
            registry=r,
        )
        self.rows_quarantined = prometheus_client.Counter(
            "collector_rows_quarantined",
            "Records PostgreSQL refused (kept aside in the state directory's rejected.jsonl), "
            "by table.",
            ["table"],
            registry=r,
        )
        self.rows_dropped = prometheus_client.Counter(
            "collector_rows_dropped",
            "Records lost because neither PostgreSQL nor the spool could take them and the "
            "in-memory bound was reached.",
            registry=r,
        )
        self.rows_held = prometheus_client.Gauge(
            "collector_rows_held",
            "Records in memory waiting for PostgreSQL or the spool.",
            registry=r,
        )
        self.degraded = prometheus_client.Gauge(
            "collector_degraded",
            "1 while the spool cannot take rows (a full or failing disk) and rows wait in memory.",
            registry=r,
        )
        self.accounts_held = prometheus_client.Gauge(
            "collector_accounts_held",
            "Cluster mode: accounts whose lease this process holds (it collects them).",
            registry=r,
        )
        self.cluster_members = prometheus_client.Gauge(
            "collector_cluster_members",
            "Cluster mode: live collector processes sharing the accounts.",
            registry=r,
        )
        self.spool_bytes = prometheus_client.Gauge(
            "collector_spool_bytes", "Size of the spool of unwritten batches.", registry=r
        )
        self.spool_batches = prometheus_client.Gauge(
            "collector_spool_batches", "Batches in the spool, waiting for PostgreSQL.", registry=r
        )
        self.database_up = prometheus_client.Gauge(
            "collector_database_up",
            "1 when PostgreSQL answered the last attempt, else 0.",
            registry=r,
        )
        self.loop_lag = prometheus_client.Gauge(
            "collector_loop_lag_seconds",
            "How late the event loop ran a timer at the last check (a blocked loop shows here).",
            registry=r,
        )
        self.webhooks = prometheus_client.Counter(
            "collector_webhook_deliveries",
            "story_insights webhook requests, by outcome (accepted, bad_signature, "
            "no_signature, no_secret, too_large, bad_json, ignored).",
            ["outcome"],
            registry=r,
        )
        for status in ACCOUNT_STATUSES:
            self.accounts.labels(status=status)
        for result in ("taken", "missed"):
            self.story_finals.labels(result=result)
        for source in ("poll", "webhook"):
            self.story_final_sources.labels(source=source)
        for reason in models.MissReason:
            self.story_misses.labels(reason=str(reason))

    # ------------------------------------------------------------------ events

    def api_call(self, endpoint: str, outcome: str, seconds: float) -> None:
        """One Graph API call (the signature of ``graph.Client``'s ``on_call`` hook)."""
        self.api_calls.labels(endpoint=endpoint, outcome=outcome).inc()
        self.api_call_seconds.labels(endpoint=endpoint).observe(max(seconds, 0.0))

    def api_retry(self, endpoint: str, reason: str) -> None:
        """A call is about to be retried."""
        self.api_retries.labels(endpoint=endpoint, reason=reason).inc()

    def job_done(self, kind: str, outcome: str, lateness_s: float | None = None) -> None:
        """One job finished; ``lateness_s``: how long after its due time it started."""
        self.jobs.labels(kind=kind, outcome=outcome).inc()
        if lateness_s is not None:
            self.job_lateness.labels(kind=kind).observe(max(lateness_s, 0.0))

    def story_final(
        self,
        taken: bool,
        lead_s: float | None = None,
        *,
        source: str | None = None,
        reason: str | None = None,
    ) -> None:
        """A story's final snapshot was taken (``lead_s`` before expiry, from ``source``) or
        missed (for ``reason``)."""
        self.story_finals.labels(result="taken" if taken else "missed").inc()
        if taken and lead_s is not None:
            self.story_final_lead.observe(max(lead_s, 0.0))
        if taken and source is not None:
            self.story_final_sources.labels(source=source).inc()
        if not taken and reason is not None:
            self.story_misses.labels(reason=reason).inc()

    def rows_written(self, table: str, n: int) -> None:
        if n > 0:
            self.rows.labels(table=table).inc(n)

    def rows_refused(self, table: str, n: int) -> None:
        if n > 0:
            self.rows_quarantined.labels(table=table).inc(n)

    def rows_lost(self, n: int) -> None:
        if n > 0:
            self.rows_dropped.inc(n)

    def webhook(self, outcome: str) -> None:
        """One webhook request, by outcome."""
        self.webhooks.labels(outcome=outcome).inc()

    # ------------------------------------------------------------------ levels

    def set_usage(self, account: str, percent: float | None) -> None:
        """An account's usage level; ``None`` drops the series (account removed)."""
        if percent is None:
            with contextlib.suppress(KeyError):  # never set: nothing to drop
                self.usage.remove(account)
            return
        self.usage.labels(account=account).set(percent)

    def set_token_lifetime(self, account: str, seconds: float | None) -> None:
        """An account's token lifetime left; ``None`` drops the series (never expires)."""
        if seconds is None:
            with contextlib.suppress(KeyError):  # never set: nothing to drop
                self.token_lifetime.remove(account)
            return
        self.token_lifetime.labels(account=account).set(seconds)

    def set_accounts(self, by_status: Mapping[str, int]) -> None:
        """Account counts by status (``{"ok": 12, "throttled": 1}``); missing statuses are 0."""
        for status in {*ACCOUNT_STATUSES, *by_status}:
            self.accounts.labels(status=status).set(by_status.get(status, 0))
        self.accounts_throttled.set(by_status.get("throttled", 0))
        self.accounts_unhealthy.set(by_status.get("unhealthy", 0))

    def set_gauges(
        self,
        *,
        jobs_due: int | None = None,
        jobs_overdue: int | None = None,
        spool_bytes: int | None = None,
        spool_batches: int | None = None,
        database_up: bool | None = None,
        loop_lag_s: float | None = None,
        rows_held: int | None = None,
        degraded: bool | None = None,
    ) -> None:
        """Set the levels given; ``None`` leaves a gauge as it is."""
        if jobs_due is not None:
            self.jobs_due.set(jobs_due)
        if jobs_overdue is not None:
            self.jobs_overdue.set(jobs_overdue)
        if spool_bytes is not None:
            self.spool_bytes.set(spool_bytes)
        if spool_batches is not None:
            self.spool_batches.set(spool_batches)
        if database_up is not None:
            self.database_up.set(1 if database_up else 0)
        if loop_lag_s is not None:
            self.loop_lag.set(loop_lag_s)
        if rows_held is not None:
            self.rows_held.set(rows_held)
        if degraded is not None:
            self.degraded.set(1 if degraded else 0)

    def set_cluster(self, held: int, members: int) -> None:
        self.accounts_held.set(held)
        self.cluster_members.set(members)

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """The text exposition format (``Content-Type``: :data:`CONTENT_TYPE`)."""
        return prometheus_client.generate_latest(self.registry)
