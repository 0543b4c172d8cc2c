"""The configuration: a TOML file, ``COLLECTOR_*`` environment overrides, secrets from files.

This is the only module that reads the environment (``os.environ``, ``$CREDENTIALS_DIRECTORY``,
``$STATE_DIRECTORY``) and the token files. :func:`load` returns one frozen :class:`Settings`;
any problem becomes one :class:`errors.ConfigError` listing every problem found, each with its
key path (``accounts[2].ig_user_id``, 0-based as in the file), what was expected, and the TOML
line or environment variable it came from. Secret values never appear in messages or reprs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import difflib
import os
import re
import socket
import stat
import threading
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import pydantic
import pydantic_core
import pydantic_settings

from collector import errors, models

ENV_PREFIX = "COLLECTOR_"
ENV_CONFIG = "COLLECTOR_CONFIG"
ENV_CREDENTIALS = "CREDENTIALS_DIRECTORY"
ENV_STATE = "STATE_DIRECTORY"
DEFAULT_STATE_DIRECTORY = Path("/var/lib/collector")
#: what systemd tells a notify service about itself (kept for ``systemd.Notifier``)
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

#: keys whose values are never echoed in an error message
SECRET_KEYS = frozenset({"token", "dsn", "app_secret", "webhook_verify_token"})

_MASK = "**********"

# --------------------------------------------------------------------------- value types


def _problem(msg: str, key: tuple[str | int, ...] = ()) -> pydantic_core.PydanticCustomError:
    """A validation error whose message is final; ``key`` extends the location it is raised at."""
    return pydantic_core.PydanticCustomError("config", "{msg}", {"msg": msg, "key": key})


def _value_error(msg: str) -> pydantic_core.PydanticCustomError:
    """A validation error for one value; the formatter adds what was given (unless secret)."""
    return pydantic_core.PydanticCustomError("config_value", "{msg}", {"msg": msg})


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?")
_DURATION_HELP = (
    'must be a positive duration such as "90s", "10m", "1h30m" or "7d" '
    "(a bare number means seconds)"
)


def parse_duration(value: object) -> timedelta:
    """Parse ``90``, ``"90s"``, ``"10m"``, ``"1h30m"``, ``"730d"`` into a positive timedelta."""
    try:
        result = _duration(value)
    except (ValueError, OverflowError):
        result = None
    if result is None or result <= timedelta(0):
        raise _value_error(_DURATION_HELP)
    return result


def _duration(value: object) -> timedelta | None:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        # environment variables are strings: "60" means 60 seconds, as 60 does in TOML
        return timedelta(seconds=float(text))
    match = _DURATION.fullmatch(text)
    if not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration`: ``timedelta(hours=1, minutes=30)`` → ``"1h30m"``."""
    total = value.total_seconds()
    if total != int(total):
        return f"{total:g}s"
    seconds = int(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _at_most(limit: timedelta) -> Any:
    def check(value: timedelta) -> timedelta:
        if value > limit:
            raise _value_error(f"must be at most {format_duration(limit)}")
        return value

    return pydantic.AfterValidator(check)


# Every duration has an upper bound, so that no value that parses can overflow a datetime
# later ("999999999d" is a valid timedelta; now + it is not). One alias per kind of duration.
_PARSE_DURATION = pydantic.BeforeValidator(parse_duration)
_SHOW_DURATION = pydantic.PlainSerializer(format_duration, return_type=str, when_used="json")
#: an age or any other duration: at most ten years
Duration = Annotated[timedelta, _PARSE_DURATION, _at_most(timedelta(days=3650)), _SHOW_DURATION]
#: how often something runs: at most a year
Every = Annotated[timedelta, _PARSE_DURATION, _at_most(timedelta(days=365)), _SHOW_DURATION]
#: a pause or backoff: at most a day
Backoff = Annotated[timedelta, _PARSE_DURATION, _at_most(timedelta(days=1)), _SHOW_DURATION]
#: how long to wait for something (a connection, a request, a drain): at most an hour
Timeout = Annotated[timedelta, _PARSE_DURATION, _at_most(timedelta(hours=1)), _SHOW_DURATION]
#: part of a story's life: at most the 24 hours Meta keeps a story
StoryDuration = Annotated[timedelta, _PARSE_DURATION, _at_most(timedelta(hours=24)), _SHOW_DURATION]


def _size_at_most(limit: int, shown: str) -> Any:
    def check(value: int) -> int:
        if value > limit:
            raise _value_error(f"must be at most {shown}")
        return value

    return pydantic.AfterValidator(check)


def _digits(what: str, example: str) -> Any:
    def check(value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip().isdigit() or not value.isascii():
            raise _value_error(f"must be {what} (digits only, e.g. {example!r})")
        return value.strip()

    return pydantic.BeforeValidator(check)


IgUserId = Annotated[str, _digits("the numeric Instagram user id", "17841400000000000")]
AppId = Annotated[str, _digits("the numeric Meta app id", "1234567890")]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_METRIC = re.compile(r"[a-z][a-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CREDENTIAL = re.compile(r"[A-Za-z0-9_.@:-]+")
_API_VERSION = re.compile(r"v\d+\.0")


def _matching(pattern: re.Pattern[str], message: str) -> Any:
    def check(value: str) -> str:
        if not pattern.fullmatch(value) or value in (".", ".."):
            raise _value_error(message)
        return value

    return pydantic.AfterValidator(check)


AccountName = Annotated[
    str,
    _matching(_NAME, "must be 1-64 characters among letters, digits, '_', '.' and '-'"),
]
MetricName = Annotated[
    str,
    _matching(_METRIC, "must be a Graph API metric name (lower case, e.g. 'reach')"),
]
EnvName = Annotated[
    str,
    _matching(_ENV_NAME, "must be the name of an environment variable (e.g. 'ACME_TOKEN')"),
]
CredentialName = Annotated[
    str,
    _matching(
        _CREDENTIAL,
        "must be a file name inside $CREDENTIALS_DIRECTORY, as given to systemd's "
        "LoadCredential= (no '/')",
    ),
]
Percent = Annotated[float, pydantic.Field(ge=1, le=100)]


# --------------------------------------------------------------------------- secret resolution


@dataclasses.dataclass(frozen=True)
class _Context:
    """What validation needs from outside the file: the environment and where paths are rooted."""

    environ: Mapping[str, str]
    base_dir: Path


# Set by load() around validation. Not pydantic's validation context: BaseSettings has its own
# __init__, through which pydantic routes model_validate, and that drops the context.
_CURRENT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar(
    "collector_config", default=None
)


def _context() -> _Context:
    ctx = _CURRENT.get()
    if ctx is not None:
        return ctx
    # a model built directly (tests of other modules, not load()) resolves against the process
    return _Context(environ=os.environ, base_dir=Path.cwd())


@dataclasses.dataclass(frozen=True)
class _Resolved:
    value: pydantic.SecretStr | None
    source: str
    path: Path | None = None
    key: str = ""


#: a secret file holds one token or URL: anything larger is not the file it should be
SECRET_FILE_MAX = 64 * 1024
#: a config file for thousands of accounts is well below this
CONFIG_FILE_MAX = 16 * 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class _NotRegular(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _TooLarge(Exception):
    pass


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Never blocks and never opens anything but a regular file: a FIFO, a device or a socket is
    refused from ``stat`` before it is opened (opening some devices has effects), and the open
    itself is non-blocking. Raises ``OSError``, ``ValueError`` (a NUL in the path),
    :class:`_NotRegular` or :class:`_TooLarge`.
    """
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise _NotRegular(_kind(before.st_mode))
    if before.st_size > limit:
        raise _TooLarge
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # replaced between the stat and the open
            raise _NotRegular(_kind(opened.st_mode))
        data = bytearray()
        while chunk := os.read(fd, limit + 1 - len(data)):
            data += chunk
            if len(data) > limit:  # it grew after the stat
                raise _TooLarge
        return bytes(data)
    finally:
        os.close(fd)


def _show_size(size: int) -> str:
    return f"{size // 1024**2}MiB" if size >= 1024**2 else f"{size // 1024}KiB"


def _read_secret_file(path: Path, what: str, key: str) -> str:
    try:
        text = read_bounded(path, SECRET_FILE_MAX).decode("utf-8")
    except FileNotFoundError:
        raise _problem(
            f"file {path} does not exist: create it holding the {what}, or fix the path", (key,)
        ) from None
    except (IsADirectoryError, NotADirectoryError):
        raise _problem(
            f"{path} is not a file: it must be a file holding the {what}", (key,)
        ) from None
    except _NotRegular as exc:
        if exc.kind == "a directory":
            message = f"{path} is a directory: it must be a file holding the {what}"
        else:
            message = (
                f"{path} is {exc.kind}, not a regular file: it must be a file holding the {what}"
            )
        raise _problem(message, (key,)) from None
    except _TooLarge:
        raise _problem(
            f"file {path} is larger than {_show_size(SECRET_FILE_MAX)}: it must hold only "
            f"the {what}",
            (key,),
        ) from None
    except PermissionError:
        raise _problem(
            f"file {path} cannot be read by this user (uid {os.getuid()}): fix its owner or mode",
            (key,),
        ) from None
    except UnicodeDecodeError:
        raise _problem(
            f"file {path} is not UTF-8 text: it must hold only the {what}", (key,)
        ) from None
    except ValueError:
        raise _problem(f"{str(path)!r} is not a valid path (it holds a NUL byte)", (key,)) from None
    except OSError as exc:
        raise _problem(f"file {path} cannot be read ({exc.strerror}): fix it", (key,)) from None
    secret = text.strip()
    if not secret:
        raise _problem(f"file {path} is empty: it must hold the {what}", (key,))
    problem = _secret_text_problem(secret)
    if problem:
        raise _problem(f"file {path} {problem}: it must hold only the {what}", (key,))
    return secret


def _secret_text_problem(secret: str) -> str | None:
    """Why a secret cannot go into an HTTP header or a DSN as it is, if it cannot."""
    if "\n" in secret or "\r" in secret:
        return "holds more than one line"
    if any(ord(c) < 32 or ord(c) == 127 for c in secret):
        return "holds control characters"
    return None


def _resolve_secret(
    model: pydantic.BaseModel,
    prefix: str,
    what: str,
    ctx: _Context,
    *,
    required: bool,
) -> _Resolved:
    """Resolve one secret from ``<prefix>``, ``<prefix>_file``, ``_env`` or ``_credential``."""
    candidates = (prefix, f"{prefix}_file", f"{prefix}_env", f"{prefix}_credential")
    keys = [k for k in candidates if k in type(model).model_fields]
    # fields_set, not the value: Account.token has a placeholder default rather than None
    given = [k for k in keys if k in model.model_fields_set and getattr(model, k) is not None]
    if len(given) > 1:
        listed = f"{', '.join(given[:-1])} and {given[-1]}"
        raise _problem(
            f"{listed} are {'both' if len(given) == 2 else 'all'} set: "
            f"keep exactly one source for the {what}",
            (given[1],),
        )
    if not given:
        if required:
            raise _problem(f"no {what}: set one of {', '.join(keys[1:])} (or {prefix})")
        return _Resolved(None, "not set")
    key = given[0]
    if key == prefix:
        literal: pydantic.SecretStr = getattr(model, prefix)
        if not literal.get_secret_value().strip():
            raise _problem(f"{prefix} is empty: it must hold the {what}", (prefix,))
        secret = pydantic.SecretStr(literal.get_secret_value().strip())
        return _Resolved(secret, "the configuration (literal value)", key=key)
    if key.endswith("_file"):
        written: Path = getattr(model, key)
        try:
            path = written.expanduser()
        except RuntimeError:  # "~someone" for a user that does not exist here
            raise _problem(f"cannot expand {str(written)!r}: write the full path", (key,)) from None
        if not path.is_absolute():
            path = ctx.base_dir / path
        secret = pydantic.SecretStr(_read_secret_file(path, what, key))
        return _Resolved(secret, f"file {path}", path, key)
    if key.endswith("_env"):
        name: str = getattr(model, key)
        value = ctx.environ.get(name)
        if value is None:
            raise _problem(
                f"environment variable {name} is not set: export it with the {what}, "
                f"or use {prefix}_file",
                (key,),
            )
        if not value.strip():
            raise _problem(f"environment variable {name} is empty: it must hold the {what}", (key,))
        problem = _secret_text_problem(value.strip())
        if problem:
            raise _problem(
                f"environment variable {name} {problem}: it must hold only the {what}", (key,)
            )
        secret = pydantic.SecretStr(value.strip())
        return _Resolved(secret, f"environment variable {name}", key=key)
    credential: str = getattr(model, key)
    directory = ctx.environ.get(ENV_CREDENTIALS)
    if not directory:
        raise _problem(
            f"$CREDENTIALS_DIRECTORY is not set, so credential {credential!r} cannot be found: "
            f"systemd sets it for LoadCredential=; outside systemd use {prefix}_file",
            (key,),
        )
    path = Path(directory) / credential
    secret = pydantic.SecretStr(_read_secret_file(path, what, key))
    return _Resolved(secret, f"credential {credential} ({path})", path, key)


# --------------------------------------------------------------------------- sections


def _replace(model: pydantic.BaseModel, field: str, value: object) -> None:
    """Set a field of a frozen model while it is being validated (a secret just resolved)."""
    # Pydantic warns when an after-validator returns a copy instead of self, and the instance is
    # not shared with anyone yet, so writing past the frozen guard is safe here and only here.
    object.__setattr__(model, field, value)


class Section(pydantic.BaseModel):
    """A frozen table of the config file; unknown keys are errors."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", validate_default=True)


class DatabaseSettings(Section):
    """``[database]``: where PostgreSQL is; no DSN means the embedded PostgreSQL."""

    dsn: pydantic.SecretStr | None = None
    dsn_file: Path | None = None
    dsn_credential: CredentialName | None = None
    pool_min_size: int = pydantic.Field(default=1, ge=1, le=1000)
    pool_max_size: int = pydantic.Field(default=10, ge=1, le=1000)
    connect_timeout: Timeout = timedelta(seconds=10)
    command_timeout: Timeout = timedelta(seconds=60)

    _resolved: pydantic.SecretStr | None = pydantic.PrivateAttr(None)
    _source: str = pydantic.PrivateAttr("not set")

    @pydantic.model_validator(mode="after")
    def _check(self) -> Self:
        if self.pool_max_size < self.pool_min_size:
            raise _problem(
                f"must be at least pool_min_size ({self.pool_min_size}), got {self.pool_max_size}",
                ("pool_max_size",),
            )
        resolved = _resolve_secret(self, "dsn", "PostgreSQL DSN", _context(), required=False)
        if resolved.value is not None:
            scheme = urllib.parse.urlsplit(resolved.value.get_secret_value()).scheme
            if scheme not in ("postgresql", "postgres"):
                raise _problem(
                    "must be a PostgreSQL URL such as "
                    "postgresql://collector:PASSWORD@localhost:5432/collector",
                    (resolved.key,),
                )
        self._resolved = resolved.value
        self._source = resolved.source
        return self

    def resolved_dsn(self) -> str | None:
        """The DSN (read from its file or credential at load time); ``None``: embedded."""
        return None if self._resolved is None else self._resolved.get_secret_value()

    @property
    def dsn_source(self) -> str:
        """Where the DSN came from, for ``check`` output (never the DSN)."""
        return self._source

    def with_dsn(self, dsn: str, source: str) -> DatabaseSettings:
        """A copy that connects to ``dsn`` (the embedded server's, found at run time)."""
        copy = self.model_copy()
        copy._resolved = pydantic.SecretStr(dsn)
        copy._source = source
        return copy

    def dsn_for_display(self) -> str:
        """The DSN with its password masked, or a note that the embedded PostgreSQL is used."""
        dsn = self.resolved_dsn()
        return "(embedded PostgreSQL)" if dsn is None else mask_dsn(dsn)


def mask_dsn(dsn: str) -> str:
    """Mask the password of a PostgreSQL URL (userinfo and ``password=`` parameter)."""
    parts = urllib.parse.urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


class GraphSettings(Section):
    """``[graph]``: the Graph API endpoint, the app credentials and the HTTP client."""

    base_url: str = "https://graph.facebook.com"
    #: the host of the Instagram API with Instagram Login (accounts with login = "instagram")
    instagram_base_url: str = "https://graph.instagram.com"
    api_version: str = "v25.0"
    app_id: AppId | None = None
    app_secret: pydantic.SecretStr | None = None
    app_secret_file: Path | None = None
    app_secret_env: EnvName | None = None
    app_secret_credential: CredentialName | None = None
    timeout: Timeout = timedelta(seconds=30)
    connect_timeout: Timeout = timedelta(seconds=10)
    max_retries: int = pydantic.Field(default=4, ge=0, le=10)
    retry_base: Backoff = timedelta(seconds=1)
    retry_max: Backoff = timedelta(seconds=60)
    page_size: int = pydantic.Field(default=50, ge=1, le=100)
    max_body_bytes: pydantic.ByteSize = pydantic.Field(
        default=pydantic.ByteSize(8 * 1024 * 1024), ge=64 * 1024, le=256 * 1024 * 1024
    )
    max_pages: int = pydantic.Field(default=1000, ge=1, le=100_000)

    _app_secret_source: str = pydantic.PrivateAttr("not set")

    @pydantic.field_validator("base_url", "instagram_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value.strip())
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise _value_error(
                "must be an http(s) URL without a path, e.g. 'https://graph.facebook.com' "
                "(or 'https://graph.instagram.com' for instagram_base_url)"
            )
        return f"{parts.scheme}://{parts.netloc}"

    @pydantic.field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if not _API_VERSION.fullmatch(value):
            raise _value_error("must be a Graph API version such as 'v25.0'")
        return value

    @pydantic.model_validator(mode="after")
    def _check(self) -> Self:
        if self.retry_max < self.retry_base:
            raise _problem(
                f"must be at least retry_base ({format_duration(self.retry_base)}), "
                f"got {format_duration(self.retry_max)}",
                ("retry_max",),
            )
        resolved = _resolve_secret(self, "app_secret", "app secret", _context(), required=False)
        _replace(self, "app_secret", resolved.value)
        self._app_secret_source = resolved.source
        return self

    @property
    def app_secret_source(self) -> str:
        """Where the app secret came from (never the secret)."""
        return self._app_secret_source


class LimitsSettings(Section):
    """``[limits]``: concurrency and the usage levels at which calls slow down and stop."""

    max_in_flight: int = pydantic.Field(default=8, ge=1, le=1000)
    per_account_in_flight: int = pydantic.Field(default=1, ge=1, le=10)
    usage_high_water: Percent = 80.0
    usage_pause: Percent = 95.0
    throttle_floor: Backoff = timedelta(seconds=60)
    app_backoff_max: Backoff = timedelta(minutes=15)

    @pydantic.model_validator(mode="after")
    def _check(self) -> Self:
        if self.usage_pause < self.usage_high_water:
            raise _problem(
                f"must be at least usage_high_water ({self.usage_high_water:g}), "
                f"got {self.usage_pause:g}",
                ("usage_pause",),
            )
        return self


class MediaTier(Section):
    """Media younger than ``max_age`` are polled every ``every``."""

    max_age: Duration
    every: Every


DEFAULT_MEDIA_TIERS = (
    MediaTier(max_age=timedelta(days=2), every=timedelta(hours=1)),
    MediaTier(max_age=timedelta(days=14), every=timedelta(hours=6)),
    MediaTier(max_age=timedelta(days=90), every=timedelta(days=1)),
    MediaTier(max_age=timedelta(days=730), every=timedelta(days=7)),
)


#: Meta removes a story (and its insights) 24 hours after it is posted
STORY_LIFETIME = timedelta(hours=24)


class ScheduleSettings(Section):
    """``[schedule]``: how often each job runs."""

    profile_every: Every = timedelta(hours=1)
    account_insights_every: Every = timedelta(hours=6)
    account_insights_repoll_days: int = pydantic.Field(default=3, ge=0, le=30)
    account_insights_backfill_days: int = pydantic.Field(default=90, ge=1, le=90)
    demographics_every: Every = timedelta(days=1)
    demographics_timeframe: Literal["this_week", "this_month"] = "this_month"
    media_discovery_every: Every = timedelta(hours=1)
    media_insights_max_age: Duration = timedelta(days=730)
    media_tiers: tuple[MediaTier, ...] = DEFAULT_MEDIA_TIERS
    story_discovery_every: Every = timedelta(minutes=10)
    story_poll_every: Every = timedelta(hours=2)
    story_final_lead: StoryDuration = timedelta(minutes=25)
    story_lifetime: StoryDuration = STORY_LIFETIME
    token_check_every: Every = timedelta(days=1)
    token_expiry_warning: Every = timedelta(days=7)

    @pydantic.model_validator(mode="after")
    def _check(self) -> Self:
        if not self.media_tiers:
            raise _problem(
                'must list at least one tier, e.g. [{max_age = "730d", every = "1d"}]',
                ("media_tiers",),
            )
        for index in range(1, len(self.media_tiers)):
            previous, tier = self.media_tiers[index - 1], self.media_tiers[index]
            if tier.max_age <= previous.max_age:
                raise _problem(
                    f"must be greater than media_tiers[{index - 1}].max_age "
                    f"({format_duration(previous.max_age)}): list tiers from youngest to oldest, "
                    f"got {format_duration(tier.max_age)}",
                    ("media_tiers", index, "max_age"),
                )
        if self.story_final_lead >= self.story_lifetime:
            # an example that fits this lifetime: never the value just rejected
            default = timedelta(minutes=25)
            example = format_duration(
                default if default < self.story_lifetime else self.story_lifetime / 4
            )
            raise _problem(
                "must be shorter than a story's lifetime "
                f"({format_duration(self.story_lifetime)}), e.g. '{example}', "
                f"got {format_duration(self.story_final_lead)}",
                ("story_final_lead",),
            )
        return self

    def media_poll_interval(self, age: timedelta) -> timedelta | None:
        """How often a media object of this age is polled; ``None``: not any more."""
        if age >= self.media_insights_max_age:
            return None
        return next((t.every for t in self.media_tiers if age < t.max_age), None)


class StateSettings(Section):
    """``[state]``: the state directory (spool, embedded PostgreSQL) and its limits."""

    directory: Path = DEFAULT_STATE_DIRECTORY
    spool_max_bytes: Annotated[pydantic.ByteSize, _size_at_most(1024**4, "1TiB")] = pydantic.Field(
        default=pydantic.ByteSize(256 * 1024 * 1024), ge=1
    )


class WebSettings(Section):
    """``[web]``: the HTTP server for ``/metrics``, ``/healthz`` and the webhook."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = pydantic.Field(default=9108, ge=0, le=65535)
    webhook_verify_token: pydantic.SecretStr | None = None
    webhook_verify_token_file: Path | None = None
    webhook_verify_token_env: EnvName | None = None
    webhook_verify_token_credential: CredentialName | None = None
    webhook_max_body: Annotated[pydantic.ByteSize, _size_at_most(64 * 1024**2, "64MiB")] = (
        pydantic.Field(default=pydantic.ByteSize(1024 * 1024), ge=1)
    )
    header_timeout: Timeout = timedelta(seconds=10)
    body_timeout: Timeout = timedelta(seconds=30)
    max_connections: int = pydantic.Field(default=100, ge=1, le=10000)

    @pydantic.model_validator(mode="after")
    def _check(self) -> Self:
        resolved = _resolve_secret(
            self, "webhook_verify_token", "webhook verify token", _context(), required=False
        )
        _replace(self, "webhook_verify_token", resolved.value)
        return self


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


class LogSettings(Section):
    """``[log]``: level and format of the log lines."""

    level: Annotated[
        Literal["debug", "info", "warning", "error"], pydantic.BeforeValidator(_lower)
    ] = "info"
    format: Annotated[Literal["auto", "json", "console"], pydantic.BeforeValidator(_lower)] = "auto"


def _keep(value: object) -> timedelta | None:
    # "0" (or 0) means keep forever; anything else is a duration such as "400d"
    if value is None or (
        isinstance(value, int | float | str) and str(value).strip() in ("0", "0.0")
    ):
        return None
    try:
        return parse_duration(value)
    except pydantic_core.PydanticCustomError:
        raise _value_error(
            'must be "0" (keep forever) or a positive duration such as "400d" or "730d"'
        ) from None


Keep = Annotated[
    timedelta | None,
    pydantic.BeforeValidator(_keep),
    pydantic.PlainSerializer(
        lambda v: "0" if v is None else format_duration(v), return_type=str, when_used="json"
    ),
]


class RetentionSettings(Section):
    """``[retention]``: how long metric history is kept (dropped by whole months, never DELETEd)."""

    media_metric: Keep = None
    account_metric: Keep = None


class ShutdownSettings(Section):
    """``[shutdown]``: how long SIGTERM waits for in-flight work."""

    drain_timeout: Timeout = timedelta(seconds=20)


class ClusterSettings(Section):
    """``[cluster]``: several processes share the accounts through leases in PostgreSQL."""

    enabled: bool = False
    lease_ttl: Duration = timedelta(seconds=30)
    heartbeat: Duration = timedelta(seconds=10)
    #: this process's name among the members (default: host name and process id)
    name: AccountName | None = None
    #: the key that seals renewed Instagram Login tokens in the database: the same file on
    #: every member (64 hex digits, mode 0600); the database never sees it
    secret_file: Path | None = None
    secret_credential: CredentialName | None = None

    _key: bytes | None = pydantic.PrivateAttr(None)

    @pydantic.model_validator(mode="after")
    def _check(self) -> Self:
        resolved = _resolve_secret(self, "secret", CLUSTER_KEY_WHAT, _context(), required=False)
        if resolved.value is not None:
            key = resolved.key
            if resolved.path is not None and key == "secret_file":
                mode = stat.S_IMODE(os.stat(resolved.path).st_mode)
                if mode & 0o077:
                    raise _problem(
                        f"file {resolved.path} may be read by other users (mode {mode:04o}): "
                        f"run chmod 600 {resolved.path}",
                        (key,),
                    )
            text = resolved.value.get_secret_value()
            if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
                raise _problem(
                    f"{resolved.source} must hold a 256-bit key as 64 hex digits: create it "
                    f"with {CLUSTER_KEY_HOWTO}",
                    (key,),
                )
            self._key = bytes.fromhex(text)
        if self.lease_ttl < timedelta(seconds=2):
            raise _problem(
                f"must be at least 2s, e.g. '30s', got {format_duration(self.lease_ttl)}",
                ("lease_ttl",),
            )
        if self.heartbeat * 2 > self.lease_ttl:
            raise _problem(
                "must be at most half of lease_ttl "
                f"({format_duration(self.lease_ttl)}) so that a lease is renewed twice before "
                f"it can expire, got {format_duration(self.heartbeat)}",
                ("heartbeat",),
            )
        return self

    def member_name(self) -> str:
        """The name this process goes by in the lease table."""
        return self.name or f"{socket.gethostname()}-{os.getpid()}"

    def key(self) -> bytes | None:
        """The sealing key read from ``secret_file`` (or ``secret_credential``), if set."""
        return self._key


CLUSTER_KEY_WHAT = "cluster sealing key"
CLUSTER_KEY_HOWTO = (
    "`umask 077; openssl rand -hex 32 > /etc/collector/cluster.key` (or `python3 -c "
    "'import secrets; print(secrets.token_hex(32))'`) and copy the same file to every machine"
)


class TokensSettings(Section):
    """``[tokens]``: renewal of Instagram Login tokens (Facebook Login tokens are only watched)."""

    refresh_before: Duration = timedelta(days=10)
    park_before: Duration = timedelta(days=1)

    @pydantic.model_validator(mode="after")
    def _check(self) -> Self:
        if self.park_before >= self.refresh_before:
            raise _problem(
                f"must be shorter than refresh_before ({format_duration(self.refresh_before)}): "
                "the collector tries to renew a token before it gives up on it, "
                f"got {format_duration(self.park_before)}",
                ("park_before",),
            )
        if self.refresh_before >= INSTAGRAM_TOKEN_LIFETIME:
            raise _problem(
                "must be shorter than an Instagram Login token's 60-day lifetime, e.g. '10d', "
                f"got {format_duration(self.refresh_before)}",
                ("refresh_before",),
            )
        return self


#: how long a refreshed Instagram Login token lives (refresh_access_token reference)
INSTAGRAM_TOKEN_LIFETIME = timedelta(days=60)

Login = Annotated[Literal["facebook", "instagram"], pydantic.BeforeValidator(_lower)]

#: metrics only the Instagram API with Facebook Login serves (docs/graph-api-notes.md §2)
FACEBOOK_LOGIN_ONLY_METRICS = frozenset(
    {"total_likes", "total_comments", "total_views", "link_clicks"}
)

_FILTER = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,64}")


def _filter_entry(value: object) -> object:
    if not isinstance(value, str) or not _FILTER.fullmatch(value.strip()):
        raise _value_error(
            "each entry must be an Instagram username, a shell glob over usernames "
            "(e.g. 'acme*') or a numeric ig_user_id, 1-64 characters"
        )
    return value.strip()


FilterEntry = Annotated[str, pydantic.BeforeValidator(_filter_entry)]


_UNRESOLVED = pydantic.SecretStr("")


class _Tokened(Section):
    """Where a table's access token is: exactly one of token_file, token_env, token_credential
    (or token itself); resolved once, and it remembers where it came from."""

    token: pydantic.SecretStr = _UNRESOLVED
    token_file: Path | None = None
    token_env: EnvName | None = None
    token_credential: CredentialName | None = None

    _token_source: str = pydantic.PrivateAttr("")
    _token_path: Path | None = pydantic.PrivateAttr(None)

    def _take_token(self) -> None:
        resolved = _resolve_secret(self, "token", "access token", _context(), required=True)
        _replace(self, "token", resolved.value)
        self._token_source = resolved.source
        self._token_path = resolved.path

    @property
    def token_source(self) -> str:
        """Where the token came from, e.g. ``file /etc/collector/tokens/acme`` (never the token)."""
        return self._token_source

    @property
    def token_path(self) -> Path | None:
        """The file the token was read from (token_file or credential), to notice changes."""
        return self._token_path

    @property
    def token_is_literal(self) -> bool:
        """The token is written in the configuration itself."""
        return self._token_path is None and self.token_env is None


class Account(_Tokened):
    """``[[accounts]]``: one Instagram professional account and where its token is."""

    name: AccountName
    ig_user_id: IgUserId
    enabled: bool = True
    login: Login = "facebook"
    metrics: Mapping[models.ObjectKind, tuple[MetricName, ...]] = pydantic.Field(
        default_factory=dict
    )

    @pydantic.model_validator(mode="after")
    def _resolve_token(self) -> Self:
        if self.login == "instagram":
            for kind, names in self.metrics.items():
                wrong = sorted(set(names) & FACEBOOK_LOGIN_ONLY_METRICS)
                if wrong:
                    raise _problem(
                        f"{', '.join(wrong)}: only the Instagram API with Facebook Login serves "
                        f"{'it' if len(wrong) == 1 else 'them'}: remove "
                        f'{"it" if len(wrong) == 1 else "them"} or set login = "facebook"',
                        ("metrics", str(kind)),
                    )
        self._take_token()
        return self

    def row(self) -> models.AccountRow:
        """The account as the store records it."""
        return models.AccountRow(
            ig_user_id=models.IgUserId(self.ig_user_id),
            name=self.name,
            enabled=self.enabled,
            login=self.login,
        )


class Source(_Tokened):
    """``[[sources]]``: one token that lists accounts (``/me/accounts``, or ``/me``)."""

    name: AccountName
    login: Login = "facebook"
    allow: tuple[FilterEntry, ...] = ()
    deny: tuple[FilterEntry, ...] = ()
    every: Duration = timedelta(days=1)

    @pydantic.model_validator(mode="after")
    def _resolve_token(self) -> Self:
        self._take_token()
        return self


class Settings(pydantic_settings.BaseSettings):
    """Everything the collector is configured with; built by :func:`load`, then never changed."""

    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    database: DatabaseSettings = pydantic.Field(default_factory=DatabaseSettings)
    graph: GraphSettings = pydantic.Field(default_factory=GraphSettings)
    limits: LimitsSettings = pydantic.Field(default_factory=LimitsSettings)
    schedule: ScheduleSettings = pydantic.Field(default_factory=ScheduleSettings)
    state: StateSettings = pydantic.Field(default_factory=StateSettings)
    web: WebSettings = pydantic.Field(default_factory=WebSettings)
    log: LogSettings = pydantic.Field(default_factory=LogSettings)
    shutdown: ShutdownSettings = pydantic.Field(default_factory=ShutdownSettings)
    retention: RetentionSettings = pydantic.Field(default_factory=RetentionSettings)
    cluster: ClusterSettings = pydantic.Field(default_factory=ClusterSettings)
    tokens: TokensSettings = pydantic.Field(default_factory=TokensSettings)
    #: run with no enabled account without complaint (see :func:`no_accounts_problem`)
    allow_no_accounts: bool = False
    accounts: tuple[Account, ...] = ()
    sources: tuple[Source, ...] = ()

    _source_path: Path | None = pydantic.PrivateAttr(None)
    _warnings: tuple[str, ...] = pydantic.PrivateAttr(())
    _systemd_env: Mapping[str, str] = pydantic.PrivateAttr(
        default_factory=lambda: types.MappingProxyType({})
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[pydantic_settings.BaseSettings],
        init_settings: pydantic_settings.PydanticBaseSettingsSource,
        env_settings: pydantic_settings.PydanticBaseSettingsSource,
        dotenv_settings: pydantic_settings.PydanticBaseSettingsSource,
        file_secret_settings: pydantic_settings.PydanticBaseSettingsSource,
    ) -> tuple[pydantic_settings.PydanticBaseSettingsSource, ...]:
        # Settings(...) takes only its arguments: load() merges the file and the environment it
        # was given, so nothing reads os.environ behind a test's back.
        return (init_settings,)

    @pydantic.model_validator(mode="after")
    def _check_accounts(self) -> Self:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for key in ("name", "ig_user_id"):
            first: dict[str, int] = {}
            for index, account in enumerate(self.accounts):
                value = getattr(account, key)
                if value in first:
                    problems.append(
                        (
                            ("accounts", index, key),
                            f"{value!r} is also the {key} of accounts[{first[value]}]: "
                            f"each account needs its own {key}",
                        )
                    )
                else:
                    first[value] = index
        seen: dict[str, int] = {}
        for index, source in enumerate(self.sources):
            if source.name in seen:
                problems.append(
                    (
                        ("sources", index, "name"),
                        f"{source.name!r} is also the name of sources[{seen[source.name]}]: "
                        "each source needs its own name",
                    )
                )
            else:
                seen[source.name] = index
        if self.cluster.enabled and self.cluster.key() is None:
            renewing = [a.name for a in self.accounts if a.login == "instagram" and a.enabled]
            renewing += [f"sources.{s.name}" for s in self.sources if s.login == "instagram"]
            if renewing:
                shown = ", ".join(renewing[:3]) + (", …" if len(renewing) > 3 else "")
                problems.append(
                    (
                        ("cluster", "secret_file"),
                        f"cluster mode with Instagram Login accounts ({shown}) needs a key "
                        "shared by every member, so that a token one member renews reaches the "
                        f"next holder sealed: create it with {CLUSTER_KEY_HOWTO}, then set "
                        'secret_file = "/etc/collector/cluster.key" (or secret_credential) in '
                        "[cluster]",
                    )
                )
        if problems:
            raise pydantic_core.PydanticCustomError(
                "config_many", "duplicate accounts", {"problems": problems}
            )
        return self

    @property
    def source_path(self) -> Path | None:
        """The config file this was loaded from, if any."""
        return self._source_path

    @property
    def systemd_env(self) -> Mapping[str, str]:
        """``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID`` as given to :func:`load`."""
        return self._systemd_env

    @property
    def warnings(self) -> tuple[str, ...]:
        """Things that work but should be changed (a token written in the file)."""
        return self._warnings

    def with_embedded_dsn(self, dsn: str) -> Settings:
        """A copy whose database is the embedded PostgreSQL listening at ``dsn``."""
        return self.model_copy(
            update={"database": self.database.with_dsn(dsn, "embedded PostgreSQL")}
        )

    def enabled_accounts(self) -> tuple[Account, ...]:
        """The accounts to collect (``enabled = true``)."""
        return tuple(a for a in self.accounts if a.enabled)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for the log redaction processor."""
        values = [a.token.get_secret_value() for a in self.accounts]
        values += [s.token.get_secret_value() for s in self.sources]
        for secret in (self.graph.app_secret, self.web.webhook_verify_token):
            if secret is not None:
                values.append(secret.get_secret_value())
        key = self.cluster.key()
        if key is not None:
            values += [key.hex(), key.hex().upper()]
        dsn = self.database.resolved_dsn()
        if dsn is not None:
            values.append(dsn)
            password = urllib.parse.urlsplit(dsn).password
            if password:
                values.append(urllib.parse.unquote(password))
        return tuple(v for v in values if v)


def no_accounts_problem(settings: Settings) -> str | None:
    """Why these settings give the daemon nothing to collect, if they do.

    The rule: a configuration must enable at least one account, or list a ``[[sources]]``
    table (it produces accounts at run time), or say ``allow_no_accounts = true`` (top level).
    So a config file truncated to nothing, or one whose every account is disabled by mistake,
    is refused by a reload (the running config stays), fails ``check`` and does not start the
    daemon, instead of stopping every account without an error.
    """
    # a [[sources]] table produces accounts at run time: it counts as configured accounts
    if settings.allow_no_accounts or settings.enabled_accounts() or settings.sources:
        return None
    where = settings.source_path or "the configuration (no config file given)"
    disabled = len(settings.accounts)
    found = f"all {disabled} accounts are disabled" if disabled else "no [[accounts]] table"
    return (
        f"{where}: no enabled account ({found}): add or enable an [[accounts]] table, or add a "
        "[[sources]] table (see config/collector.example.toml), or set allow_no_accounts = true "
        "at the top of the file to run without one"
    )


# --------------------------------------------------------------------------- loading


class _EnvSource(pydantic_settings.EnvSettingsSource):
    """pydantic-settings' environment source, reading the mapping given to :func:`load`."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # overrides the one place the base class reads os.environ; names are case-insensitive
        return {k.lower(): v for k, v in self._environ.items() if v != ""}


def load(path: Path | None = None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load the settings from ``path`` (else ``$COLLECTOR_CONFIG``) and ``COLLECTOR_*`` variables.

    Without a file the settings come from defaults and the environment alone (no accounts: fine
    for ``migrate``; callers that need accounts check). Raises :class:`errors.ConfigError`.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is None and env.get(ENV_CONFIG):
        path = Path(env[ENV_CONFIG])
    text = ""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        text = _read_config(path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise errors.ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        env_data = _EnvSource(env)()
    except pydantic_settings.SettingsError as exc:
        raise errors.ConfigError(
            f"invalid {ENV_PREFIX}* environment variable: {exc} (a table or list given in one "
            "variable must be JSON)"
        ) from None
    merged = _merge(data, env_data)
    state = merged.setdefault("state", {})
    if isinstance(state, dict) and "directory" not in state and env.get(ENV_STATE):
        # systemd's StateDirectory= exports the path(s), colon-separated; the first is ours
        state["directory"] = env[ENV_STATE].split(":")[0]
    ctx = _Context(environ=env, base_dir=path.parent if path is not None else Path.cwd())
    reset = _CURRENT.set(ctx)
    try:
        settings = Settings.model_validate(merged)
    except pydantic.ValidationError as exc:
        # from None: the chained ValidationError would print the inputs, secrets included
        raise errors.ConfigError(_report(exc, path, text, env)) from None
    finally:
        _CURRENT.reset(reset)
    settings._source_path = path
    settings._systemd_env = types.MappingProxyType({k: env[k] for k in SYSTEMD_ENV if k in env})
    settings._warnings = tuple(_warnings(settings, _env_paths(env)))
    return settings


#: how long a reload may take to read the config and its secret files
RELOAD_TIMEOUT = 10.0

# reload threads that overran their timeout and may still be stuck in the file system
_STUCK: list[threading.Thread] = []


async def load_in_thread(
    path: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    within: float = RELOAD_TIMEOUT,
    loader: Callable[..., Settings] | None = None,
) -> Settings:
    """:func:`load` off the event loop, giving up after ``within`` seconds.

    For SIGHUP: a file system that does not answer (a hung NFS mount) must never freeze the
    loop. The thread is a daemon thread, so one stuck for good never holds up the exit; while it
    is stuck, further reloads are refused rather than piling up threads.
    """
    _STUCK[:] = [t for t in _STUCK if t.is_alive()]
    if _STUCK:
        raise errors.ConfigError(
            f"a previous reload is still reading {path}: the file system does not answer; "
            "fix it, then reload again"
        )
    load_fn = loader or load
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Settings] = loop.create_future()

    def settle(result: Settings | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(typing.cast(Settings, result))

    def work() -> None:
        try:
            result = load_fn(path, environ=environ)
        except BaseException as exc:  # handed to the awaiting coroutine, whatever it is
            outcome: tuple[Settings | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    thread = threading.Thread(target=work, name="config-reload", daemon=True)
    thread.start()
    try:
        return await asyncio.wait_for(asyncio.shield(future), within)
    except TimeoutError:
        _STUCK.append(thread)
        # the outcome, if it ever comes, is nobody's any more: consume it quietly
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise errors.ConfigError(
            f"reading {path} took more than {within:g}s (a file system that does not answer?)"
        ) from None


def _read_config(path: Path) -> str:
    try:
        return read_bounded(path, CONFIG_FILE_MAX).decode("utf-8")
    except FileNotFoundError:
        raise errors.ConfigError(
            f"config file {path} does not exist: pass an existing file with --config or "
            f"{ENV_CONFIG} (config/collector.example.toml is a template)"
        ) from None
    except _NotRegular as exc:
        raise errors.ConfigError(
            f"config file {path} is {exc.kind}, not a regular file: pass the TOML file itself"
        ) from None
    except _TooLarge:
        raise errors.ConfigError(
            f"config file {path} is larger than {_show_size(CONFIG_FILE_MAX)}: is it the "
            "right file?"
        ) from None
    except PermissionError:
        raise errors.ConfigError(
            f"config file {path} cannot be read by this user (uid {os.getuid()}): "
            "fix its owner or mode"
        ) from None
    except UnicodeDecodeError as exc:
        raise errors.ConfigError(f"config file {path} is not UTF-8 text: {exc.reason}") from None
    except ValueError:
        raise errors.ConfigError(f"config file {str(path)!r}: not a valid path") from None
    except OSError as exc:
        raise errors.ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def _warnings(settings: Settings, env_paths: Mapping[tuple[str | int, ...], str]) -> list[str]:
    found = []
    for index, account in enumerate(settings.accounts):
        if account.token_is_literal and ("accounts",) not in env_paths:
            found.append(
                f"accounts[{index}] ({account.name}): the token is written in the config file; "
                "prefer token_file, token_env or token_credential"
            )
    for index, source in enumerate(settings.sources):
        if source.token_is_literal and ("sources",) not in env_paths:
            found.append(
                f"sources[{index}] ({source.name}): the token is written in the config file; "
                "prefer token_file, token_env or token_credential"
            )
    if settings.graph.app_secret_source.startswith("the configuration") and not any(
        p[:2] in (("graph",), ("graph", "app_secret")) for p in env_paths
    ):
        found.append(
            "graph.app_secret: the app secret is written in the config file; "
            "prefer app_secret_file, app_secret_env or app_secret_credential"
        )
    return found


# --------------------------------------------------------------------------- error reports


def _report(
    exc: pydantic.ValidationError, path: Path | None, text: str, env: Mapping[str, str]
) -> str:
    lines = _key_lines(text)
    env_paths = _env_paths(env)
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "config_many":
            entries = [(tuple(p_loc), msg) for p_loc, msg in ctx["problems"]]
        else:
            entries = [(loc + tuple(ctx.get("key", ())), _message(error))]
        for entry_loc, message in entries:
            where = _where(entry_loc, path, lines, env_paths)
            problems.append(f"  {_render(entry_loc)}: {message}{where}")
    source = f"in {path}" if path is not None else "(no config file: defaults and environment)"
    count = len(problems)
    header = f"invalid configuration {source}: {count} problem{'s' if count != 1 else ''}"
    return "\n".join([header, *problems])


def _message(error: pydantic_core.ErrorDetails) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return f"required key is missing: add {loc[-1]} = …"
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    message = error["msg"]
    if kind != "config_value":
        message = message.replace("Input should be", "must be")
        message = message[:1].lower() + message[1:]
    given = error.get("input")
    secret = any(part in SECRET_KEYS for part in loc if isinstance(part, str))
    if not secret and isinstance(given, str | int | float | bool) and kind != "config":
        message += f", got {given!r}"
    return message


def _unknown_key(loc: tuple[str | int, ...]) -> str:
    key = str(loc[-1])
    valid = _valid_keys(loc[:-1])
    if not valid:
        return "unknown key: remove it"
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key: {hint}valid keys here are {', '.join(valid)}"


def _valid_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed at ``loc``, walking the models' annotations."""
    annotation: Any = Settings
    for part in loc:
        model = _model_of(annotation)
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
    model = _model_of(annotation)
    if model is None:
        return []
    return list(model.model_fields)


def _model_of(annotation: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model = _model_of(arg)
            if model is not None:
                return model
    return None


def _render(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _where(
    loc: tuple[str | int, ...],
    path: Path | None,
    lines: Mapping[tuple[str | int, ...], int],
    env_paths: Mapping[tuple[str | int, ...], str],
) -> str:
    key_loc = tuple(p for p in loc if p != "[key]")
    for length in range(len(key_loc), 0, -1):
        if key_loc[:length] in env_paths:
            return f" (environment variable {env_paths[key_loc[:length]]})"
    if path is None:
        return ""
    for length in range(len(key_loc), 0, -1):
        if key_loc[:length] in lines:
            return f" ({path.name} line {lines[key_loc[:length]]})"
    return ""


def _env_paths(env: Mapping[str, str]) -> dict[tuple[str | int, ...], str]:
    """``COLLECTOR_LIMITS__MAX_IN_FLIGHT`` → ``("limits", "max_in_flight")``, for error reports."""
    paths: dict[tuple[str | int, ...], str] = {}
    for name, value in env.items():
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper != ENV_CONFIG and value != "":
            parts = tuple(upper[len(ENV_PREFIX) :].lower().split("__"))
            if parts[0] in Settings.model_fields:
                paths[parts] = name
    return paths


_TABLE = re.compile(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?")
_ASSIGN = re.compile(
    r"\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _split_key(key: str) -> tuple[str, ...]:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", key)
    return tuple(p.strip("\"'") for p in parts)


def _key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Best effort: the line on which each key path is written (array tables indexed from 0)."""
    found: dict[tuple[str | int, ...], int] = {}
    counters: dict[tuple[str | int, ...], int] = {}
    prefix: tuple[str | int, ...] = ()
    in_string = False
    for number, line in enumerate(text.splitlines(), 1):
        quotes = line.count('"""') + line.count("'''")
        if in_string:
            in_string = quotes % 2 == 0
            continue
        if match := _TABLE.fullmatch(line):
            path: tuple[str | int, ...] = ()
            parts = _split_key(match.group(2))
            for part in parts[:-1]:
                path += (part,)
                if path in counters:
                    path += (counters[path],)
            path += parts[-1:]
            if path in counters and match.group(1) == "[":
                path += (counters[path],)
            if match.group(1) == "[[":
                counters[path] = counters.get(path, -1) + 1
                path += (counters[path],)
            prefix = path
            found.setdefault(prefix, number)
        elif match := _ASSIGN.match(line):
            found.setdefault(prefix + _split_key(match.group(1)), number)
        if quotes % 2 == 1:
            in_string = True
    return found


# --------------------------------------------------------------------------- display


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for ``check`` and debug output, every secret masked."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["database"]["dsn"] = settings.database.dsn_for_display()
    data["database"]["dsn_source"] = settings.database.dsn_source
    data["graph"]["app_secret"] = _MASK if settings.graph.app_secret is not None else None
    data["graph"]["app_secret_source"] = settings.graph.app_secret_source
    data["web"]["webhook_verify_token"] = (
        _MASK if settings.web.webhook_verify_token is not None else None
    )
    for entry, account in zip(data["accounts"], settings.accounts, strict=True):
        entry["token"] = _MASK
        entry["token_source"] = account.token_source
    for entry, source in zip(data["sources"], settings.sources, strict=True):
        entry["token"] = _MASK
        entry["token_source"] = source.token_source
    data["source_path"] = None if settings.source_path is None else str(settings.source_path)
    data["warnings"] = list(settings.warnings)
    return data
