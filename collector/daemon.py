"""Lifecycle: open the database and the Graph session from the settings, run the engine, close.

The daemon and ``run --once`` are the same process shape: one store, one writer and spool, one
Graph client, one :class:`runner.Runner`. The daemon runs it until stopped (signals, reload,
web server, sd_notify); a pass runs it with every job due now until nothing is due, then
prints the per-account summary read from the runner and exits with its code.

When PostgreSQL does not answer at start, both start anyway: rows go to the spool, accounts
start on story work, and the schema check, the replay and the rest of each account's schedule
follow once the database answers (the daemon keeps trying; a pass ends with ``EXIT_SPOOLED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import structlog

from collector import clock as clock_mod
from collector import (
    cluster,
    errors,
    graph,
    jobs,
    metrics_catalog,
    models,
    ratelimit,
    roster,
    runner,
    systemd,
    tokens,
    vault,
    web,
    wiring,
)
from collector import config as config_mod
from collector import plan as plan_mod
from collector import store as store_mod
from collector import telemetry as telemetry_mod
from collector import writer as writer_mod

if TYPE_CHECKING:
    from collector import config

#: exit codes of ``run --once``: every account ok / an account failed / rows are in the spool
#: (the database was unreachable; the next run or the daemon replays them)
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SPOOLED = 3
#: how often the daemon asks a database that did not answer at start
DATABASE_RETRY = 5.0
#: how often the history is maintained (partitions ahead, retention, packed indexes)
MAINTENANCE_EVERY = 86400.0


class Daemon:
    """The long-running collector: runner, write buffer, signals, reload, graceful stop."""

    def __init__(
        self,
        settings: config.Settings,
        *,
        clock: clock_mod.Clock | None = None,
        stop: asyncio.Event | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock or clock_mod.SystemClock()
        #: what the cluster leases are timed by (tests move it: a process that froze)
        self.monotonic = monotonic
        self.stop = stop or asyncio.Event()
        #: a second SIGTERM/SIGINT: cancel at once, spool what is buffered, exit
        self.hurry = asyncio.Event()
        self.reload = asyncio.Event()
        self.log: structlog.stdlib.BoundLogger = structlog.get_logger()
        self.store: store_mod.Store | None = None
        self.writer: writer_mod.Writer | None = None
        self.runner: runner.Runner | None = None
        #: configured and discovered accounts with their current tokens (None until started)
        self.roster: roster.Roster | None = None
        self.web: web.WebServer | None = None
        self.notifier = systemd.Notifier.from_environ(settings.systemd_env, log=self.log)
        self.telemetry = telemetry_mod.Telemetry()
        self.loop_lag = 0.0
        #: the schema was checked and the accounts synced (False while the database is away)
        self.database_ready = False
        #: cluster mode: this process's leases
        self.membership: cluster.Membership | None = None
        self.limiter: ratelimit.Limiter | None = None
        #: one heartbeat at a time (the loop's and a reload's)
        self._beat_lock = asyncio.Lock()
        #: the roster has work now (cluster mode: the sources lease or an account was gained)
        self._roster_wake = asyncio.Event()

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

    async def open(self) -> tuple[store_mod.Store, writer_mod.Writer]:
        """The store and the writer; a database that does not answer is reported, not fatal."""
        settings = self.settings
        try:
            st = await wiring.open_store(settings)
        except errors.DatabaseUnavailable as exc:
            self.log.error(
                "database_unavailable_at_start",
                message=str(exc)[:300],
                action="collecting story work first and spooling; "
                "the schema is checked once the database answers",
            )
            st = await wiring.open_store(settings, lazy=True)
        self.store = st
        wr = self.writer = wiring.build_writer(settings, st, telemetry=self.telemetry)
        # a schema this version cannot use stops here, before anything is called or listed
        # (the account sync waits for the roster: start_database)
        with contextlib.suppress(errors.DatabaseUnavailable):
            await st.check_schema()
        return st, wr

    async def start_database(self) -> None:
        """Schema check and account sync (once the roster knows the accounts), spool replay."""
        assert self.writer is not None
        wr = self.writer
        await self.ensure_database()
        if wr.spool.size:
            wr.spooled_batches = wr.spool.count()
            self.log.info("spool_found", spool_bytes=wr.spool.size, batches=wr.spooled_batches)
            if self.database_ready:
                await wr.replay()

    async def ensure_database(self) -> bool:
        """Check the schema and sync the accounts once the database answers (SchemaError and
        PendingMigrations are fatal: this version cannot write there)."""
        if self.database_ready:
            return True
        assert self.store is not None
        assert self.writer is not None
        try:
            await wiring.prepare(self.settings, self.store, self.clock, self.roster)
        except errors.DatabaseUnavailable as exc:
            self.writer.db_up = False
            self.log.debug("database_still_unavailable", message=str(exc)[:200])
            return False
        self.database_ready = True
        self.writer.db_up = True
        return True

    def build_runner(
        self,
        client: graph.GraphClient,
        limiter: ratelimit.Limiter,
        catalog: metrics_catalog.Catalog,
        *,
        once: bool,
        logins: dict[str, jobs.Login] | None = None,
    ) -> runner.Runner:
        assert self.store is not None
        assert self.writer is not None
        run = self.runner = wiring.build_runner(
            self.settings,
            store=self.store,
            client=client,
            limiter=limiter,
            writer=self.writer,
            catalog=catalog,
            clock=self.clock,
            telemetry=self.telemetry,
            once=once,
            logins=logins,
        )
        return run

    async def start_engine(
        self, logins: dict[str, jobs.Login], limiter: ratelimit.Limiter, *, once: bool
    ) -> tuple[runner.Runner, roster.Update]:
        """The roster (sources listed, tokens renewed), the database (schema, accounts, spool
        replay) and the runner: the same start for the daemon and a pass."""
        update = await self.start_roster(logins, cluster=self.settings.cluster.enabled and not once)
        await self.start_database()
        facebook = logins["facebook"]
        self.limiter = limiter
        run = self.build_runner(
            facebook.client, limiter, facebook.catalog, once=once, logins=logins
        )
        return run, update

    async def start_roster(
        self, logins: dict[str, jobs.Login], *, cluster: bool = False
    ) -> roster.Update:
        """List every source and renew the due tokens: the accounts to start with (cluster
        mode: nothing yet; that waits for the leases, the sources lease included)."""
        names = self.roster = roster.Roster(self.settings, logins, logger=self.log)
        if cluster:
            assert self.store is not None
            member = self._membership(self.store)
            key = self.settings.cluster.key()
            share = (
                tokens.TokenShare(
                    self.store, vault.Vault(key), holder=member.name, epoch_of=member.epoch
                )
                if key is not None
                else None
            )
            names.join(member, share)
            return roster.Update(changed=False, park={})
        return await names.update(self.clock.now(), force=True)

    def _membership(self, st: store_mod.Store) -> cluster.Membership:
        c = self.settings.cluster
        member = self.membership = cluster.Membership(
            st,
            name=c.member_name(),
            ttl=c.lease_ttl,
            heartbeat=c.heartbeat,
            monotonic=self.monotonic,
            log=self.log,
        )
        return member

    async def park(self, update: roster.Update) -> None:
        """Park the accounts whose token could not be renewed before its expiry."""
        for uid, reason in update.park.items():
            if self.runner is not None:
                await self.runner.park(uid, roster.park_error(reason))

    async def _accounts(self) -> None:
        """Lists the sources and renews the tokens when due; applies what changed."""
        while True:
            assert self.roster is not None
            assert self.runner is not None
            due = self.roster.next_due()
            now = self.clock.now()
            wait = 3600.0 if due is None else max(0.0, min(3600.0, (due - now).total_seconds()))
            if not self._roster_wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._roster_wake.wait(), wait + 0.001)
            self._roster_wake.clear()
            if self.stop.is_set():
                return
            if self.roster.next_due() is None and self.membership is not None:
                continue  # woken for nothing due (cluster mode: e.g. a lease given back)
            update = await self.roster.update(self.clock.now())
            if update.changed:
                if self.database_ready and self.store is not None:
                    try:
                        await wiring.prepare(self.settings, self.store, self.clock, self.roster)
                    except errors.StoreError as exc:
                        # the rows follow at the next change or reload; collection goes on
                        self.log.warning("accounts_sync_deferred", message=str(exc)[:200])
                if self.membership is not None:
                    await self._cluster_beat(self.runner)
                else:
                    await self.runner.set_accounts(self.roster.targets())
            await self.park(update)

    async def _run(self) -> int:
        settings = self.settings
        st, wr = await self.open()
        try:
            limiter = wiring.build_limiter(settings)
            async with wiring.opened_logins(
                settings, st, self.clock, limiter, on_call=self.telemetry.api_call
            ) as logins:
                run, update = await self.start_engine(logins, limiter, once=False)
                assert self.roster is not None
                if settings.cluster.enabled:
                    self._join_cluster(st, [login.client for login in logins.values()], run)
                    await self._cluster_beat(run)
                else:
                    await run.set_accounts(self.roster.targets())
                await self.park(update)
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
                    database_ready=self.database_ready,
                )
                # READY once collecting: with the database away it collects and spools (the
                # STATUS line says so) rather than fail a start that systemd would repeat
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
        for poll in batch.media_polls:
            if poll.source == "webhook":
                self.telemetry.story_final_sources.labels(source="webhook").inc()
        await self.writer.write(batch)
        await self.writer.flush()

    def health(self) -> web.Health:
        wr, run = self.writer, self.runner
        return web.Health.assess(
            database_up=(wr.db_up and self.database_ready) if wr else False,
            spool_refusing=wr.degraded if wr else False,
            rows_in_memory=wr.pending_rows if wr else 0,
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
            f"{'database up' if wr.db_up and self.database_ready else 'DATABASE DOWN'}, "
            f"spool {wr.spooled_batches} batches"
            + (
                f", holds {len(self.membership.accounts())} leases "
                f"({self.membership.members} members"
                + (", lists the sources" if self.membership.lists_sources() else "")
                + ")"
                if self.membership is not None
                else ""
            )
            + (f", SPOOL REFUSES ROWS ({wr.pending_rows} in memory)" if wr.degraded else "")
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
            database_up=wr.db_up and self.database_ready,
            loop_lag_s=self.loop_lag,
            rows_held=wr.pending_rows,
            degraded=wr.degraded,
        )
        if self.membership is not None:
            t.set_cluster(len(self.membership.accounts()), self.membership.members)
        t.set_accounts(self._accounts_by_status())
        for uid, state in run.accounts.items():
            usage = run.limiter.accounts.get(uid)
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
            asyncio.create_task(self._accounts(), name="accounts"),
        }
        if not self.database_ready:
            tasks.add(asyncio.create_task(self._await_database(run), name="database"))
        if self.membership is not None:
            tasks.add(asyncio.create_task(self._cluster_loop(run), name="cluster"))
        tasks.add(asyncio.create_task(self._maintenance(), name="maintenance"))
        try:
            watching = set(tasks)
            while watching:
                done, watching = await asyncio.wait(watching, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if self.stop.is_set():
                        continue
                    task.result()  # a side task crashed: stop the daemon loudly
                    if task.get_name() == "database":
                        continue  # its work is done: the database answered
                    raise RuntimeError(f"{task.get_name()} stopped unexpectedly")
                if self.stop.is_set():
                    break
        finally:
            self.stop.set()
            self.notifier.stopping()
            self.log.info("daemon_stopping", in_flight=run.in_flight)
            for task in tasks:
                if task.get_name() in ("reloader", "database", "accounts", "maintenance"):
                    task.cancel()
            runner_task = next(t for t in tasks if t.get_name() == "runner")
            if not runner_task.done():
                await asyncio.wait({runner_task})
            cancelled = await self._drain(run)
            if self.membership is not None:
                if not self.hurry.is_set():
                    # the account bookkeeping goes out while its leases still fence it, not
                    # after they were given back (it would be refused as stale)
                    await wr.flush()
                await self._leave_cluster()
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

    async def _leave_cluster(self) -> None:
        """A clean stop gives every lease back at once (the others take over within a
        heartbeat, not a TTL)."""
        assert self.membership is not None
        held = len(self.membership.held)
        try:
            await self.membership.leave()
        except errors.StoreError as exc:
            self.log.warning("cluster_leave_failed", message=str(exc)[:300])
            return
        self.log.info("cluster_left", member=self.membership.name, released=held)

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

    def _join_cluster(
        self, st: store_mod.Store, clients: list[graph.GraphClient], run: runner.Runner
    ) -> None:
        c = self.settings.cluster
        member = self.membership or self._membership(st)
        st.fence_holder = member.name
        for client in clients:
            client.permit = member.permit
        run.gate = member.holds
        run.epoch_of = member.epoch
        self.log.info(
            "cluster_joined",
            member=member.name,
            lease_ttl=c.lease_ttl.total_seconds(),
            heartbeat=c.heartbeat.total_seconds(),
        )

    def _wanted(self) -> list[str]:
        """Every account to collect, configured and discovered: the leases to share."""
        if self.roster is not None:
            return self.roster.ids()
        return [t.ig_user_id for t, _ in wiring.targets_of(self.settings)]

    def _held_targets(self) -> wiring.Targets:
        """The accounts this process holds, with their tokens (the roster's, in cluster mode,
        are those it holds already)."""
        if self.roster is not None:
            return self.roster.targets()
        assert self.membership is not None
        held = self.membership.accounts()
        return [t for t in wiring.targets_of(self.settings) if t[0].ig_user_id in held]

    async def _cluster_beat(self, run: runner.Runner) -> None:
        """One heartbeat: renew, balance and claim leases, and apply what changed."""
        async with self._beat_lock:
            await self._cluster_beat_locked(run)

    async def _cluster_beat_locked(self, run: runner.Runner) -> None:
        member = self.membership
        assert member is not None
        names = self.roster
        sources = bool(self.settings.sources)
        if names is not None and sources and self.database_ready:
            try:
                await names.load_shared(member.store)
            except errors.StoreError as exc:
                self.log.warning("discovered_accounts_unread", message=str(exc)[:300])
        try:
            change = await member.beat(self._wanted(), sources=sources)
        except errors.StoreError as exc:
            self.log.warning("cluster_heartbeat_failed", message=str(exc)[:300])
            if not member.valid():
                await run.stop_accounts(sorted(member.lapse()))
                if names is not None:
                    names.stop_listing()
            return
        if names is not None and change.sources_lost:
            names.stop_listing()
        if change.sources_gained or change.gained:
            # list the sources now; renew what a gained account's token needs
            self._roster_wake.set()
        if change.lost:
            self.log.warning("leases_lost", accounts=len(change.lost))
            await run.stop_accounts(sorted(change.lost))
        if change.surplus:
            # stopped here first (their running jobs end and hand over their rows), then given
            # back: never two processes at once
            await run.stop_accounts(sorted(change.surplus))
            try:
                await member.release(sorted(change.surplus))
            except errors.StoreError as exc:
                # not given back: they expire after the TTL instead (already stopped here)
                self.log.warning("leases_release_failed", message=str(exc)[:300])
        tokens_changed = False
        if names is not None:
            # before the first call: Page tokens of discovered accounts, sealed renewed tokens
            tokens_changed = await names.prepare_held(sorted(change.gained))
            await names.keeper.share_pending()
        targets = self._held_targets()
        if (
            change.gained
            or change.lost
            or tokens_changed
            or set(run.accounts) != {t.ig_user_id for t, _ in targets}
        ):
            await run.set_accounts(targets)
        try:
            await self._share_app_pause(member)
        except errors.StoreError as exc:
            # the database went away since the heartbeat: the next one says what holds
            self.log.warning("app_throttle_unshared", message=str(exc)[:300])

    async def _share_app_pause(self, member: cluster.Membership) -> None:
        """An app-level pause seen here pauses every member; one seen elsewhere pauses us."""
        limiter = self.limiter
        if limiter is None:
            return
        shared = await member.store.app_throttle()
        now = self.clock.now()
        mine = limiter.app_paused_until
        if shared is not None and limiter.share_app_pause(shared[0], shared[1]):
            self.log.warning(
                "app_throttle_shared", paused_until=shared[0].isoformat(), reason=shared[1]
            )
        elif mine is not None and mine > now and (shared is None or mine > shared[0]):
            await member.store.set_app_throttle(mine, limiter.app_reason or "", member.name)

    async def _maintenance(self) -> None:
        """Daily: history partitions ahead, months past ``[retention]`` dropped, finished
        months' indexes rebuilt packed (one member of a cluster does it)."""
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), MAINTENANCE_EVERY)
            if self.stop.is_set() or self.store is None or not self.database_ready:
                continue
            if self.membership is not None and not self.membership.leads():
                continue
            retention = self.settings.retention
            try:
                done = await self.store.maintain(
                    self.clock.now(),
                    media_metric=retention.media_metric,
                    account_metric=retention.account_metric,
                )
            except errors.StoreError as exc:
                self.log.warning("maintenance_failed", message=str(exc)[:300])
                continue
            self.log.info("maintenance_done", actions=len(done), partitions=done[:20])

    async def _cluster_loop(self, run: runner.Runner) -> None:
        assert self.membership is not None
        every = self.settings.cluster.heartbeat.total_seconds()
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), every)
            if self.stop.is_set():
                return
            await self._cluster_beat(run)

    async def _await_database(self, run: runner.Runner) -> None:
        """Until the database answers: then check the schema, replay the spool and complete
        the schedules of the accounts that started on story work."""
        while not await self.ensure_database():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), DATABASE_RETRY)
            if self.stop.is_set():
                return
        assert self.writer is not None
        self.log.info("database_available", action="replaying the spool, completing schedules")
        await self.writer.replay()
        await run.seed_pending()
        self.notifier.status(self._status_line())

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
            # in a thread: a file system that does not answer must not freeze the loop
            fresh = await config_mod.load_in_thread(current.source_path)
        except errors.ConfigError as exc:
            self.log.error("config_reload_rejected", problem=str(exc))
            return
        if (problem := config_mod.no_accounts_problem(fresh)) is not None:
            self.log.error("config_reload_rejected", problem=problem)
            return
        from collector import log as log_mod  # noqa: PLC0415

        log_mod.set_secrets(fresh.secrets())
        names = self.roster
        update = roster.Update(changed=False, park={})
        if names is not None:
            names.reconfigure(fresh)
            # sources are listed again on reload (a new one, a changed allow list)
            update = await names.update(self.clock.now(), force=True)
        if self.database_ready:
            try:
                await wiring.prepare(fresh, self.store, self.clock, names)
            except errors.StoreError as exc:
                self.log.error("config_reload_failed", problem=str(exc))
                return
        run = self.runner
        run.apply_plan(plan_mod.Plan.from_settings(fresh))
        self.settings = fresh
        if self.membership is not None:
            await self._cluster_beat(run)  # the accounts to share changed: balance now
        else:
            await run.set_accounts(
                names.targets() if names is not None else wiring.targets_of(fresh)
            )
        await self.park(update)
        if self.web is not None:
            self.web.reconfigure(fresh)
        self.log.info("config_reloaded", accounts=len(run.accounts))


async def run_forever(
    settings: config.Settings,
    *,
    clock: clock_mod.Clock | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """The daemon: collect until SIGTERM/SIGINT; SIGHUP re-reads the config file."""
    return await Daemon(settings, clock=clock, stop=stop).run()


async def run_once(
    settings: config.Settings,
    *,
    clock: clock_mod.Clock | None = None,
    out: TextIO | None = None,
) -> int:
    """One pass over every enabled account: the engine with every job due now, run until
    nothing is due, through the same writer, spool and failure policy as the daemon.

    Returns ``EXIT_OK`` when every account succeeded, ``EXIT_FAILED`` when one did not, and
    ``EXIT_SPOOLED`` when rows are left in the spool because the database was unreachable
    (whatever the accounts did: their rows are safe but not in PostgreSQL yet).
    """
    if not settings.enabled_accounts() and not settings.sources:
        raise errors.ConfigError(
            f"{settings.source_path or 'config'}: no enabled accounts: add an [[accounts]] "
            "or a [[sources]] table (see config/collector.example.toml)"
        )
    shell = Daemon(settings, clock=clock)
    log = shell.log
    st, wr = await shell.open()
    writer_stop = asyncio.Event()
    writer_task = asyncio.create_task(wr.run(writer_stop), name="writer")
    try:
        limiter = wiring.build_limiter(settings)
        async with wiring.opened_logins(settings, st, shell.clock, limiter) as logins:
            run, update = await shell.start_engine(logins, limiter, once=True)
            client = logins["facebook"].client
            assert shell.roster is not None
            targets = shell.roster.targets()
            await run.set_accounts(targets)
            await shell.park(update)
            log.info("pass_started", accounts=len(targets), database_ready=shell.database_ready)
            await run.run_once()
            writer_stop.set()
            await writer_task
            await wr.close()
            verdicts = [s.tally.worst for s in run.accounts.values()]
            log.info(
                "pass_done",
                accounts=len(verdicts),
                failed=sum(v is not models.AccountStatus.OK for v in verdicts),
                api_calls=sum(client.calls.values()),
                round_trips=client.round_trips,
                peak_in_flight=client.peak_in_flight,
                retries=client.retries,
                rows_written=wr.rows_written,
                batches_spooled=wr.batches_spooled,
                spooled_now=wr.spooled_batches,
            )
    finally:
        writer_stop.set()
        if not writer_task.done():
            writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer_task
        await st.close()
    print(runner.summary_table(run), file=out or sys.stderr)
    failed_sources = shell.roster.discoverer.failed if shell.roster is not None else {}
    for name, why in sorted(failed_sources.items()):
        print(f"source {name}: listing failed: {why}", file=out or sys.stderr)
    if wr.spooled:
        print(
            f"rows of this pass are in the spool ({wr.spool.path}): the database was "
            "unreachable; the next run or the daemon writes them",
            file=out or sys.stderr,
        )
        return EXIT_SPOOLED
    ok = all(v is models.AccountStatus.OK for v in verdicts) and not failed_sources
    return EXIT_OK if ok else EXIT_FAILED
