"""The aiohttp application: HTTP in front of ``graph.Graph``, with latency and transport faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import struct
from typing import Any

from aiohttp import web

from collector.simulator import faults, graph

GRAPH_KEY = web.AppKey("graph", graph.Graph)
SETTINGS_KEY = web.AppKey("settings", dict[str, float])
RNG_KEY = web.AppKey("rng", random.Random)
HOST_KEY = web.AppKey("host", str)

HTML_502 = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Error</title></head>'
    "<body><h1>502 Bad Gateway</h1><p>Sorry, something went wrong. We're working on getting "
    "this fixed as soon as we can.</p></body></html>\n"
)


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), like a crashed proxy."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _token(request: web.Request, params: dict[str, str]) -> str | None:
    token = params.pop("access_token", None)
    if token:
        return token
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "oauth") and value.strip():
        return value.strip()
    return None


async def handle(request: web.Request) -> web.StreamResponse:
    """Every request: latency, faults, then the Graph dispatcher (the requests in flight per
    account are counted: a collector must never have two at once for one account)."""
    g = request.app[GRAPH_KEY]
    header = request.headers.get("Authorization", "")
    acct = g.world.account_by_token(header.partition(" ")[2].strip()) if header else None
    account_id = acct.ig_user_id if acct is not None else None
    g.stats.enter(account_id)
    try:
        return await _handle(request)
    finally:
        g.stats.leave(account_id)


async def _handle(request: web.Request) -> web.StreamResponse:
    g = request.app[GRAPH_KEY]
    settings = request.app[SETTINGS_KEY]
    rng = request.app[RNG_KEY]
    delay = settings["latency"] + settings["latency_jitter"] * rng.random()
    if delay > 0:
        await asyncio.sleep(delay)
    params = dict(request.query.items())
    if request.method == "POST":
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    token = _token(request, params)
    version, _, rest = request.path.lstrip("/").partition("/")
    if not re.fullmatch(r"v\d+\.\d+", version) and request.app[HOST_KEY] == "instagram":
        # graph.instagram.com also answers unversioned paths (refresh_access_token)
        version, rest = "", request.path.lstrip("/")
    call = graph.Call(
        method=request.method,
        version=version,
        path=rest,
        params=params,
        token=token,
        base_url=f"{request.scheme}://{request.host}",
        host=request.app[HOST_KEY],
    )
    fault = g.faults.pick(request.path_qs)
    if fault == "slow":
        await asyncio.sleep(settings["slow_delay"])
        fault = None
    if fault is None or fault in faults.ERROR_KINDS:
        reply = g.handle(call, fault=fault)
        return web.Response(
            body=_dumps(reply.body),
            status=reply.status,
            headers=reply.headers,
            content_type="application/json",
            charset="UTF-8",
        )
    if fault == "timeout":
        g.record_transport_fault(call, fault, 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(g.faults.released.wait(), settings["hang_seconds"])
        _reset(request)
        return web.Response(status=504)
    if fault == "reset":
        g.record_transport_fault(call, fault, 0)
        _reset(request)
        return web.Response(status=500)
    if fault == "truncated":
        reply = g.handle(call, commit=False, label=fault)
        raw = _dumps(reply.body)
        return web.Response(
            body=raw[: max(1, len(raw) // 2)],
            status=reply.status,
            headers=reply.headers,
            content_type="application/json",
            charset="UTF-8",
        )
    if fault == "nonjson":
        g.record_transport_fault(call, fault, 200)
        return web.Response(
            text="Sorry, something went wrong.", content_type="application/json", charset="UTF-8"
        )
    g.record_transport_fault(call, fault, 502)
    return web.Response(text=HTML_502, status=502, content_type="text/html", charset="utf-8")


def make_app(g: graph.Graph, host: str = "facebook") -> web.Application:
    """The aiohttp application serving ``g`` as one host: "facebook" (graph.facebook.com) or
    "instagram" (graph.instagram.com, the Instagram API with Instagram Login)."""
    cfg = g.config
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[GRAPH_KEY] = g
    app[HOST_KEY] = host
    app[SETTINGS_KEY] = {
        "latency": cfg.latency,
        "latency_jitter": cfg.latency_jitter,
        "slow_delay": cfg.slow_delay,
        "hang_seconds": cfg.hang_seconds,
    }
    app[RNG_KEY] = random.Random(f"latency:{cfg.seed}")  # noqa: S311 - jitter, not crypto
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
