"""Factories: the Graph client, limiter, store, writer and runner as the settings describe them.

Used by the daemon, ``run --once``, ``check``, the demo and the tests; no lifecycle here (that
is ``daemon.py``): each function builds one part and hands its dependencies in.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import structlog

from collector import clock as clock_mod
from collector import (
    errors,
    graph,
    jobs,
    metrics_catalog,
    models,
    ratelimit,
    roster,
    schema,
    spool,
)
from collector import plan as plan_mod
from collector import runner as runner_mod
from collector import store as store_mod
from collector import telemetry as telemetry_mod
from collector import writer as writer_mod

if TYPE_CHECKING:
    from collector import config

T = TypeVar("T")

Targets = list[tuple[jobs.Target, dict[str, Sequence[str]] | None]]


def build_limiter(settings: config.Settings) -> ratelimit.Limiter:
    lim = settings.limits
    return ratelimit.Limiter(
        high_water=lim.usage_high_water,
        pause_at=lim.usage_pause,
        floor=lim.throttle_floor,
        app_backoff_max=lim.app_backoff_max,
    )


def build_client(
    settings: config.Settings,
    clock: clock_mod.Clock,
    limiter: ratelimit.Limiter,
    *,
    on_call: graph.CallHook | None = None,
    login: str = "facebook",
) -> graph.GraphClient:
    """The client of one host: ``login`` "facebook" (``[graph] base_url``) or "instagram"
    (``instagram_base_url``); both share the limiter, one picture of the budgets."""
    g = settings.graph
    return graph.GraphClient(
        base_url=g.instagram_base_url if login == "instagram" else g.base_url,
        api_version=g.api_version,
        app_secret=g.app_secret.get_secret_value() if g.app_secret else None,
        timeout=g.timeout.total_seconds(),
        connect_timeout=g.connect_timeout.total_seconds(),
        max_retries=g.max_retries,
        retry_base=g.retry_base.total_seconds(),
        retry_max=g.retry_max.total_seconds(),
        clock=clock,
        limiter=limiter,
        max_in_flight=settings.limits.max_in_flight,
        on_call=on_call,
        max_body_bytes=int(g.max_body_bytes),
        max_pages=g.max_pages,
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


async def open_store(settings: config.Settings, *, lazy: bool = False) -> store_mod.Store:
    """The connection pool; ``lazy``: connect on first use, so a database that is down does
    not stop the caller (the daemon starts and spools)."""
    db = settings.database
    return await store_mod.Store.open(
        require_dsn(settings),
        min_size=0 if lazy else db.pool_min_size,
        max_size=db.pool_max_size,
        connect_timeout=db.connect_timeout.total_seconds(),
        command_timeout=db.command_timeout.total_seconds(),
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


def targets_of(settings: config.Settings) -> Targets:
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


async def prepare(
    settings: config.Settings,
    st: store_mod.Store,
    clock: clock_mod.Clock,
    names: roster.Roster | None = None,
) -> None:
    """The schema is this version's, and the account table matches the configuration and the
    sources' listings (``names``; without it, the configured accounts only)."""
    await st.check_schema()
    now = clock.now()
    # history partitions ahead and retention; compaction is for the daily call (it can be slow)
    await st.maintain(
        now,
        media_metric=settings.retention.media_metric,
        account_metric=settings.retention.account_metric,
        compact=False,
    )
    if names is None:
        await st.sync_accounts([a.row() for a in settings.accounts], now)
    else:
        fence = names.sync_fence()
        if not await st.sync_accounts(
            names.rows(), now, keep_sources=names.keep_sources, fence=fence
        ):
            # the sources lease moved on meanwhile: its new holder writes the listings
            structlog.get_logger().warning(
                "sources_sync_refused", reason="this process no longer holds the sources lease"
            )
            names.stop_listing()
            await st.sync_accounts(names.rows(listing=False), now, keep_sources=names.all_sources)
    for a in settings.accounts:
        if not a.enabled:
            await st.set_account_status(
                models.IgUserId(a.ig_user_id), models.AccountStatus.DISABLED, "enabled = false", now
            )


async def load_catalog(
    settings: config.Settings, st: store_mod.Store, login: str = "facebook"
) -> metrics_catalog.Catalog:
    """The metric sets, with what the database learned about this API version (nothing when
    it cannot be read: rejected metrics are then learned again); Instagram Login learns apart."""
    version = settings.graph.api_version
    try:
        verdicts = await st.metric_verdicts(metrics_catalog.version_key(version, login))
    except errors.DatabaseUnavailable:
        verdicts = []
    return metrics_catalog.Catalog(version, verdicts, login=login)


@contextlib.asynccontextmanager
async def opened_logins(
    settings: config.Settings,
    st: store_mod.Store,
    clock: clock_mod.Clock,
    limiter: ratelimit.Limiter,
    *,
    on_call: graph.CallHook | None = None,
) -> AsyncIterator[dict[str, jobs.Login]]:
    """Both APIs' clients (one limiter) and catalogs: Facebook Login, and Instagram Login on
    its own host without the batch endpoint (not documented there)."""
    facebook = build_client(settings, clock, limiter, on_call=on_call)
    instagram = build_client(settings, clock, limiter, on_call=on_call, login="instagram")
    async with facebook, instagram:
        yield {
            "facebook": jobs.Login(facebook, await load_catalog(settings, st)),
            "instagram": jobs.Login(
                instagram, await load_catalog(settings, st, "instagram"), batching=False
            ),
        }


def build_writer(
    settings: config.Settings,
    st: store_mod.Store,
    *,
    telemetry: telemetry_mod.Telemetry | None = None,
) -> writer_mod.Writer:
    sp = spool.Spool(settings.state.directory, max_bytes=settings.state.spool_max_bytes)
    sp.recover()  # cut a record torn by a kill mid-append before anything follows it
    return writer_mod.Writer(
        st, sp, flush_rows=plan_mod.FLUSH_ROWS, telemetry=telemetry, log=structlog.get_logger()
    )


def build_runner(
    settings: config.Settings,
    *,
    store: store_mod.Store,
    client: graph.GraphClient,
    limiter: ratelimit.Limiter,
    writer: writer_mod.Writer,
    catalog: metrics_catalog.Catalog,
    clock: clock_mod.Clock,
    telemetry: telemetry_mod.Telemetry | None = None,
    once: bool = False,
    logins: dict[str, jobs.Login] | None = None,
) -> runner_mod.Runner:
    """The engine as the settings describe it (accounts are added by ``set_accounts``)."""
    return runner_mod.Runner(
        logins=logins,
        client=client,
        limiter=limiter,
        store=store,
        writer=writer,
        catalog=catalog,
        clock=clock,
        plan=plan_mod.Plan.from_settings(settings),
        telemetry=telemetry,
        log=structlog.get_logger(),
        once=once,
    )
