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
import orjson

from collector import clock as clock_mod
from collector import errors, parse, ratelimit

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
#: default cap on one response body (``[graph] max_body_bytes``); Meta's largest answers (a
#: 50-operation batch of insights, a 100-item page with captions) stay far below it
MAX_BODY_BYTES = 8 * 1024 * 1024
#: default cap on the pages of one listing (``[graph] max_pages``): 100,000 media at 100 a page
MAX_PAGES = 1000
#: a paging cursor longer than this is not one of Meta's (they are a few dozen characters)
_MAX_CURSOR = 4096
_CHUNK = 64 * 1024


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
        max_body_bytes: int = MAX_BODY_BYTES,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self._app_secret = app_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self.max_retries = max_retries
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_body_bytes = max_body_bytes
        self.max_pages = max_pages
        self.clock: clock_mod.Clock = clock or clock_mod.SystemClock()
        self.limiter = limiter or ratelimit.Limiter()
        #: raises (``errors.LeaseLost``) before a call for an account this process must leave
        self.permit: Callable[[str | None], None] | None = None
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
        expect: type = dict,
        versioned: bool = True,
    ) -> Response:
        attempt = 0
        while True:
            if self.permit is not None:
                self.permit(account)  # cluster mode: only for an account whose lease we hold
            hold = self.limiter.admit(account, self.clock.now())
            if hold is not None:
                # Never call a throttled account or app: the caller decides what to do instead.
                blocked, app_wide = hold
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
                        expect=expect,
                        versioned=versioned,
                    )
            except errors.TransientError:
                # no verdict on the app's block: the next call (this one again) probes instead
                self.limiter.release_probe()
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
        expect: type = dict,
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
            raw: bytes | None = None
            try:
                if form is not None:
                    headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
                async with session.request(
                    method,
                    url,
                    params=query,
                    data=None if form is None else form_body(form),
                    headers=headers,
                ) as resp:
                    status = resp.status
                    usage = ratelimit.parse_usage(resp.headers)
                    raw = await self._read_capped(resp)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                outcome = "unreachable"
                # ``from None``: aiohttp's exceptions can carry the URL with its query string.
                raise errors.Unreachable(
                    f"{method} {endpoint}: {type(exc).__name__}" + _timeout_hint(exc)
                ) from None
            self.limiter.observe(account, usage, self.clock.now(), calls=calls)
            try:
                body = self._decode(method, endpoint, status, raw)
            except errors.GraphError:
                outcome = "malformed"
                raise
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                failure = errors.on_account_node(
                    errors.classify(
                        status,
                        error,
                        requested_metrics=list(metrics or []),
                        retry_after=usage.regain_seconds or None,
                    ),
                    path,
                    account,
                )
                outcome = type(failure).__name__
                self.limiter.observe_error(account, failure, self.clock.now())
                if not isinstance(failure, errors.AppThrottled | errors.TransientError):
                    self.limiter.observe_success(self.clock.now())  # Meta answered: not held
                raise failure
            if status >= 400:
                outcome = "http_error"
                cls = errors.TransientError if status >= 500 else errors.InvalidRequest
                raise cls(f"{method} {endpoint}: HTTP {status} without an error body")
            if not isinstance(body, expect):
                outcome = "malformed"
                raise errors.MalformedResponse(
                    f"{method} {endpoint}: HTTP {status} with a JSON {_json_type(body)} where "
                    f"{_json_type(expect())} was expected",
                    http_status=status,
                )
            if expect is not list:
                # a batch's verdict is in its operations' answers (see ``batch``)
                self.limiter.observe_success(self.clock.now())
            return Response(body=body, usage=usage, status=status)
        finally:
            self.in_flight -= 1
            self.calls[(endpoint, outcome)] += 1
            if self._on_call is not None:
                self._on_call(endpoint, outcome, time.monotonic() - started)

    def _decode(self, method: str, endpoint: str, status: int, raw: bytes | None) -> Any:
        """The JSON of a body; any failure to decode it is a malformed answer (retried)."""
        if raw is None:
            raise errors.MalformedResponse(
                f"{method} {endpoint}: HTTP {status} with a body over the "
                f"{self.max_body_bytes}-byte cap ([graph] max_body_bytes)",
                http_status=status,
            )
        try:
            return loads(raw)
        except (ValueError, RecursionError) as exc:
            # ValueError: not JSON, not UTF-8, an integer of over 4,300 digits;
            # RecursionError: nested deeper than the decoder goes
            if status >= 500:
                raise errors.TransientError(
                    f"{method} {endpoint}: HTTP {status} with a non-JSON body",
                    http_status=status,
                ) from None
            raise errors.MalformedResponse(
                f"{method} {endpoint}: HTTP {status} with a body that is not JSON "
                f"({len(raw)} bytes, {_decode_failure(exc)})",
                http_status=status,
            ) from None

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """The body, read chunk by chunk; None (the rest unread) once it passes the cap, so
        a huge answer never sits whole in memory."""
        limit = self.max_body_bytes
        declared = resp.content_length
        if declared is not None and declared > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def pages(
        self,
        path: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        token: str,
        account: str | None,
        max_pages: int | None = None,
        on_cut: Callable[[errors.ListingTruncated], None] | None = None,
    ) -> AsyncIterator[list[Any]]:
        """Yield the ``data`` list of each page, following ``paging.cursors.after``.

        A listing ends at the last page, or is cut (after yielding what was read) when a
        cursor comes back a second time or the pages pass ``max_pages`` (the client's
        ``[graph] max_pages`` by default): a broken or hostile server cannot keep a job walking
        forever. A cut raises ``ListingTruncated``, or hands it to ``on_cut`` and ends the
        listing. Items are yielded as they came, for the parser to judge.
        """
        limit = self.max_pages if max_pages is None else max_pages
        endpoint = endpoint_of(path)
        query: dict[str, ParamValue] = dict(params or {})
        cursors_seen: set[str] = set()
        seen = 0
        while True:
            resp = await self.get(path, query, token=token, account=account)
            body = resp.body
            data = body.get("data")
            if not isinstance(data, list):
                raise errors.MalformedResponse(f"GET {endpoint}: no data list")
            yield data
            seen += 1
            paging = body.get("paging")
            if not isinstance(paging, dict) or not paging.get("next"):
                return
            cursors = paging.get("cursors")
            after = cursors.get("after") if isinstance(cursors, dict) else None
            if not isinstance(after, str) or not after:
                return
            cut = self._cut(endpoint, after, seen, limit, cursors_seen)
            if cut is not None:
                if on_cut is None:
                    raise cut
                on_cut(cut)
                return
            cursors_seen.add(after)
            query["after"] = after

    @staticmethod
    def _cut(
        endpoint: str, after: str, seen: int, limit: int, cursors_seen: set[str]
    ) -> errors.ListingTruncated | None:
        """Why a listing must stop before following ``after``, if it must."""
        if len(after) > _MAX_CURSOR:
            return errors.ListingTruncated(
                f"GET {endpoint}: a paging cursor of {len(after)} characters after "
                f"{seen} page(s); the listing stops there"
            )
        if after in cursors_seen:
            return errors.ListingTruncated(
                f"GET {endpoint}: the paging cursor repeated after {seen} page(s) "
                "(a cycle); the listing stops there"
            )
        if seen >= limit:
            return errors.ListingTruncated(
                f"GET {endpoint}: more than {limit} pages ([graph] max_pages); the "
                "listing stops there"
            )
        return None

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
        resp = await self._with_retries(
            "POST", "", query, form, {}, account=account, metrics=None, expect=list
        )
        if len(resp.body) != len(ops):
            # every operation is answered again rather than trusting a guess at which is which
            return [
                errors.MalformedResponse(
                    f"POST batch: {len(resp.body)} answers for {len(ops)} operations"
                )
                for _ in ops
            ]
        results: list[BatchResult] = []
        latest: ratelimit.Usage | None = None
        for op, element in zip(ops, resp.body, strict=True):
            usage = _element_usage(element)
            results.append(self._batch_element(op, element, account, usage))
            if usage is not None:
                latest = usage
        if latest is not None:
            self.limiter.observe(account, latest, self.clock.now(), calls=len(ops))
        if not any(isinstance(r, errors.AppThrottled) for r in results):
            self.limiter.observe_success(self.clock.now())
        return results

    def _batch_element(
        self, op: BatchOp, element: Any, account: str | None, usage: ratelimit.Usage | None
    ) -> BatchResult:
        endpoint = endpoint_of(op.path)
        if not isinstance(element, dict):
            self.calls[(endpoint, "batch_null")] += 1
            return errors.TransientError(f"GET {endpoint}: no answer inside the batch")
        code = element.get("code")
        status = code if isinstance(code, int) and not isinstance(code, bool) else 500
        raw = element.get("body")
        try:
            body = loads(raw) if isinstance(raw, str) else None
        except (ValueError, RecursionError):
            self.calls[(endpoint, "malformed")] += 1
            return errors.MalformedResponse(f"GET {endpoint}: a batch body that is not JSON")
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            failure = errors.on_account_node(
                errors.classify(
                    status,
                    error,
                    requested_metrics=list(op.metrics),
                    retry_after=(usage.regain_seconds or None) if usage is not None else None,
                ),
                op.path,
                account,
            )
            self.calls[(endpoint, type(failure).__name__)] += 1
            self.limiter.observe_error(account, failure, self.clock.now())
            return failure
        if status >= 400:
            self.calls[(endpoint, "http_error")] += 1
            return errors.TransientError(f"GET {endpoint}: HTTP {status} inside the batch")
        if not isinstance(body, dict):
            self.calls[(endpoint, "malformed")] += 1
            return errors.MalformedResponse(
                f"GET {endpoint}: a batch body that is a JSON {_json_type(body)}, not an object"
            )
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
        data = resp.body.get("data")
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
            scopes=tuple(parse.storable(s[:200]) for s in scopes[:200] if isinstance(s, str))
            if isinstance(scopes, list)
            else (),
            error=_str_or_none(err.get("message")) if isinstance(err, dict) else None,
        )


def loads(raw: bytes | str) -> Any:
    """JSON, decoded by orjson (several times faster than ``json``, the bulk of a pass's CPU);
    what orjson refuses and ``json`` takes (``NaN``, lone surrogates, nesting past 1,024 levels)
    goes to ``json``, so the answers are those of ``json`` but for integers past 2^64, which
    orjson makes floats (no metric or id the collector keeps is that large: both are refused
    either way)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


#: ``application/x-www-form-urlencoded`` of ASCII text, as ``urllib.parse.quote_plus`` spells
#: it, in one C pass (``str.translate``) instead of a Python step per byte: the batch parameter
#: is tens of kilobytes of JSON
_FORM_ASCII = {
    c: chr(c) if chr(c).isalnum() or chr(c) in "_.-~" else "+" if c == 0x20 else f"%{c:02X}"
    for c in range(128)
}


def form_body(form: Mapping[str, str]) -> bytes:
    """A form's body, byte for byte what ``urllib.parse.urlencode`` makes of it."""
    parts = []
    for key, value in form.items():
        pair = []
        for text in (key, value):
            pair.append(
                text.translate(_FORM_ASCII) if text.isascii() else urllib.parse.quote_plus(text)
            )
        parts.append("=".join(pair))
    return "&".join(parts).encode("ascii")


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
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return parse.storable(str(value)[:500])


def _json_type(value: Any) -> str:
    """How JSON calls the type of a decoded value (for messages)."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _decode_failure(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deep"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return "invalid JSON"


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
