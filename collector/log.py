"""Logging: structlog, JSON lines under systemd, a console format on a terminal, secrets redacted.

Every line, from our structlog loggers and from stdlib ``logging`` (aiohttp, asyncpg), goes
through one chain: context, level, ISO UTC timestamp, exception text, then :func:`redact`, then
the renderer. Redaction runs last before rendering so it also covers formatted tracebacks.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

import structlog

REDACTED = "[REDACTED]"

#: secrets shorter than this are not registered: redacting "admin" everywhere helps nobody
MIN_SECRET_LENGTH = 6

LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Meta's credentials in query strings (URLs end up in aiohttp errors) and URL passwords.
_PATTERNS = (
    (
        re.compile(
            r"(?i)\b(access_token|appsecret_proof|input_token|client_secret|fb_exchange_token)"
            r"=[^&\s\"'#<>]+"
        ),
        rf"\1={REDACTED}",
    ),
    (re.compile(r"(?i)\b(postgres(?:ql)?://[^:/@\s]*:)[^@\s]+@"), rf"\1{REDACTED}@"),
    (re.compile(r"(?i)([?&\s]password=)[^&\s]+"), rf"\1{REDACTED}"),
)

#: event-dict keys whose string values are always hidden, whatever they hold
_SECRET_KEYS = frozenset(
    {"access_token", "app_secret", "appsecret_proof", "client_secret", "password", "token"}
)

_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None
_handler: logging.Handler | None = None


#: secrets learned at run time (discovered Page tokens, renewed tokens), kept across reloads
_runtime: set[str] = set()
_configured: tuple[str, ...] = ()


def add_secrets(secrets: Iterable[str]) -> None:
    """Register more secrets (tokens the collector was handed or minted while running)."""
    fresh = {s for s in secrets if s and s not in _runtime}
    if fresh:
        _runtime.update(fresh)
        set_secrets(_configured)


def set_secrets(secrets: Iterable[str]) -> None:
    """Replace the registered secrets (at start and on config reload); those given to
    :func:`add_secrets` stay registered."""
    global _configured  # noqa: PLW0603 - one registry per process, like the pattern below
    _configured = tuple(secrets)
    variants: set[str] = set()
    for secret in (*_configured, *_runtime):
        if len(secret) < MIN_SECRET_LENGTH:
            continue
        variants.add(secret)
        # a password may also appear percent-encoded inside a DSN or a URL
        variants.add(urllib.parse.quote(secret, safe=""))
        variants.add(urllib.parse.quote_plus(secret))
    # longest first, so a secret containing another is replaced whole
    ordered = sorted(variants, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None
    global _secret_pattern  # noqa: PLW0603 - one registry per process, swapped atomically
    with _lock:
        _secret_pattern = pattern


def redact_text(text: str) -> str:
    """``text`` with every registered secret and every credential-looking pattern masked."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    # exceptions and other objects are rendered with str()/repr(): check that text instead
    text = str(value)
    redacted = redact_text(text)
    return value if redacted == text else redacted


def _redact_item(key: Any, value: Any) -> Any:
    if isinstance(key, str) and key.lower() in _SECRET_KEYS and isinstance(value, str):
        return REDACTED
    return _redact_value(value)


def redact(_logger: Any, _method: str, event_dict: structlog.typing.EventDict) -> Any:
    """structlog processor: mask secrets in every value, nested ones and exception text included."""
    return {key: _redact_item(key, value) for key, value in event_dict.items()}


def _renderer(fmt: str, stream: TextIO) -> structlog.typing.Processor:
    if fmt == "auto":
        fmt = "console" if _isatty(stream) else "json"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(
            colors=_isatty(stream), exception_formatter=structlog.dev.plain_traceback
        )
    if fmt == "json":
        return structlog.processors.JSONRenderer(default=str)
    raise ValueError(f"unknown log format {fmt!r}: use auto, json or console")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] | str = "auto",
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Set up structlog and stdlib logging to write one line per event to ``stream`` (stdout).

    ``fmt`` ``auto`` means console on a terminal and JSON lines otherwise (systemd's journal).
    Calling it again replaces the previous setup (tests, config reload).
    """
    global _handler  # noqa: PLW0603 - the root handler we installed, replaced on reconfigure
    numeric = LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}: use {', '.join(LEVELS)}")
    out = sys.stdout if stream is None else stream
    renderer = _renderer(fmt, out)
    set_secrets(secrets)
    # shared by our events and by stdlib records (aiohttp, asyncpg)
    pre_chain: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *pre_chain,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # not cached: configure() runs again on reload and in tests, loggers must follow
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    with _lock:
        if _handler is not None:
            root.removeHandler(_handler)
        root.addHandler(handler)
        _handler = handler
    root.setLevel(numeric)


def get(name: str | None = None, **context: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger (``name`` defaults to the caller's module), with ``context`` bound."""
    if name is None:
        # the caller's module, as logging.getLogger(__name__) would say
        name = str(sys._getframe(1).f_globals.get("__name__", "collector"))
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**context) if context else logger
