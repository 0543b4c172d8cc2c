"""The Graph API client: one HTTP session, typed errors, usage headers, retries, pagination.

No scheduling and no SQL here. The access token travels in the ``Authorization`` header, so the
URLs we build (and anything that might print them) never contain it; Meta's ``paging.next``
links, which embed the token, are never followed or kept: we page with the ``after`` cursor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import random
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from collector import clock as clock_mod
from collector import errors, ratelimit

ParamValue = str | int | float | Sequence[str]
Sleep = Callable[[float], Awaitable[None]]
CallHook = Callable[[str, str, float], None]

_ID_SEGMENT = re.compile(r"^\d+$")


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """A successful answer: the decoded JSON body and the usage it reported."""

    body: Any
    usage: ratelimit.Usage
    status: int


@dataclasses.dataclass(frozen=True, slots=True)
class BatchOp:
    """One GET inside a batch request."""

    path: str
    params: Mapping[str, ParamValue]
    metrics: Sequence[str] = ()


#: one batch answer: the decoded body, or the error that operation got
BatchResult = Any | errors.GraphError

MAX_BATCH = 50


@dataclasses.dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``debug_token`` says about a token."""

    is_valid: bool
    type: str | None
    app_id: str | None
    user_id: str | None
    expires_at: datetime | None  # None: never expires (Meta sends 0)
    data_access_expires_at: datetime | None
    scopes: tuple[str, ...]
    error: str | None


def appsecret_proof(token: str, app_secret: str) -> str:
    """``hex(HMAC-SHA256(key=app_secret, msg=token))``."""
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def endpoint_of(path: str) -> str:
    """A low-cardinality label for a path: ids become ``{id}`` (for logs and metrics)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts:
        return "batch"
    return "/".join("{id}" if _ID_SEGMENT.match(p) else p for p in parts)


def _encode(value: ParamValue) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return ",".join(value)


class GraphClient:
    """Calls the Graph API for many accounts through one ``aiohttp.ClientSession``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_version: str,
        app_secret: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_retries: int = 4,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
        clock: clock_mod.Clock | None = None,
        limiter: ratelimit.Limiter | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        on_call: CallHook | None = None,
        max_in_flight: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self._app_secret = app_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self.max_retries = max_retries
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.clock: clock_mod.Clock = clock or clock_mod.SystemClock()
        self.limiter = limiter or ratelimit.Limiter()
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311  (backoff jitter, not cryptography)
        self._on_call = on_call
        self._max_connections = max(max_in_flight, 1)
        #: bounds the requests in flight across all accounts
        self._slots = asyncio.Semaphore(max(max_in_flight, 1))
        self._session: aiohttp.ClientSession | None = None
        #: calls by (endpoint, outcome) since start
        self.calls: Counter[tuple[str, str]] = Counter()
        self.retries = 0
        #: HTTP requests sent (a batch is one, though each of its operations is a call)
        self.round_trips = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    async def __aenter__(self) -> GraphClient:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=connector,
                headers={"User-Agent": "instagram-insights-collector"},
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ requests

    async def get(
        self,
        path: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        token: str,
        account: str | None,
        metrics: Sequence[str] | None = None,
        versioned: bool = True,
    ) -> Response:
        """GET ``/{version}/{path}``; transient failures are retried, others raised typed.

        ``metrics`` are the metric names in request order, to resolve "metric[N]" errors;
        ``versioned=False`` calls ``/{path}`` (Instagram Login's ``refresh_access_token``).
        """
        query = {k: _encode(v) for k, v in (params or {}).items()}
        if self._app_secret:
            query["appsecret_proof"] = appsecret_proof(token, self._app_secret)
        headers = {"Authorization": f"Bearer {token}"}
        return await self._with_retries(
            "GET",
            path,
            query,
            None,
            headers,
            account=account,
            metrics=metrics,
            versioned=versioned,
        )

    async def _with_retries(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        form: dict[str, str] | None,
        headers: dict[str, str],
        *,
        account: str | None,
        metrics: Sequence[str] | None,
        calls: int = 1,
        versioned: bool = True,
    ) -> Response:
        attempt = 0
        while True:
            blocked = self.limiter.blocked_until(account, self.clock.now())
            if blocked is not None:
                # Never call a throttled account or app: the caller decides what to do instead.
                app_wide = self.limiter.app_paused_until == blocked
                cls = errors.AppThrottled if app_wide else errors.AccountThrottled
                raise cls(
                    f"paused by the rate limiter until {blocked.isoformat()}",
                    retry_after=(blocked - self.clock.now()).total_seconds(),
                )
            try:
                async with self._slots:
                    return await self._request(
                        method,
                        path,
                        query,
                        form,
                        headers,
                        account=account,
                        metrics=metrics,
                        calls=calls,
                        versioned=versioned,
                    )
            except errors.TransientError:
                if attempt >= self.max_retries:
                    raise
                attempt += 1
                self.retries += 1
                await self._sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with full jitter."""
        ceiling = min(self.retry_max, self.retry_base * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling) if ceiling > 0 else 0.0

    async def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        form: dict[str, str] | None,
        headers: dict[str, str],
        *,
        account: str | None,
        metrics: Sequence[str] | None,
        calls: int = 1,
        versioned: bool = True,
    ) -> Response:
        session = self._open()
        prefix = f"{self.base_url}/{self.api_version}" if versioned else self.base_url
        url = f"{prefix}/{path.lstrip('/')}"
        endpoint = endpoint_of(path)
        started = time.monotonic()
        self.in_flight += 1
        self.round_trips += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        outcome = "ok"
        try:
            try:
                async with session.request(
                    method, url, params=query, data=form, headers=headers
                ) as resp:
                    status = resp.status
                    raw = await resp.read()
                    usage = ratelimit.parse_usage(resp.headers)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                outcome = "unreachable"
                # ``from None``: aiohttp's exceptions can carry the URL with its query string.
                raise errors.Unreachable(
                    f"{method} {endpoint}: {type(exc).__name__}" + _timeout_hint(exc)
                ) from None
            self.limiter.observe(account, usage, self.clock.now(), calls=calls)
            try:
                body = json.loads(raw)
            except ValueError:
                outcome = "malformed"
                if status >= 500:
                    raise errors.TransientError(
                        f"{method} {endpoint}: HTTP {status} with a non-JSON body",
                        http_status=status,
                    ) from None
                raise errors.MalformedResponse(
                    f"{method} {endpoint}: HTTP {status} with a body that is not JSON "
                    f"({len(raw)} bytes)",
                    http_status=status,
                ) from None
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                failure = errors.classify(
                    status,
                    error,
                    requested_metrics=list(metrics or []),
                    retry_after=usage.regain_seconds or None,
                )
                outcome = type(failure).__name__
                self.limiter.observe_error(account, failure, self.clock.now())
                raise failure
            if status >= 400:
                outcome = "http_error"
                cls = errors.TransientError if status >= 500 else errors.InvalidRequest
                raise cls(f"{method} {endpoint}: HTTP {status} without an error body")
            return Response(body=body, usage=usage, status=status)
        finally:
            self.in_flight -= 1
            self.calls[(endpoint, outcome)] += 1
            if self._on_call is not None:
                self._on_call(endpoint, outcome, time.monotonic() - started)

    async def pages(
        self,
        path: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        token: str,
        account: str | None,
        max_pages: int | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the ``data`` list of each page, following ``paging.cursors.after``."""
        query: dict[str, ParamValue] = dict(params or {})
        seen = 0
        while True:
            resp = await self.get(path, query, token=token, account=account)
            body = resp.body
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise errors.MalformedResponse(f"GET {endpoint_of(path)}: no data list")
            yield [item for item in data if isinstance(item, dict)]
            seen += 1
            paging = body.get("paging") if isinstance(body, dict) else None
            if not isinstance(paging, dict) or not paging.get("next"):
                return
            cursors = paging.get("cursors")
            after = cursors.get("after") if isinstance(cursors, dict) else None
            if not isinstance(after, str) or not after:
                return
            if max_pages is not None and seen >= max_pages:
                return
            query["after"] = after

    async def batch(
        self, ops: Sequence[BatchOp], *, token: str, account: str | None
    ) -> list[BatchResult]:
        """Up to 50 GETs in one round trip (``POST /{version}/`` with ``batch=[…]``).

        Each operation answers on its own: a body, or a typed error (a ``null`` slot, which
        Meta sends when the batch ran out of time, is a ``TransientError``). Each operation
        still counts against the rate limits.
        """
        if len(ops) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} operations, got {len(ops)}")
        encoded = []
        for op in ops:
            qs = "&".join(
                f"{k}={urllib.parse.quote(_encode(v), safe=',()')}" for k, v in op.params.items()
            )
            encoded.append({"method": "GET", "relative_url": f"{op.path}?{qs}"})
        form = {
            "access_token": token,
            # each operation's own usage headers: the outer answer may carry none
            "include_headers": "true",
            "batch": json.dumps(encoded, separators=(",", ":")),
        }
        query: dict[str, str] = {}
        if self._app_secret:
            query["appsecret_proof"] = appsecret_proof(token, self._app_secret)
        resp = await self._with_retries("POST", "", query, form, {}, account=account, metrics=None)
        if not isinstance(resp.body, list) or len(resp.body) != len(ops):
            raise errors.MalformedResponse("POST batch: the answer is not one element per op")
        results: list[BatchResult] = []
        latest: ratelimit.Usage | None = None
        for op, element in zip(ops, resp.body, strict=True):
            results.append(self._batch_element(op, element, account))
            usage = _element_usage(element)
            if usage is not None:
                latest = usage
        if latest is not None:
            self.limiter.observe(account, latest, self.clock.now(), calls=len(ops))
        return results

    def _batch_element(self, op: BatchOp, element: Any, account: str | None) -> BatchResult:
        endpoint = endpoint_of(op.path)
        if not isinstance(element, dict):
            self.calls[(endpoint, "batch_null")] += 1
            return errors.TransientError(f"GET {endpoint}: no answer inside the batch")
        code = element.get("code")
        status = code if isinstance(code, int) else 500
        try:
            body = json.loads(element.get("body") or "null")
        except (TypeError, ValueError):
            self.calls[(endpoint, "malformed")] += 1
            return errors.MalformedResponse(f"GET {endpoint}: a batch body that is not JSON")
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            failure = errors.classify(status, error, requested_metrics=list(op.metrics))
            self.calls[(endpoint, type(failure).__name__)] += 1
            self.limiter.observe_error(account, failure, self.clock.now())
            return failure
        if status >= 400:
            self.calls[(endpoint, "http_error")] += 1
            return errors.TransientError(f"GET {endpoint}: HTTP {status} inside the batch")
        self.calls[(endpoint, "ok")] += 1
        return body

    async def debug_token(self, token: str) -> TokenInfo:
        """Inspect ``token`` with itself as the access token (no app token needed)."""
        query = {"input_token": token}
        if self._app_secret:
            query["appsecret_proof"] = appsecret_proof(token, self._app_secret)
        resp = await self._with_retries(
            "GET",
            "debug_token",
            query,
            None,
            {"Authorization": f"Bearer {token}"},
            account=None,
            metrics=None,
        )
        data = resp.body.get("data") if isinstance(resp.body, dict) else None
        if not isinstance(data, dict):
            raise errors.MalformedResponse("GET debug_token: no data object")
        err = data.get("error")
        scopes = data.get("scopes")
        return TokenInfo(
            is_valid=bool(data.get("is_valid")),
            type=_str_or_none(data.get("type")),
            app_id=_str_or_none(data.get("app_id")),
            user_id=_str_or_none(data.get("user_id")),
            expires_at=_epoch(data.get("expires_at")),
            data_access_expires_at=_epoch(data.get("data_access_expires_at")),
            scopes=tuple(s for s in scopes if isinstance(s, str))
            if isinstance(scopes, list)
            else (),
            error=_str_or_none(err.get("message")) if isinstance(err, dict) else None,
        )


def _element_usage(element: Any) -> ratelimit.Usage | None:
    """The usage headers of one batch operation, when it carried any."""
    headers = element.get("headers") if isinstance(element, dict) else None
    if not isinstance(headers, list):
        return None
    found = {
        h["name"]: h["value"]
        for h in headers
        if isinstance(h, dict)
        and isinstance(h.get("name"), str)
        and isinstance(h.get("value"), str)
    }
    usage = ratelimit.parse_usage(found)
    return usage if usage.account_percent is not None else None


def _timeout_hint(exc: BaseException) -> str:
    return " (timed out)" if isinstance(exc, TimeoutError) else ""


def _str_or_none(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
