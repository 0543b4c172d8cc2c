"""Lifecycle: open the database and the Graph session from the settings, run, close."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import structlog

from collector import clock as clock_mod
from collector import (
    collection,
    errors,
    graph,
    jobs,
    metrics_catalog,
    models,
    ratelimit,
    runner,
    schema,
)
from collector import config as config_mod
from collector import store as store_mod

if TYPE_CHECKING:
    from collector import config


def build_client(settings: config.Settings, clock: clock_mod.Clock) -> graph.GraphClient:
    g = settings.graph
    lim = settings.limits
    limiter = ratelimit.Limiter(
        high_water=lim.usage_high_water,
        pause_at=lim.usage_pause,
        floor=lim.throttle_floor,
        app_backoff_max=lim.app_backoff_max,
    )
    return graph.GraphClient(
        base_url=g.base_url,
        api_version=g.api_version,
        app_secret=g.app_secret.get_secret_value() if g.app_secret else None,
        timeout=g.timeout.total_seconds(),
        connect_timeout=g.connect_timeout.total_seconds(),
        max_retries=g.max_retries,
        retry_base=g.retry_base.total_seconds(),
        retry_max=g.retry_max.total_seconds(),
        clock=clock,
        limiter=limiter,
        max_in_flight=lim.max_in_flight,
    )


def require_dsn(settings: config.Settings) -> str:
    dsn = settings.database.resolved_dsn()
    if not dsn:
        raise errors.ConfigError(
            "database.dsn: no database configured; set [database] dsn (or dsn_file, "
            "dsn_credential, or COLLECTOR_DATABASE__DSN) to a PostgreSQL URL such as "
            "postgresql://collector@localhost/collector"
        )
    return dsn


async def open_store(settings: config.Settings) -> store_mod.Store:
    db = settings.database
    return await store_mod.Store.open(
        require_dsn(settings),
        min_size=db.pool_min_size,
        max_size=db.pool_max_size,
        connect_timeout=db.connect_timeout.total_seconds(),
        command_timeout=db.command_timeout.total_seconds(),
    )


def targets_of(
    settings: config.Settings,
) -> list[tuple[jobs.Target, dict[str, Sequence[str]] | None]]:
    return [
        (
            jobs.Target(
                ig_user_id=models.IgUserId(a.ig_user_id),
                name=a.name,
                token=a.token.get_secret_value(),
            ),
            {str(k): list(v) for k, v in a.metrics.items()} if a.metrics else None,
        )
        for a in settings.enabled_accounts()
    ]


async def run_once(
    settings: config.Settings,
    *,
    clock: clock_mod.Clock | None = None,
    out: TextIO | None = None,
) -> int:
    """One full pass over every enabled account; 0 when every account succeeded."""
    clock = clock or clock_mod.SystemClock()
    log = structlog.get_logger()
    targets = targets_of(settings)
    if not targets:
        raise errors.ConfigError(
            f"{settings.source_path or 'config'}: no enabled accounts: add an [[accounts]] "
            "table (see config/collector.example.toml)"
        )
    st = await open_store(settings)
    try:
        await st.check_schema()
        now = clock.now()
        await st.sync_accounts(
            [
                models.AccountRow(models.IgUserId(a.ig_user_id), a.name, a.enabled)
                for a in settings.accounts
            ],
            now,
        )
        for a in settings.accounts:
            if not a.enabled:
                await st.set_account_status(
                    models.IgUserId(a.ig_user_id),
                    models.AccountStatus.DISABLED,
                    "enabled = false",
                    now,
                )
        catalog = metrics_catalog.Catalog(
            settings.graph.api_version, await st.metric_verdicts(settings.graph.api_version)
        )
        sched = settings.schedule
        plan = collection.Plan(
            backfill_days=sched.account_insights_backfill_days,
            repoll_days=sched.account_insights_repoll_days,
            media_max_age=sched.media_insights_max_age,
            per_account_in_flight=settings.limits.per_account_in_flight,
        )
        async with build_client(settings, clock) as client:
            coll = collection.Collection(
                client=client,
                store=st,
                catalog=catalog,
                clock=clock,
                plan=plan,
                context_defaults={
                    "page_size": settings.graph.page_size,
                    "story_lifetime": sched.story_lifetime,
                    "story_final_lead": sched.story_final_lead,
                    "demographics_timeframe": sched.demographics_timeframe,
                },
                log=log,
            )
            log.info("pass_started", accounts=len(targets))
            results = await coll.run_once(targets)
            log.info(
                "pass_done",
                accounts=len(results),
                failed=sum(not r.ok for r in results),
                api_calls=sum(client.calls.values()),
                retries=client.retries,
            )
    finally:
        await st.close()
    print(collection.summary_table(results), file=out or sys.stderr)
    return 0 if all(r.ok for r in results) else 1


async def migrate(settings: config.Settings) -> list[str]:
    """Apply pending migrations; returns their names."""
    import asyncpg  # noqa: PLC0415  (only this command needs a raw connection)

    dsn = require_dsn(settings)
    try:
        conn = await asyncpg.connect(dsn, timeout=settings.database.connect_timeout.total_seconds())
    except (OSError, asyncpg.PostgresError) as exc:
        raise errors.DatabaseUnavailable(
            f"cannot connect to {store_mod.describe_dsn(dsn)}: {type(exc).__name__}"
        ) from None
    try:
        applied = await schema.migrate(conn)
    finally:
        await conn.close()
    return [m.name for m in applied]


def cadence_of(settings: config.Settings) -> runner.Cadence:
    s = settings.schedule
    return runner.Cadence(
        profile=s.profile_every,
        account_insights=s.account_insights_every,
        demographics=s.demographics_every,
        media_discovery=s.media_discovery_every,
        story_discovery=s.story_discovery_every,
        story_poll=s.story_poll_every,
        story_final_lead=s.story_final_lead,
        token_check=s.token_check_every,
        token_expiry_warning=s.token_expiry_warning,
        media_tiers=tuple((t.max_age, t.every) for t in s.media_tiers),
        backfill_days=s.account_insights_backfill_days,
        repoll_days=s.account_insights_repoll_days,
    )


def build_runner(
    settings: config.Settings,
    st: store_mod.Store,
    client: graph.GraphClient,
    catalog: metrics_catalog.Catalog,
    clock: clock_mod.Clock,
) -> runner.Runner:
    """The job runner as the settings describe it (accounts are added by ``set_accounts``)."""
    return runner.Runner(
        client=client,
        store=st,
        catalog=catalog,
        clock=clock,
        cadence=cadence_of(settings),
        max_in_flight=settings.limits.max_in_flight,
        per_account=settings.limits.per_account_in_flight,
        context_defaults={
            "page_size": settings.graph.page_size,
            "story_lifetime": settings.schedule.story_lifetime,
            "story_final_lead": settings.schedule.story_final_lead,
            "demographics_timeframe": settings.schedule.demographics_timeframe,
        },
        log=structlog.get_logger(),
    )


async def prepare(settings: config.Settings, st: store_mod.Store, clock: clock_mod.Clock) -> None:
    await st.check_schema()
    now = clock.now()
    await st.sync_accounts([a.row() for a in settings.accounts], now)
    for a in settings.accounts:
        if not a.enabled:
            await st.set_account_status(
                models.IgUserId(a.ig_user_id), models.AccountStatus.DISABLED, "enabled = false", now
            )


async def run_forever(
    settings: config.Settings,
    *,
    clock: clock_mod.Clock | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """The daemon: collect until SIGTERM/SIGINT; SIGHUP re-reads the config file."""
    clock = clock or clock_mod.SystemClock()
    log = structlog.get_logger()
    stop = stop or asyncio.Event()
    reload = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum, event in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, reload)):
        loop.add_signal_handler(signum, event.set)
    st = await open_store(settings)
    try:
        await prepare(settings, st, clock)
        catalog = metrics_catalog.Catalog(
            settings.graph.api_version, await st.metric_verdicts(settings.graph.api_version)
        )
        async with build_client(settings, clock) as client:
            run = build_runner(settings, st, client, catalog, clock)
            await run.set_accounts(targets_of(settings))
            log.info("daemon_started", accounts=len(run.accounts), jobs=len(run.scheduler))
            current = settings

            async def reloader() -> None:
                nonlocal current
                while True:
                    await reload.wait()
                    reload.clear()
                    current = await _reload(current, run, st, clock)

            reload_task = asyncio.create_task(reloader(), name="reloader")
            main = asyncio.create_task(run.run(stop), name="runner")
            try:
                done, _ = await asyncio.wait(
                    {main, reload_task}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    task.result()  # a crash in either stops the daemon loudly
            finally:
                reload_task.cancel()
                stop.set()
                if not main.done():
                    await asyncio.wait({main})
                cancelled = await run.drain(current.shutdown.drain_timeout.total_seconds())
                log.info(
                    "daemon_stopped",
                    jobs_done=run.stats.jobs_done,
                    stories_finalised=run.stats.stories_finalised,
                    stories_missed=run.stats.stories_missed,
                    cancelled=cancelled,
                )
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        await st.close()
    return 0


async def _reload(
    current: config.Settings, run: runner.Runner, st: store_mod.Store, clock: clock_mod.Clock
) -> config.Settings:
    """Re-read the config file; a broken file is rejected and the running config kept."""
    log = structlog.get_logger()
    path: Path | None = current.source_path
    try:
        fresh = config_mod.load(path)
    except errors.ConfigError as exc:
        log.error("config_reload_rejected", problem=str(exc))
        return current
    from collector import log as log_mod  # noqa: PLC0415

    log_mod.set_secrets(fresh.secrets())
    await prepare(fresh, st, clock)
    run.cadence = cadence_of(fresh)
    run.max_in_flight = fresh.limits.max_in_flight
    await run.set_accounts(targets_of(fresh))
    log.info("config_reloaded", accounts=len(run.accounts))
    return fresh
