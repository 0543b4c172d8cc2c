"""A hostile Graph API of our own: a proxy to the simulator that misbehaves on demand.

Every request is passed to an upstream simulator unchanged, unless a rule matches it (a regular
expression on the path and query, optionally only for one access token): then the rule's
responder answers instead. Responders serve malformed-but-200 bodies, rewrite the simulator's
answer (a value or a caption made hostile), stream huge bodies, drip slowly or paginate forever.
Healthy accounts go through untouched, so their values can be compared with the simulator's
ground truth while the hostile ones misbehave beside them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web

#: headers of the simulator's answer passed on to the collector
_FORWARDED = ("Content-Type", "X-App-Usage", "X-Business-Use-Case-Usage", "WWW-Authenticate")


@dataclasses.dataclass
class Exchange:
    """One request as a responder sees it, with a way to ask the simulator."""

    request: web.Request
    body: bytes
    token: str | None
    hostile: Hostile

    @property
    def path_qs(self) -> str:
        return self.request.path_qs

    def query(self, name: str) -> str | None:
        return self.request.query.get(name)

    async def upstream(self) -> tuple[int, dict[str, str], bytes]:
        """What the simulator answers to this very request."""
        return await self.hostile.forward(self.request, self.body)


Responder = Callable[[Exchange], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class Rule:
    pattern: re.Pattern[str]
    respond: Responder
    token: str | None = None
    times: int | None = None
    #: requests this rule answered
    hits: int = 0

    def matches(self, path_qs: str, token: str | None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.token is not None and self.token != token:
            return False
        return self.pattern.search(urllib.parse.unquote(path_qs)) is not None


class Hostile:
    """The server: ``await Hostile.start(upstream)``, then ``on(...)`` rules, ``close()``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        #: (path and query, token) of every request, in order
        self.seen: list[tuple[str, str | None]] = []
        #: bytes a streaming responder managed to send before the client went away
        self.bytes_sent: dict[str, int] = {}
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def start(cls, upstream: str) -> Hostile:
        server = cls(upstream)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        socket_server = site._server  # aiohttp exposes the bound port only through the server
        assert isinstance(socket_server, asyncio.base_events.Server)
        port = socket_server.sockets[0].getsockname()[1]
        server.base_url = f"http://127.0.0.1:{port}"
        server._runner = runner
        server._session = aiohttp.ClientSession(auto_decompress=False)
        return server

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def on(
        self,
        pattern: str,
        respond: Responder,
        *,
        token: str | None = None,
        times: int | None = None,
    ) -> Rule:
        """Answer requests matching ``pattern`` (on the unquoted path and query) with
        ``respond``; only those made with ``token`` if given, only ``times`` times if given."""
        rule = Rule(re.compile(pattern), respond, token, times)
        self.rules.append(rule)
        return rule

    def requests_to(self, pattern: str) -> list[str]:
        found = re.compile(pattern)
        return [p for p, _ in self.seen if found.search(urllib.parse.unquote(p))]

    async def forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            data = await resp.read()
            kept = {k: resp.headers[k] for k in _FORWARDED if k in resp.headers}
            return resp.status, kept, data

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        token = _token_of(request, body)
        self.seen.append((request.path_qs, token))
        exchange = Exchange(request, body, token, self)
        for rule in self.rules:
            if rule.matches(request.path_qs, token):
                rule.hits += 1
                return await rule.respond(exchange)
        status, headers, data = await self.forward(request, body)
        return web.Response(status=status, body=data, headers=headers)


def _token_of(request: web.Request, body: bytes) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :]
    if body and request.content_type == "application/x-www-form-urlencoded":
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        values = form.get("access_token")
        if values:
            return values[0]
    return None


# --------------------------------------------------------------------------- responders


def _dumps(value: Any) -> bytes:
    # ensure_ascii: a lone surrogate travels as the escape "\ud800", as valid JSON does
    return json.dumps(value, allow_nan=True, ensure_ascii=True).encode()


def serve(body: Any, *, status: int = 200) -> Responder:
    """Always this body: bytes as they are, anything else as JSON (NaN allowed)."""
    data = body if isinstance(body, bytes) else _dumps(body)

    async def respond(ex: Exchange) -> web.StreamResponse:
        return web.Response(status=status, body=data, content_type="application/json")

    return respond


def deep_nesting(depth: int = 200_000) -> Responder:
    """An array nested ``depth`` deep: valid JSON that no recursive decoder survives."""
    return serve(b"[" * depth + b"]" * depth)


def rewrite(change: Callable[[Any], Any]) -> Responder:
    """The simulator's answer, its JSON passed through ``change`` (which may edit in place
    and return None). Batch answers: ``change`` sees each operation's decoded body."""

    async def respond(ex: Exchange) -> web.StreamResponse:
        status, headers, data = await ex.upstream()
        doc = json.loads(data)
        if ex.request.method == "POST" and isinstance(doc, list):
            for element in doc:
                if isinstance(element, dict) and isinstance(element.get("body"), str):
                    inner = json.loads(element["body"])
                    changed = change(inner)
                    element["body"] = (_dumps(inner if changed is None else changed)).decode()
        else:
            changed = change(doc)
            doc = doc if changed is None else changed
        headers.pop("Content-Type", None)
        return web.Response(
            status=status, body=_dumps(doc), headers=headers, content_type="application/json"
        )

    return respond


def huge(total: int, *, declare_length: bool = False, chunk: int = 64 * 1024) -> Responder:
    """A ``total``-byte body streamed in chunks (chunked encoding unless ``declare_length``);
    records in ``bytes_sent`` how much left before the client hung up."""

    async def respond(ex: Exchange) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        if declare_length:
            resp.content_length = total
        await resp.prepare(ex.request)
        key = ex.request.path
        sent = 0
        piece = b'{"data": "' + b"x" * chunk
        try:
            while sent < total:
                data = piece[: min(len(piece), total - sent)]
                await resp.write(data)
                sent += len(data)
                ex.hostile.bytes_sent[key] = sent
        except (ConnectionError, RuntimeError):
            return resp  # the client stopped reading: what we wanted
        await resp.write_eof()
        return resp

    return respond


def drip(body: bytes, *, every: float) -> Responder:
    """``body`` one byte at a time, ``every`` seconds apart (a slow loris of a server)."""

    async def respond(ex: Exchange) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(ex.request)
        try:
            for byte in body:
                await resp.write(bytes([byte]))
                await asyncio.sleep(every)
        except (ConnectionError, RuntimeError):
            return resp
        await resp.write_eof()
        return resp

    return respond


def endless_pages(cursors: Callable[[int], str]) -> Responder:
    """The simulator's first page again and again, each time with ``paging.next`` and the
    cursor ``cursors(n)`` for the n-th request: a unique one (endless) or a repeating one
    (a cycle)."""
    count = iter(range(1, 10**9))

    async def respond(ex: Exchange) -> web.StreamResponse:
        upstream = urllib.parse.urlsplit(ex.request.path_qs)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(upstream.query) if k != "after"]
        assert ex.hostile._session is not None
        headers = {k: v for k, v in ex.request.headers.items() if k.lower() not in ("host",)}
        url = f"{ex.hostile.upstream}{upstream.path}?{urllib.parse.urlencode(query)}"
        async with ex.hostile._session.get(url, headers=headers) as resp:
            doc = json.loads(await resp.read())
        n = next(count)
        cursor = cursors(n)
        doc["paging"] = {
            "cursors": {"before": "b", "after": cursor},
            "next": f"{ex.hostile.base_url}{upstream.path}?after={cursor}",
        }
        return web.Response(body=_dumps(doc), content_type="application/json")

    return respond


def numbered(n: int) -> str:
    return f"page-{n}"


def cycle_of(length: int) -> Callable[[int], str]:
    return lambda n: f"loop-{n % length}"


def walk(doc: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside ``doc``, depth first (for rewrites)."""
    if isinstance(doc, dict):
        yield doc
        for value in doc.values():
            yield from walk(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from walk(value)
