"""The collector's small HTTP server: ``/metrics``, ``/healthz`` and the story_insights webhook.

One ``aiohttp.web.Application`` started and stopped by the daemon. The webhook receiver checks
Meta's ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the app secret) in constant
time before parsing anything, and answers an error whenever the records could not be handed on,
so that Meta delivers again (redeliveries are idempotent, see ``collector.webhook``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import pydantic
import structlog
from aiohttp import web

from collector import config, errors, models, telemetry, webhook

HealthStatus = Literal["ok", "degraded", "fail"]

#: the daemon's write path for webhook records (the store, or its write buffer)
Sink = Callable[[models.Batch], Awaitable[None]]

SIGNATURE_HEADER = "X-Hub-Signature-256"
DEFAULT_WEBHOOK_PATH = "/webhooks"

#: a loop this late at running a timer is not doing its job any more
LOOP_LAG_FAIL = 10.0

_BUSY_TEXT = b"too many connections: retry later\n"
#: the whole answer to a connection beyond ``[web] max_connections`` (no handler sees it)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)


@dataclasses.dataclass(frozen=True, slots=True)
class Health:
    """What ``/healthz`` reports; 503 when ``status`` is ``fail``."""

    status: HealthStatus
    database_up: bool
    loop_lag_s: float | None = None
    accounts: Mapping[str, int] = dataclasses.field(default_factory=dict)
    spool_bytes: int = 0
    spool_batches: int = 0
    last_job_at: datetime | None = None
    reasons: tuple[str, ...] = ()

    @classmethod
    def assess(
        cls,
        *,
        database_up: bool,
        loop_lag_s: float | None = None,
        accounts: Mapping[str, int] | None = None,
        spool_bytes: int = 0,
        spool_batches: int = 0,
        last_job_at: datetime | None = None,
        loop_lag_fail: float = LOOP_LAG_FAIL,
        spool_refusing: bool = False,
        rows_in_memory: int = 0,
    ) -> Health:
        """The default verdict: fail on a stuck loop; degraded on anything an operator should see.

        A database outage only degrades: batches go to the spool and nothing is lost yet.
        """
        accounts = dict(accounts or {})
        failing: list[str] = []
        degraded: list[str] = []
        if loop_lag_s is not None and loop_lag_s > loop_lag_fail:
            failing.append(f"event loop {loop_lag_s:.1f}s late")
        if not database_up:
            degraded.append("database unreachable")
        if spool_batches:
            degraded.append(f"{spool_batches} batches spooled")
        if spool_refusing:
            degraded.append(f"the spool refuses rows (disk full?): {rows_in_memory} rows in memory")
        for name in ("unhealthy", "failing", "throttled"):
            if accounts.get(name):
                degraded.append(f"{accounts[name]} accounts {name}")
        status: HealthStatus = "fail" if failing else "degraded" if degraded else "ok"
        return cls(
            status=status,
            database_up=database_up,
            loop_lag_s=loop_lag_s,
            accounts=accounts,
            spool_bytes=spool_bytes,
            spool_batches=spool_batches,
            last_job_at=last_job_at,
            reasons=tuple(failing + degraded),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "database_up": self.database_up,
            "loop_lag_seconds": self.loop_lag_s,
            "accounts": dict(self.accounts),
            "spool": {"bytes": self.spool_bytes, "batches": self.spool_batches},
            "last_job_at": None if self.last_job_at is None else self.last_job_at.isoformat(),
            "reasons": list(self.reasons),
        }


#: called on every ``/healthz`` request; may be a coroutine function
HealthProvider = Callable[[], Health | Awaitable[Health]]


def _secret(value: pydantic.SecretStr | None) -> bytes | None:
    if value is None or not value.get_secret_value():
        return None
    return value.get_secret_value().encode()


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class _Rejected(Exception):
    """A webhook request refused; ``status`` is the HTTP answer, the message the log reason."""

    def __init__(self, status: int, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.outcome = outcome
        self.reason = reason


class _Connection(asyncio.Protocol):
    """One accepted connection: admitted by the site's cap, then handed to aiohttp's own
    protocol (every callback forwarded), or answered 503 and closed."""

    def __init__(self, site: _CappedSite) -> None:
        self._site = site
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._site.admit():
            typing.cast(asyncio.Transport, transport).write(_BUSY)
            transport.close()
            return
        self._inner = self._site.handler()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._site.open -= 1
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class _CappedSite(web.BaseSite):
    """A TCP site with a cap on connections open at once.

    aiohttp has no such option, so this site listens with its own protocol factory, which
    counts connections and answers the one over ``limit()`` with a 503 before aiohttp sees it.
    """

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, limit: Callable[[], int], log: Any
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limit = limit
        self._log = log
        self._saturated = False
        #: connections open now (admitted ones)
        self.open = 0
        #: connections answered 503 since the start
        self.refused = 0

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    def handler(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None  # BaseSite refuses to exist before runner.setup()
        return server()

    def admit(self) -> bool:
        limit = self._limit()
        if self.open >= limit:
            self.refused += 1
            if not self._saturated:  # one line per episode, not one per connection
                self._saturated = True
                self._log.warning(
                    "web_connections_saturated",
                    max_connections=limit,
                    reason="connections beyond web.max_connections are answered 503",
                )
            return False
        self._saturated = False
        self.open += 1
        return True

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self._host, self._port, backlog=self._backlog
        )


class WebServer:
    """``await start()`` binds ``[web] host/port`` (port 0: any free port, see :attr:`port`)."""

    def __init__(
        self,
        settings: config.Settings,
        *,
        telemetry: telemetry.Telemetry,
        health: HealthProvider,
        sink: Sink,
        webhook_path: str = DEFAULT_WEBHOOK_PATH,
        sink_timeout: float = 10.0,
        log: Any = None,
    ) -> None:
        self.telemetry = telemetry
        self._health = health
        self._sink = sink
        self._sink_timeout = sink_timeout
        self._log = log if log is not None else structlog.get_logger()
        self._host = settings.web.host
        self._requested_port = settings.web.port
        self._runner: web.AppRunner | None = None
        self._site: _CappedSite | None = None
        self._port: int | None = None
        self._header_timeout = settings.web.header_timeout
        self.webhook_path = webhook_path
        self.reconfigure(settings)
        self.app = web.Application(client_max_size=self._max_body)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get(webhook_path, self._verify)
        self.app.router.add_post(webhook_path, self._notification)

    def reconfigure(self, settings: config.Settings) -> None:
        """Take the secrets and the body limit of a reloaded config (host/port need a restart)."""
        self._verify_token = _secret(settings.web.webhook_verify_token)
        self._app_secret = _secret(settings.graph.app_secret)
        self._max_body = int(settings.web.webhook_max_body)
        self._body_timeout = settings.web.body_timeout.total_seconds()
        self._max_connections = settings.web.max_connections
        if self._runner is not None and (
            settings.web.host != self._host
            or settings.web.port != self._requested_port
            or settings.web.header_timeout != self._header_timeout
        ):
            self._log.warning(
                "web_restart_needed",
                reason="web.host, web.port or web.header_timeout changed: restart to apply",
            )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # no access log: Prometheus scrapes every few seconds, and the webhook logs its own line.
        # aiohttp's keep-alive timer runs from the moment a connection opens and again after
        # each answer, and closes it if no whole request head has arrived by then: with
        # keepalive_timeout = header_timeout that is the header read timeout (idle kept-alive
        # connections get the same time). A body a handler did not read is drained for at most
        # lingering_time, then the connection is closed; the webhook reads its own body under
        # body_timeout (see _read).
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self._header_timeout.total_seconds(),
            lingering_time=self._body_timeout,
        )
        await runner.setup()
        try:
            site = _CappedSite(
                runner,
                self._host,
                self._requested_port,
                limit=lambda: self._max_connections,
                log=self._log,
            )
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise errors.ConfigError(
                f"web.port: cannot listen on {self._host}:{self._requested_port} "
                f"({exc.strerror or exc}): another process holds it? set [web] port to a free "
                "port (0: any), or [web] enabled = false"
            ) from None
        self._runner = runner
        self._site = site
        self._port = runner.addresses[0][1]
        self._log.info("web_started", host=self._host, port=self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    @property
    def port(self) -> int:
        """The bound port (known after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the web server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        host = self._host if ":" not in self._host else f"[{self._host}]"
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ handlers

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.telemetry.render(), headers={"Content-Type": telemetry.CONTENT_TYPE}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            found = self._health()
            health = await found if inspect.isawaitable(found) else found
        except Exception as exc:
            self._log.exception("healthz_failed")
            body = {"status": "fail", "reasons": [f"health check raised {type(exc).__name__}"]}
            return web.json_response(body, status=503)
        assert isinstance(health, Health)
        return web.json_response(health.as_json(), status=503 if health.status == "fail" else 200)

    async def _verify(self, request: web.Request) -> web.Response:
        """Meta's subscription handshake: echo ``hub.challenge`` if the verify token matches."""
        if self._verify_token is None:
            self._log.warning(
                "webhook_rejected",
                reason="verification refused: no web.webhook_verify_token configured",
            )
            return web.Response(status=403, text="no verify token configured")
        mode = request.query.get("hub.mode", "")
        token = request.query.get("hub.verify_token", "").encode()
        challenge = request.query.get("hub.challenge", "")
        if mode != "subscribe" or not hmac.compare_digest(token, self._verify_token):
            self._log.warning("webhook_rejected", reason="verification: wrong mode or token")
            return web.Response(status=403, text="forbidden")
        self._log.info("webhook_verified")
        return web.Response(text=challenge, content_type="text/plain")

    async def _notification(self, request: web.Request) -> web.Response:
        try:
            batch = await self._receive(request)
        except _Rejected as exc:
            self.telemetry.webhook(exc.outcome)
            log = self._log.warning if exc.status < 500 else self._log.error
            log("webhook_rejected", reason=exc.reason, status=exc.status, remote=request.remote)
            return web.Response(status=exc.status, text=exc.outcome)
        if not len(batch):
            self.telemetry.webhook("ignored")
            return web.Response(text="ok")
        self.telemetry.webhook("accepted")
        self._log.info(
            "webhook_received",
            stories=len(batch.media),
            values=len(batch.media_metrics),
            ig_user_ids=sorted({m.ig_user_id for m in batch.media}),
        )
        return web.Response(text="ok")

    async def _receive(self, request: web.Request) -> models.Batch:
        """Check, read and hand on one notification; raises :class:`_Rejected`."""
        if self._app_secret is None:
            raise _Rejected(
                403,
                "no_secret",
                "notifications refused: no graph.app_secret configured to check signatures",
            )
        if request.content_length is not None and request.content_length > self._max_body:
            raise _Rejected(
                413,
                "too_large",
                f"body of {request.content_length} bytes exceeds web.webhook_max_body "
                f"({self._max_body})",
            )
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            raise _Rejected(403, "no_signature", f"no {SIGNATURE_HEADER} header")
        body = await self._read(request)
        expected = signature(self._app_secret, body).encode()
        # latin-1 never fails on a header (aiohttp decoded it as such); a mismatch is a mismatch
        given = header.strip().lower().encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected):
            raise _Rejected(403, "bad_signature", f"{SIGNATURE_HEADER} does not match the body")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise _Rejected(400, "bad_json", "signed body is not JSON") from None
        batch = webhook.to_batch(payload, log=self._log)
        if len(batch):
            try:
                await asyncio.wait_for(self._sink(batch), self._sink_timeout)
            except Exception as exc:
                # an error answer makes Meta deliver again later: nothing is lost
                raise _Rejected(
                    503, "sink_failed", f"records not stored: {type(exc).__name__}: {exc}"
                ) from None
        return batch

    async def _read(self, request: web.Request) -> bytes:
        """The raw body, refused past the limit without reading the rest (chunked bodies too),
        and refused when it does not arrive within ``web.body_timeout`` (a slow drip)."""
        body = bytearray()
        try:
            async with asyncio.timeout(self._body_timeout):
                async for chunk in request.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > self._max_body:
                        raise _Rejected(
                            413,
                            "too_large",
                            f"body exceeds web.webhook_max_body ({self._max_body})",
                        )
        except ConnectionError:
            # the client went away mid-body: nothing to answer, and not a server error
            raise _Rejected(400, "disconnected", f"client left after {len(body)} bytes") from None
        except TimeoutError:
            raise _Rejected(
                408,
                "body_timeout",
                f"body not received within web.body_timeout ({self._body_timeout:g}s): "
                f"{len(body)} bytes came",
            ) from None
        return bytes(body)
