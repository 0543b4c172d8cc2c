"""The web server through a real aiohttp client: /metrics, /healthz, the webhook handshake and
every way a notification is accepted or refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from collector import config, errors, models, telemetry, web
from collector.simulator import webhooks

SECRET = "test_app_secret"
VERIFY_TOKEN = "meatyhamhock"

# graph-api.md §14 M: Meta's documented body and its signature with SECRET, byte for byte
REFERENCE_BODY = (
    b'{"object":"instagram","entry":[{"id":"17841405309211844","time":1547687043,"changes":'
    b'[{"field":"story_insights","value":{"media_id":"18023345989012587","exits":1,"replies":0,'
    b'"reach":17,"taps_forward":12,"taps_back":0,"impressions":28}}]}]}'
)
REFERENCE_SIGNATURE = "sha256=e2440ac1156ad1a8de0a2d3181b552f72e36e3c9c20294b046793932b121c773"


def load_settings(tmp_path: Path, *, graph: str = "", web_section: str = "") -> config.Settings:
    path = tmp_path / "collector.toml"
    path.write_text(f"[graph]\n{graph}\n[web]\nport = 0\n{web_section}\n")
    return config.load(path, environ={})


def secured(tmp_path: Path, **web_keys: object) -> config.Settings:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in web_keys.items())
    return load_settings(
        tmp_path,
        graph=f'app_secret = "{SECRET}"',
        web_section=f'webhook_verify_token = "{VERIFY_TOKEN}"\n{extra}',
    )


class Harness:
    """A started server, the batches its sink received, and a client session."""

    def __init__(self, server: web.WebServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.batches: list[models.Batch] = []
        self.health: web.Health = web.Health.assess(database_up=True)
        self.sink_error: Exception | None = None

    @property
    def hook_url(self) -> str:
        return self.server.url + web.DEFAULT_WEBHOOK_PATH

    async def post(
        self, body: bytes, *, signature: str | None = "sign", **headers: str
    ) -> tuple[int, str]:
        sent = dict(headers)
        if signature == "sign":
            sent[web.SIGNATURE_HEADER] = webhooks.sign(SECRET, body)
        elif signature is not None:
            sent[web.SIGNATURE_HEADER] = signature
        async with self.session.post(self.hook_url, data=body, headers=sent) as resp:
            return resp.status, await resp.text()


Start = Callable[[config.Settings], Awaitable[Harness]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[web.WebServer] = []
    session = aiohttp.ClientSession()

    async def run(settings: config.Settings) -> Harness:
        harness: Harness

        async def sink(batch: models.Batch) -> None:
            if harness.sink_error is not None:
                raise harness.sink_error
            harness.batches.append(batch)

        server = web.WebServer(
            settings,
            telemetry=telemetry.Telemetry(),
            health=lambda: harness.health,
            sink=sink,
        )
        harness = Harness(server, session)
        await server.start()
        servers.append(server)
        return harness

    yield run
    await session.close()
    for server in servers:
        await server.stop()


# ---------------------------------------------------------------- lifecycle, /metrics, /healthz


async def test_port_zero_binds_a_free_port(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    assert h.server.port > 0
    assert h.server.url == f"http://127.0.0.1:{h.server.port}"
    other = await start(secured(tmp_path))
    assert other.server.port != h.server.port


async def test_a_port_in_use_is_a_clear_error(start: Start, tmp_path: Path) -> None:
    settings = secured(tmp_path)
    taken = await start(settings)
    busy = settings.model_copy(
        update={"web": settings.web.model_copy(update={"port": taken.server.port})}
    )
    with pytest.raises(errors.ConfigError) as caught:
        await start(busy)
    message = str(caught.value)
    assert f"cannot listen on 127.0.0.1:{taken.server.port}" in message
    assert "set [web] port" in message


async def test_metrics(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    h.server.telemetry.rows_written("media_metric", 3)
    assert (await h.post(b"{}", signature="sha256=00"))[0] == 403
    async with h.session.get(h.server.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == telemetry.CONTENT_TYPE
        text = await resp.text()
    assert 'collector_rows_written_total{table="media_metric"} 3.0' in text
    assert 'collector_webhook_deliveries_total{outcome="bad_signature"} 1.0' in text
    assert "collector_build_info{" in text


async def test_healthz_ok_degraded_and_failing(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    last_job = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    h.health = web.Health.assess(
        database_up=True, loop_lag_s=0.01, accounts={"ok": 3}, last_job_at=last_job
    )
    async with h.session.get(h.server.url + "/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == {
        "status": "ok",
        "database_up": True,
        "loop_lag_seconds": 0.01,
        "accounts": {"ok": 3},
        "spool": {"bytes": 0, "batches": 0},
        "last_job_at": "2026-06-15T12:00:00+00:00",
        "reasons": [],
    }

    h.health = web.Health.assess(
        database_up=False, accounts={"ok": 2, "unhealthy": 1}, spool_bytes=900, spool_batches=2
    )
    async with h.session.get(h.server.url + "/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "degraded"
    assert body["reasons"] == ["database unreachable", "2 batches spooled", "1 accounts unhealthy"]

    h.health = web.Health.assess(database_up=True, loop_lag_s=30.0)
    async with h.session.get(h.server.url + "/healthz") as resp:
        assert resp.status == 503
        assert (await resp.json())["status"] == "fail"


async def test_healthz_accepts_a_coroutine_and_survives_a_crash(tmp_path: Path) -> None:
    calls = 0

    async def health() -> web.Health:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("boom")
        return web.Health.assess(database_up=True)

    async def sink(batch: models.Batch) -> None:
        raise AssertionError("not called")

    server = web.WebServer(
        secured(tmp_path), telemetry=telemetry.Telemetry(), health=health, sink=sink
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/healthz") as resp:
                assert resp.status == 200
            with structlog.testing.capture_logs() as logs:
                async with session.get(server.url + "/healthz") as resp:
                    assert resp.status == 503
                    assert (await resp.json())["status"] == "fail"
            assert [e["event"] for e in logs] == ["healthz_failed"]
    finally:
        await server.stop()


# ---------------------------------------------------------------- verification handshake


async def test_handshake(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    params = {
        "hub.mode": "subscribe",
        "hub.challenge": "1158201444",
        "hub.verify_token": VERIFY_TOKEN,
    }
    async with h.session.get(h.hook_url, params=params) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.text() == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "wrong"},
        {"hub.mode": "unsubscribe", "hub.challenge": "1", "hub.verify_token": VERIFY_TOKEN},
        {"hub.challenge": "1"},
    ],
)
async def test_handshake_refused(start: Start, tmp_path: Path, params: dict[str, str]) -> None:
    h = await start(secured(tmp_path))
    async with h.session.get(h.hook_url, params=params) as resp:
        assert resp.status == 403
        assert "1" not in await resp.text()


async def test_handshake_refused_without_a_verify_token(start: Start, tmp_path: Path) -> None:
    h = await start(load_settings(tmp_path, graph=f'app_secret = "{SECRET}"'))
    params = {"hub.mode": "subscribe", "hub.challenge": "7", "hub.verify_token": ""}
    with structlog.testing.capture_logs() as logs:
        async with h.session.get(h.hook_url, params=params) as resp:
            assert resp.status == 403
    assert "webhook_verify_token" in logs[0]["reason"]


# ---------------------------------------------------------------- notifications


async def test_reference_notification(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    assert web.signature(SECRET.encode(), REFERENCE_BODY) == REFERENCE_SIGNATURE
    with structlog.testing.capture_logs() as logs:
        status, _ = await h.post(REFERENCE_BODY, signature=REFERENCE_SIGNATURE)
    assert status == 200
    [batch] = h.batches
    assert [m.media_id for m in batch.media] == ["18023345989012587"]
    assert len(batch.media_metrics) == 6
    assert [e["event"] for e in logs] == ["webhook_received"]
    assert SECRET not in repr(logs)


async def test_bad_signature_is_refused(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    tampered = REFERENCE_BODY.replace(b'"reach":17', b'"reach":99')
    with structlog.testing.capture_logs() as logs:
        status, _ = await h.post(tampered, signature=REFERENCE_SIGNATURE)
        assert (await h.post(REFERENCE_BODY, signature="sha256=zz"))[0] == 403
        assert (await h.post(REFERENCE_BODY, signature="sha1=" + "0" * 40))[0] == 403
        # a signature made with another secret
        other = webhooks.sign("another_secret", REFERENCE_BODY)
        assert (await h.post(REFERENCE_BODY, signature=other))[0] == 403
    assert status == 403
    assert h.batches == []
    assert {e["event"] for e in logs} == {"webhook_rejected"}
    assert all("does not match" in e["reason"] for e in logs)
    assert SECRET not in repr(logs)


async def test_missing_signature_is_refused(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    with structlog.testing.capture_logs() as logs:
        status, _ = await h.post(REFERENCE_BODY, signature=None)
    assert status == 403
    assert h.batches == []
    assert logs[0]["event"] == "webhook_rejected"
    assert "X-Hub-Signature-256" in logs[0]["reason"]


async def test_uppercase_hex_signature_is_accepted(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    digest = REFERENCE_SIGNATURE.removeprefix("sha256=").upper()
    assert (await h.post(REFERENCE_BODY, signature="sha256=" + digest))[0] == 200


async def test_notifications_refused_without_an_app_secret(start: Start, tmp_path: Path) -> None:
    h = await start(load_settings(tmp_path, web_section=f'webhook_verify_token = "{VERIFY_TOKEN}"'))
    with structlog.testing.capture_logs() as logs:
        status, _ = await h.post(REFERENCE_BODY, signature=REFERENCE_SIGNATURE)
    assert status == 403
    assert h.batches == []
    assert "graph.app_secret" in logs[0]["reason"]


async def test_oversize_body_by_length(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path, webhook_max_body=200))
    assert len(REFERENCE_BODY) > 200
    status, _ = await h.post(REFERENCE_BODY)
    assert status == 413
    assert h.batches == []


async def test_oversize_chunked_body(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path, webhook_max_body=1000))

    async def chunks() -> AsyncIterator[bytes]:
        # no Content-Length: the limit has to be enforced while reading
        for _ in range(64):
            yield b" " * 100

    headers = {web.SIGNATURE_HEADER: "sha256=" + "0" * 64}
    async with h.session.post(h.hook_url, data=chunks(), headers=headers) as resp:
        assert resp.status == 413
    assert h.batches == []


async def test_malformed_json(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    for body in (b"{not json", b"\xff\xfe", b"[" * 100000):
        status, _ = await h.post(body)
        assert status == 400
    assert h.batches == []


async def test_other_fields_and_bad_payloads_are_answered_200(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    other: dict[str, Any] = {
        "object": "instagram",
        "entry": [
            {"id": "1784", "time": 1547687043, "changes": [{"field": "comments", "value": {}}]}
        ],
    }
    bodies: list[object] = [other, {"object": "page", "entry": []}, [], {"entry": "x"}, None]
    for payload in bodies:
        status, _ = await h.post(json.dumps(payload).encode())
        # Meta would retry anything else, for 36 hours, and the answer would not change
        assert status == 200
    assert h.batches == []


async def test_sink_failure_asks_for_a_redelivery(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    h.sink_error = ConnectionError("database down")
    status, _ = await h.post(REFERENCE_BODY)
    assert status == 503
    h.sink_error = None
    assert (await h.post(REFERENCE_BODY))[0] == 200
    assert len(h.batches) == 1


async def test_reconfigure_takes_new_secrets(start: Start, tmp_path: Path) -> None:
    h = await start(secured(tmp_path))
    (tmp_path / "new").mkdir()
    new = load_settings(
        tmp_path / "new",
        graph='app_secret = "rotated_secret"',
        web_section=f'webhook_verify_token = "{VERIFY_TOKEN}"',
    )
    h.server.reconfigure(new)
    assert (await h.post(REFERENCE_BODY))[0] == 403
    body = REFERENCE_BODY
    status, _ = await h.post(body, signature=webhooks.sign("rotated_secret", body))
    assert status == 200


# ---------------------------------------------------------------- hostile clients (issue 10)


class Dripper:
    """A raw client that sends ``start`` and then one byte every ``every`` seconds until the
    server closes the connection; records when that happened and what it answered."""

    def __init__(self, host: str, port: int, start: bytes, every: float) -> None:
        self.host, self.port, self.start, self.every = host, port, start, every
        self.answer = b""
        self.lasted: float | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        opened = loop.time()
        reading = asyncio.create_task(reader.read())
        try:
            writer.write(self.start)
            while not reading.done():
                await asyncio.wait({reading}, timeout=self.every)
                if not reading.done():
                    writer.write(b"X")
            self.answer = reading.result()
        except (ConnectionError, OSError):
            pass
        finally:
            self.lasted = loop.time() - opened
            reading.cancel()
            writer.close()


async def _all_cut(drippers: list[Dripper], within: float) -> None:
    done, pending = await asyncio.wait([d.task for d in drippers], timeout=within)
    for task in done:
        task.result()
    assert not pending, f"{len(pending)} of {len(drippers)} slow clients still connected"


async def test_slow_clients_are_cut_and_healthz_answers_meanwhile(
    start: Start, tmp_path: Path
) -> None:
    """Finding 8: 60 clients sending headers or a body one byte every few seconds all stayed
    connected indefinitely."""
    h = await start(secured(tmp_path, header_timeout=1.5, body_timeout=1.5, max_connections=100))
    host, port = "127.0.0.1", h.server.port
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
    body = (
        b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        + f"{web.SIGNATURE_HEADER}: sha256=00\r\n\r\n".encode()
    )
    drippers = [Dripper(host, port, head if i % 2 else body, every=0.4) for i in range(60)]
    # a normal request answers while they are all connected
    for _ in range(3):
        async with h.session.get(h.server.url + "/healthz") as resp:
            assert resp.status == 200
    assert sum(d.task.done() for d in drippers) < 60
    await _all_cut(drippers, within=60)
    for d in drippers:
        assert d.lasted is not None
        assert d.lasted >= 1.0  # cut by the timeout, not refused
    slow_bodies = [d for d in drippers if d.start is body]
    assert all(d.answer.startswith(b"HTTP/1.1 408") for d in slow_bodies), slow_bodies[0].answer
    async with h.session.get(h.server.url + "/healthz") as resp:
        assert resp.status == 200


async def test_a_slow_second_request_on_a_kept_alive_connection_is_cut(
    start: Start, tmp_path: Path
) -> None:
    h = await start(secured(tmp_path, header_timeout=1.0))
    reader, writer = await asyncio.open_connection("127.0.0.1", h.server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 10)
    assert status.startswith(b"HTTP/1.1 200")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and the rest never comes
    try:
        rest = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    # the connection was closed (read() returned) without a second answer
    assert b"HTTP/1.1" not in rest


async def test_connections_beyond_the_cap_are_refused_with_503(
    start: Start, tmp_path: Path
) -> None:
    h = await start(secured(tmp_path, max_connections=5))
    idle = [await asyncio.open_connection("127.0.0.1", h.server.port) for _ in range(5)]
    with structlog.testing.capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", h.server.port)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        second_reader, second = await asyncio.open_connection("127.0.0.1", h.server.port)
        assert (await asyncio.wait_for(second_reader.read(), 10)).startswith(b"HTTP/1.1 503")
        second.close()
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable")
    refused = [e for e in logs if e["event"] == "web_connections_saturated"]
    assert len(refused) == 1  # once per episode, not once per connection
    assert refused[0]["max_connections"] == 5
    # one idle client leaves: a normal request gets its slot
    idle[0][1].close()
    await idle[0][1].wait_closed()

    async def answered() -> bool:
        try:
            async with h.session.get(h.server.url + "/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    for _ in range(100):
        if await answered():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no slot freed")
    for _, w in idle[1:]:
        w.close()
