"""Logging: JSON lines, the console format, stdlib routing and secret redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog

from collector import log

SECRET = "EAAGsecrettoken12345"
DSN_PASSWORD = "pg-pass-word"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    if log._handler is not None:
        root.removeHandler(log._handler)
        log._handler = None
    root.setLevel(level)
    log.set_secrets(())
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def fail(exc: BaseException) -> None:
    raise exc


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    log.configure("debug", "json", stream=stream, secrets=[SECRET, DSN_PASSWORD])
    return stream


def test_json_lines(out: io.StringIO) -> None:
    log.get("collector.test", account="acme").info("job_done", job="profile", rows=3)
    [line] = json_lines(out)
    assert line["event"] == "job_done"
    assert line["level"] == "info"
    assert line["logger"] == "collector.test"
    assert line["account"] == "acme"
    assert line["job"] == "profile"
    assert line["rows"] == 3
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == timedelta(0)


def test_default_logger_name_is_the_callers_module(out: io.StringIO) -> None:
    log.get().info("hello")
    assert json_lines(out)[0]["logger"] == __name__


def test_context_variables_are_merged(out: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(ig_user_id="1784")
    log.get("x").warning("account_throttled")
    assert json_lines(out)[0]["ig_user_id"] == "1784"
    assert json_lines(out)[0]["level"] == "warning"


def test_level_filters(out: io.StringIO) -> None:
    log.configure("warning", "json", stream=out)
    log.get("x").info("quiet")
    log.get("x").error("loud")
    logging.getLogger("aiohttp.access").info("also quiet")
    assert [line["event"] for line in json_lines(out)] == ["loud"]


def test_stdlib_logging_goes_through_the_same_output(out: io.StringIO) -> None:
    logging.getLogger("asyncpg.pool").warning("connection lost to %s", "db:5432")
    [line] = json_lines(out)
    assert line["event"] == "connection lost to db:5432"
    assert line["logger"] == "asyncpg.pool"
    assert line["level"] == "warning"
    assert "timestamp" in line


def test_reconfigure_replaces_the_handler(out: io.StringIO) -> None:
    other = io.StringIO()
    log.configure("info", "json", stream=other)
    log.get("x").info("once")
    assert out.getvalue() == ""
    assert len(json_lines(other)) == 1


def test_registered_secrets_are_redacted_everywhere(out: io.StringIO) -> None:
    log.get("x").info(
        f"event mentioning {SECRET}",
        url=f"https://graph.facebook.com/v25.0/me?fields=id&token={SECRET}",
        nested={"deep": [f"a {SECRET} b", {"deeper": (SECRET,)}]},
        number=42,
        flag=True,
        error=RuntimeError(f"failed with {DSN_PASSWORD}"),
    )
    text = out.getvalue()
    assert SECRET not in text
    assert DSN_PASSWORD not in text
    [line] = json_lines(out)
    assert line["event"] == "event mentioning [REDACTED]"
    assert line["url"].endswith("&token=[REDACTED]")
    assert line["nested"] == {"deep": ["a [REDACTED] b", {"deeper": ["[REDACTED]"]}]}
    assert line["number"] == 42
    assert line["flag"] is True
    assert line["error"] == "failed with [REDACTED]"


def test_tracebacks_are_redacted(out: io.StringIO) -> None:
    try:
        fail(ValueError(f"bad token {SECRET}"))
    except ValueError:
        log.get("x").exception("job_failed")
    try:
        fail(ConnectionError(f"postgresql://collector:{DSN_PASSWORD}@db/x unreachable"))
    except ConnectionError:
        logging.getLogger("asyncpg").exception("stdlib_failure")
    first, second = json_lines(out)
    assert "ValueError: bad token [REDACTED]" in first["exception"]
    assert "Traceback" in first["exception"]
    assert "ConnectionError: postgresql://collector:[REDACTED]@db/x" in second["exception"]
    assert SECRET not in out.getvalue()
    assert DSN_PASSWORD not in out.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET /me?access_token=EAAB123&fields=id",
            "GET /me?access_token=[REDACTED]&fields=id",
        ),
        ("appsecret_proof=abc123def&x=1", "appsecret_proof=[REDACTED]&x=1"),
        ("debug_token?input_token=EAAzzz", "debug_token?input_token=[REDACTED]"),
        ("client_secret=s3cr3t client_id=1", "client_secret=[REDACTED] client_id=1"),
        ("postgresql://user:hunter2@db:5432/x", "postgresql://user:[REDACTED]@db:5432/x"),
        ("postgres://user:p%40ss@db/x", "postgres://user:[REDACTED]@db/x"),
        ("postgresql://user@db/x", "postgresql://user@db/x"),
        ("host=db password=hunter2 user=u", "host=db password=[REDACTED] user=u"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_patterns_are_redacted_without_registration(text: str, expected: str) -> None:
    assert log.redact_text(text) == expected


def test_secret_keys_are_hidden(out: io.StringIO) -> None:
    log.get("x").info("x", token="short", password="pw", token_source="file /etc/t")
    [line] = json_lines(out)
    assert line["token"] == "[REDACTED]"
    assert line["password"] == "[REDACTED]"
    assert line["token_source"] == "file /etc/t"


def test_short_secrets_are_not_registered(out: io.StringIO) -> None:
    log.set_secrets(["admin", "longer-secret"])
    log.get("x").info("admin sees longer-secret")
    assert json_lines(out)[0]["event"] == "admin sees [REDACTED]"


def test_set_secrets_replaces_the_registry(out: io.StringIO) -> None:
    log.set_secrets(["rotated-token-1"])
    log.get("x").info(f"old {SECRET} new rotated-token-1")
    assert json_lines(out)[0]["event"] == f"old {SECRET} new [REDACTED]"


def test_percent_encoded_secret(out: io.StringIO) -> None:
    log.set_secrets(["p@ss/word!"])
    log.get("x").info("url", url="https://h/x?pw=p%40ss%2Fword%21")
    assert json_lines(out)[0]["url"] == "https://h/x?pw=[REDACTED]"


def test_console_format() -> None:
    stream = io.StringIO()
    log.configure("info", "console", stream=stream, secrets=[SECRET])
    log.get("collector.test").info("job_done", account="acme", token_hint=SECRET)
    try:
        fail(RuntimeError(f"boom {SECRET}"))
    except RuntimeError:
        log.get("collector.test").exception("job_failed")
    text = stream.getvalue()
    assert "job_done" in text
    assert "account=acme" in text
    assert "RuntimeError: boom [REDACTED]" in text
    assert SECRET not in text
    assert "\x1b[" not in text  # no colours when the stream is not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_auto_is_json_when_not_a_terminal() -> None:
    stream = io.StringIO()
    log.configure("info", "auto", stream=stream)
    log.get("x").info("hello")
    assert json_lines(stream)[0]["event"] == "hello"


def test_auto_is_console_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    log.configure("info", "auto", stream=stream)
    log.get("x").info("hello")
    assert not stream.getvalue().startswith("{")
    assert "hello" in stream.getvalue()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        log.configure("loud", "json", stream=io.StringIO())
    with pytest.raises(ValueError, match="unknown log format"):
        log.configure("info", "xml", stream=io.StringIO())
