"""Run the simulator in-process: ``async with server.running(cfg, clock=clock) as sim``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

from collector import clock as clock_mod
from collector.simulator import app, budget, faults, graph, stats, webhooks, world


class Simulator:
    """A running simulator: its URL, world, statistics, faults and webhook sender."""

    def __init__(self, config: world.WorldConfig, clock: clock_mod.Clock) -> None:
        self.config = config
        self.clock = clock
        self.world = world.World(config, clock)
        self.stats = stats.Stats(config.log_limit)
        self.budgets = budget.Budgets(config)
        self.faults = faults.Faults(config.fault_rates, config.seed)
        self.graph = graph.Graph(self.world, self.stats, self.budgets, self.faults)
        self.webhooks = webhooks.Webhooks(self.world, self.stats)
        self.base_url = ""
        #: the instagram host (graph.instagram.com) on a port of its own
        self.instagram_base_url = ""
        self.host = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._instagram_runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._webhook_task: asyncio.Task[None] | None = None

    async def _serve(self, which: str, host: str, port: int) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(
            app.make_app(self.graph, which),
            handler_cancellation=True,
            shutdown_timeout=1.0,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        server = site._server  # aiohttp exposes the bound port only through the server
        assert isinstance(server, asyncio.base_events.Server)
        return runner, int(server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind and serve (port 0 picks a free port); the instagram host gets a port of its own."""
        self._runner, self.port = await self._serve("facebook", host, port)
        try:
            self._instagram_runner, instagram_port = await self._serve("instagram", host, 0)
        except OSError:
            await self._runner.cleanup()
            raise
        self.host = host
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{self.port}"
        self.instagram_base_url = f"http://{shown}:{instagram_port}"
        interval = self.config.webhook_poll_interval
        if self.config.webhook_url is not None and interval is not None:
            self._webhook_task = asyncio.create_task(
                self.webhooks.run(self._stop, interval), name="simulator-webhooks"
            )

    async def close(self) -> None:
        """Stop serving; hanging responses are released at once."""
        self._stop.set()
        self.faults.released.set()
        if self._webhook_task is not None:
            await self._webhook_task
            self._webhook_task = None
        await self.webhooks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._instagram_runner is not None:
            await self._instagram_runner.cleanup()
            self._instagram_runner = None

    def config_toml(self, api_version: str = "v25.0") -> str:
        """A ready-to-use collector configuration for this world."""
        lines = [
            "[graph]",
            f"base_url = {json.dumps(self.base_url)}",
            f"instagram_base_url = {json.dumps(self.instagram_base_url)}",
            f"api_version = {json.dumps(api_version)}",
        ]
        if self.world.app_secret is not None:
            lines.append(f"app_secret = {json.dumps(self.world.app_secret)}")
        for acct in self.world.accounts:
            if acct.gone:
                continue
            lines += [
                "",
                "[[accounts]]",
                f"name = {json.dumps(acct.username)}",
                f"ig_user_id = {json.dumps(acct.ig_user_id)}",
                f"token = {json.dumps(acct.token)}",
            ]
            if acct.login == "instagram":
                lines.append('login = "instagram"')
        return "\n".join(lines) + "\n"


async def start(
    config: world.WorldConfig,
    *,
    clock: clock_mod.Clock | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Simulator:
    """Build a world and serve it; call ``await sim.close()`` when done."""
    sim = Simulator(config, clock or clock_mod.SystemClock())
    await sim.start(host, port)
    return sim


@contextlib.asynccontextmanager
async def running(
    config: world.WorldConfig,
    *,
    clock: clock_mod.Clock | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[Simulator]:
    """Serve a simulated world for the duration of the block."""
    sim = await start(config, clock=clock, host=host, port=port)
    try:
        yield sim
    finally:
        await sim.close()
