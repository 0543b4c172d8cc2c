"""The Graph API simulator in its own process, reporting its counters when it stops.

Usage: ``python bench/simhost.py [the flags of python -m collector simulate]``. It serves
exactly what ``python -m collector simulate`` serves (same flags, same world, same printed
config) and, on SIGTERM, prints one line ``# stats {json}`` to stdout: API calls by kind
(``total_requests``: a batch counts once for itself and once per operation, as Meta meters
it), HTTP round trips (``round_trips``: a batch is one), operations inside batches, batches
by what they carried (count, operations, largest), requests by status, the peak number of
HTTP requests in flight inside the server, and its own CPU seconds.
SIGUSR1 prints the same line without stopping (counters are cumulative; the in-flight peak
restarts at each report). The CLI has no way to report its counters yet, which is why the
benchmarks use this wrapper.
"""

from __future__ import annotations

import asyncio
import collections
import json
import resource
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from collector import clock as clock_mod
from collector.simulator import app as app_mod
from collector.simulator import cli, server

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gauge:
    """Requests inside the server right now, and the most there ever were."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        #: HTTP requests that reached the application (a batch is one): the round trips.
        self.http_requests = 0
        self.by_status: collections.Counter[int] = collections.Counter()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.now += 1
        self.http_requests += 1
        self.peak = max(self.peak, self.now)
        try:
            resp = await handler(request)
            self.by_status[resp.status] += 1
            return resp
        finally:
            self.now -= 1


def batch_contents(requests: Iterable[Any]) -> dict[str, dict[str, int]]:
    """Batches by what they carried ("media_insights", "user_insights", or several kinds
    joined by "+"): how many, their operations, the largest. A batch's operations are logged
    one after another just before the batch itself (the simulator answers a batch
    synchronously), which is how they are told apart."""
    inside: list[str] = []
    batches: collections.Counter[str] = collections.Counter()
    ops: collections.Counter[str] = collections.Counter()
    largest: dict[str, int] = {}
    for rec in requests:
        if rec.in_batch:
            inside.append(rec.kind)
        elif rec.kind == "batch":
            content = "+".join(sorted(set(inside))) or "empty"
            batches[content] += 1
            ops[content] += len(inside)
            largest[content] = max(largest.get(content, 0), len(inside))
            inside = []
    return {
        "batches_by_content": dict(batches),
        "batch_ops_by_content": dict(ops),
        "batch_max_by_content": largest,
    }


def main(argv: list[str]) -> int:
    parser = cli.build_parser()
    parser.prog = "bench/simhost.py"
    args = parser.parse_args(argv)
    config = cli.config_from_args(parser, args)
    gauge = Gauge()
    plain_make_app = app_mod.make_app

    def make_app(g: app_mod.graph.Graph, host: str = "facebook") -> web.Application:
        application = plain_make_app(g, host)
        application.middlewares.append(gauge.middleware)
        return application

    app_mod.make_app = make_app  # the one seam: count what reaches the server

    def report(sim: server.Simulator) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        st = sim.stats
        # Story and post insights share one endpoint kind; the world knows which object is which.
        # Operations inside a batch are metered calls too (Meta counts each), but they share the
        # batch's one HTTP round trip: ``in_batch`` records are operations, kind "batch" the
        # round trip that carried them.
        objects: collections.Counter[str] = collections.Counter()
        batched: collections.Counter[str] = collections.Counter()
        for rec in st.requests:
            if rec.in_batch:
                batched[rec.kind] += 1
            if rec.kind == "media_insights":
                media_id = next((p for p in rec.path.split("/") if p.isdigit()), "")
                media = sim.world.media(media_id)
                obj = "story" if media is not None and media.is_story else "media"
                objects[obj] += 1
                if rec.in_batch:
                    objects[obj + "_in_batch"] += 1
        record = {
            "total_requests": st.total_requests,
            "round_trips": gauge.http_requests,
            "batch_ops": sum(batched.values()),
            "batch_ops_by_kind": dict(batched),
            **batch_contents(st.requests),
            "calls_by_kind": dict(st.calls_by_kind),
            "errors_by_class": dict(st.errors_by_class),
            "by_status": {str(k): v for k, v in gauge.by_status.items()},
            "peak_in_flight": gauge.peak,
            "insights_calls_by_object": dict(objects),
            "logged_requests": len(st.requests),
            "served_values": len(st.served),
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "maxrss_mb": usage.ru_maxrss / 1024,
        }
        gauge.peak = gauge.now
        print("# stats " + json.dumps(record), flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sim = await server.start(
            config, clock=clock_mod.SystemClock(), host=args.host, port=args.port
        )
        loop.add_signal_handler(signal.SIGUSR1, report, sim)
        try:
            print(f"# Graph API simulator listening on {sim.base_url}", flush=True)
            print("# collector config for this world:")
            print(sim.config_toml(args.api_version), flush=True)
            await stop.wait()
        finally:
            await sim.close()
            report(sim)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
