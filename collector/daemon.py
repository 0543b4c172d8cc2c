"""Lifecycle: open the database and the Graph session from the settings, run, close."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

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
    spool,
    systemd,
    web,
)
from collector import config as config_mod
from collector import store as store_mod
from collector import telemetry as telemetry_mod
from collector import writer as writer_mod

if TYPE_CHECKING:
    from collector import config

T = TypeVar("T")


def build_client(
    settings: config.Settings,
    clock: clock_mod.Clock,
    *,
    on_call: graph.CallHook | None = None,
) -> graph.GraphClient:
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
        on_call=on_call,
    )


async def with_database(
    settings: config.Settings, command: Callable[[config.Settings], Awaitable[T]]
) -> T:
    """Run ``command`` with a database: the configured one, or the embedded PostgreSQL in the
    state directory when ``[database]`` names none (its schema is ours: migrated here)."""
    if settings.database.resolved_dsn() is not None:
        return await command(settings)
    from collector import embedded  # noqa: PLC0415  (only without a configured database)

    log = structlog.get_logger()
    async with embedded.running(settings.state.directory) as dsn:
        log.info("embedded_postgres_started", state_dir=str(settings.state.directory))
        local = settings.with_embedded_dsn(dsn)
        applied = await migrate(local)
        if applied:
            log.info("migrations_applied", applied=applied, count=len(applied))
        return await command(local)


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
            accounts_at_once=max(16, 2 * settings.limits.max_in_flight),
        )
        async with build_client(settings, clock) as client:
            coll = collection.Collection(
                client=client,
                store=st,
                catalog=catalog,
                clock=clock,
                plan=plan,
                context_defaults=context_defaults(settings),
                log=log,
            )
            log.info("pass_started", accounts=len(targets))
            results = await coll.run_once(targets)
            log.info(
                "pass_done",
                accounts=len(results),
                failed=sum(not r.ok for r in results),
                api_calls=sum(client.calls.values()),
                round_trips=client.round_trips,
                peak_in_flight=client.peak_in_flight,
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


def context_defaults(settings: config.Settings) -> dict[str, Any]:
    """The job-context knobs the settings set (see ``jobs.Context``)."""
    return {
        "page_size": settings.graph.page_size,
        "story_lifetime": settings.schedule.story_lifetime,
        "story_final_lead": settings.schedule.story_final_lead,
        "demographics_timeframe": settings.schedule.demographics_timeframe,
    }


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
    *,
    writer: writer_mod.Writer | None = None,
    telemetry: telemetry_mod.Telemetry | None = None,
) -> runner.Runner:
    """The job runner as the settings describe it (accounts are added by ``set_accounts``)."""
    return runner.Runner(
        telemetry=telemetry,
        write=writer.write if writer is not None else None,
        backpressure=(lambda: writer.backpressure) if writer is not None else None,
        client=client,
        store=st,
        catalog=catalog,
        clock=clock,
        cadence=cadence_of(settings),
        max_in_flight=settings.limits.max_in_flight,
        per_account=settings.limits.per_account_in_flight,
        context_defaults=context_defaults(settings),
        log=structlog.get_logger(),
    )


async def prepare(settings: config.Settings, st: store_mod.Store, clock: clock_mod.Clock) -> None:
    await st.check_schema()
    now = clock.now()
    # history partitions ahead and retention; compaction is for the daily call (it can be slow)
    await st.maintain(
        now,
        media_metric=settings.retention.media_metric,
        account_metric=settings.retention.account_metric,
        compact=False,
    )
    await st.sync_accounts([a.row() for a in settings.accounts], now)
    for a in settings.accounts:
        if not a.enabled:
            await st.set_account_status(
                models.IgUserId(a.ig_user_id), models.AccountStatus.DISABLED, "enabled = false", now
            )


class Daemon:
    """The long-running collector: runner, write buffer, signals, reload, graceful stop."""

    def __init__(
        self,
        settings: config.Settings,
        *,
        clock: clock_mod.Clock | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or clock_mod.SystemClock()
        self.stop = stop or asyncio.Event()
        #: a second SIGTERM/SIGINT: cancel at once, spool what is buffered, exit
        self.hurry = asyncio.Event()
        self.reload = asyncio.Event()
        self.log = structlog.get_logger()
        self.store: store_mod.Store | None = None
        self.writer: writer_mod.Writer | None = None
        self.runner: runner.Runner | None = None
        self.web: web.WebServer | None = None
        self.notifier = systemd.Notifier.from_environ(settings.systemd_env, log=self.log)
        self.telemetry = telemetry_mod.Telemetry()
        self.loop_lag = 0.0

    def _on_stop_signal(self) -> None:
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.reload.set)
        try:
            return await self._run()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    async def _run(self) -> int:
        settings = self.settings
        st = self.store = await open_store(settings)
        try:
            await prepare(settings, st, self.clock)
            sp = spool.Spool(settings.state.directory, max_bytes=settings.state.spool_max_bytes)
            wr = self.writer = writer_mod.Writer(st, sp, telemetry=self.telemetry, log=self.log)
            if sp.size:
                wr.spooled_batches = sp.count()
                self.log.info("spool_found", spool_bytes=sp.size, batches=wr.spooled_batches)
                await wr.replay()
            catalog = metrics_catalog.Catalog(
                settings.graph.api_version, await st.metric_verdicts(settings.graph.api_version)
            )
            async with build_client(
                settings, self.clock, on_call=self.telemetry.api_call
            ) as client:
                run = self.runner = build_runner(
                    settings, st, client, catalog, self.clock, writer=wr, telemetry=self.telemetry
                )
                await run.set_accounts(targets_of(settings))
                if settings.web.enabled:
                    self.web = web.WebServer(
                        settings,
                        telemetry=self.telemetry,
                        health=self.health,
                        sink=self._webhook_sink,
                        log=self.log,
                    )
                    await self.web.start()
                self.log.info(
                    "daemon_started",
                    accounts=len(run.accounts),
                    jobs=len(run.scheduler),
                    web=self.web.url if self.web else None,
                )
                self.notifier.ready(self._status_line())
                await self._supervise(run, wr)
        finally:
            if self.web is not None:
                await self.web.stop()
            await st.close()
        return 0

    async def _webhook_sink(self, batch: models.Batch) -> None:
        """Webhook rows are made durable (database or spool) before Meta gets its 200."""
        assert self.writer is not None
        await self.writer.write(batch)
        await self.writer.flush()

    def health(self) -> web.Health:
        wr, run = self.writer, self.runner
        return web.Health.assess(
            database_up=wr.db_up if wr else False,
            loop_lag_s=self.loop_lag,
            accounts=self._accounts_by_status(),
            spool_bytes=wr.spool.size if wr else 0,
            spool_batches=wr.spooled_batches if wr else 0,
            last_job_at=run.last_job_at if run else None,
        )

    def _accounts_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self.runner.accounts.values() if self.runner else ():
            status = "unhealthy" if state.parked_reason else str(state.status or "unknown")
            counts[status] = counts.get(status, 0) + 1
        return counts

    def _status_line(self) -> str:
        run, wr = self.runner, self.writer
        if run is None or wr is None:
            return "starting"
        by_status = self._accounts_by_status()
        return (
            f"{len(run.accounts)} accounts ({by_status.get('ok', 0)} ok), "
            f"{run.stats.jobs_done} jobs done, {run.in_flight} in flight, "
            f"{run.stats.stories_finalised} stories finalised, "
            f"{run.stats.stories_missed} missed, "
            f"{'database up' if wr.db_up else 'DATABASE DOWN'}, "
            f"spool {wr.spooled_batches} batches"
        )

    def _refresh_gauges(self) -> None:
        run, wr = self.runner, self.writer
        if run is None or wr is None:
            return
        now = self.clock.now()
        t = self.telemetry
        t.set_gauges(
            jobs_due=run.scheduler.due_count(now),
            jobs_overdue=run.scheduler.overdue_count(now),
            spool_bytes=wr.spool.size,
            spool_batches=wr.spooled_batches,
            database_up=wr.db_up,
            loop_lag_s=self.loop_lag,
        )
        t.set_accounts(self._accounts_by_status())
        for uid, state in run.accounts.items():
            usage = run.client.limiter.accounts.get(uid)
            t.set_usage(state.target.name, usage.percent if usage else None)

    async def _heartbeat(self) -> None:
        """Watchdog pings from the event loop itself (a wedged loop stops them), loop lag,
        gauges and the systemd status line."""
        interval = 1.0
        watchdog = self.notifier.watchdog_interval()
        if watchdog is not None:
            interval = min(interval, watchdog)
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            before = loop.time()
            # a plain sleep on purpose: how late it wakes up is the loop lag being measured
            await asyncio.sleep(interval)
            self.loop_lag = max(0.0, loop.time() - before - interval)
            self.notifier.watchdog()
            ticks += 1
            if ticks % 5 == 0:
                self._refresh_gauges()
            if ticks % 10 == 0:
                self.notifier.status(self._status_line())

    async def _supervise(self, run: runner.Runner, wr: writer_mod.Writer) -> None:
        writer_stop = asyncio.Event()
        tasks = {
            asyncio.create_task(run.run(self.stop), name="runner"),
            asyncio.create_task(self._reloader(), name="reloader"),
            asyncio.create_task(wr.run(writer_stop), name="writer"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not self.stop.is_set():
                    task.result()  # a side task crashed: stop the daemon loudly
                    raise RuntimeError(f"{task.get_name()} stopped unexpectedly")
        finally:
            self.stop.set()
            self.notifier.stopping()
            self.log.info("daemon_stopping", in_flight=run.in_flight)
            for task in tasks:
                if task.get_name() == "reloader":
                    task.cancel()
            runner_task = next(t for t in tasks if t.get_name() == "runner")
            if not runner_task.done():
                await asyncio.wait({runner_task})
            cancelled = await self._drain(run)
            writer_stop.set()
            for task in tasks:
                if task.get_name() == "heartbeat":
                    task.cancel()
            await asyncio.wait(tasks)
            if self.web is not None:
                await self.web.stop()
                self.web = None
            if self.hurry.is_set():
                wr.spool_pending()
            else:
                await wr.close()
            self.log.info(
                "daemon_stopped",
                jobs_done=run.stats.jobs_done,
                stories_finalised=run.stats.stories_finalised,
                stories_missed=run.stats.stories_missed,
                cancelled=cancelled,
                rows_written=wr.rows_written,
                spool_bytes=wr.spool.size,
            )

    async def _drain(self, run: runner.Runner) -> int:
        """In-flight jobs get the drain deadline, unless a second signal says hurry."""
        deadline = self.settings.shutdown.drain_timeout.total_seconds()
        if self.hurry.is_set():
            deadline = 0.0
        drain = asyncio.create_task(run.drain(deadline))
        hurry = asyncio.create_task(self.hurry.wait())
        done, _ = await asyncio.wait({drain, hurry}, return_when=asyncio.FIRST_COMPLETED)
        if drain not in done:
            self.log.warning("shutdown_hurried", in_flight=run.in_flight)
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
            return await run.drain(0.0)
        hurry.cancel()
        return drain.result()

    async def _reloader(self) -> None:
        while True:
            await self.reload.wait()
            self.reload.clear()
            self.notifier.reloading()
            try:
                await self._reload()
            finally:
                self.notifier.ready(self._status_line())

    async def _reload(self) -> None:
        """Re-read the config file; a broken file is rejected and the running config kept."""
        if self.runner is None or self.store is None:
            return  # a SIGHUP before the daemon started: nothing to apply it to yet
        current = self.settings
        try:
            fresh = config_mod.load(current.source_path)
        except errors.ConfigError as exc:
            self.log.error("config_reload_rejected", problem=str(exc))
            return
        from collector import log as log_mod  # noqa: PLC0415

        log_mod.set_secrets(fresh.secrets())
        try:
            await prepare(fresh, self.store, self.clock)
        except errors.StoreError as exc:
            self.log.error("config_reload_failed", problem=str(exc))
            return
        run = self.runner
        run.cadence = cadence_of(fresh)
        run.max_in_flight = fresh.limits.max_in_flight
        await run.set_accounts(targets_of(fresh))
        if self.web is not None:
            self.web.reconfigure(fresh)
        self.settings = fresh
        self.log.info("config_reloaded", accounts=len(run.accounts))


async def run_forever(
    settings: config.Settings,
    *,
    clock: clock_mod.Clock | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """The daemon: collect until SIGTERM/SIGINT; SIGHUP re-reads the config file."""
    return await Daemon(settings, clock=clock, stop=stop).run()
