"""Every error the collector raises, and the classification of Graph API errors.

Graph errors are classified on ``code``/``error_subcode`` (and, for code 100, on the message),
never on the HTTP status or on ``type``: Meta sends ``OAuthException`` for almost everything.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from collector import parse

#: longest Graph error message kept (Meta's run to a few hundred characters)
_MAX_MESSAGE = 2000


class CollectorError(Exception):
    """The collector failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(CollectorError):
    """The configuration is invalid."""


class StoreError(CollectorError):
    """A database operation failed."""


class DatabaseUnavailable(StoreError):
    """PostgreSQL cannot be reached."""


class SpoolError(StoreError):
    """The spool could not take a batch (a full or failing disk); nothing of it was kept."""

    def __init__(self, message: str | None = None, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class LeaseLost(CollectorError):
    """This process no longer holds the account's lease (cluster mode): no call, no write."""


class SealBroken(CollectorError):
    """A sealed secret from the database does not open (another key, or damaged)."""


class SchemaError(CollectorError):
    """The database schema is not what this version of the collector expects."""


class PendingMigrations(SchemaError):
    """The database schema is behind: run `python -m collector migrate`."""

    def __init__(self, pending: list[str]) -> None:
        self.pending = pending
        super().__init__(
            f"the database schema is {len(pending)} migration(s) behind "
            f"({', '.join(pending)}): run `python -m collector migrate`"
        )


# --------------------------------------------------------------------------- Graph API errors


class GraphError(CollectorError):
    """The Graph API answered with an error."""

    #: retrying the same request later may succeed
    retryable = False
    #: what the job that raised this had collected before (a ``models.Batch``), to be stored
    batch: Any = None
    #: account insights stopped by this: every day bucket ending by then was collected, so
    #: the next job may resume there
    complete_until: datetime | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        code: int | None = None,
        subcode: int | None = None,
        fbtrace_id: str | None = None,
        http_status: int | None = None,
        user_title: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id
        self.http_status = http_status
        self.user_title = user_title
        self.retry_after = retry_after
        self.graph_message = message or ""
        super().__init__(message)

    def describe(self) -> str:
        """One line for logs and the database: code, subcode and message."""
        parts = []
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.subcode is not None:
            parts.append(f"subcode={self.subcode}")
        parts.append(str(self))
        return " ".join(parts)


class TransientError(GraphError):
    """A transient failure (codes 1, 2, HTTP 5xx, network); retry with backoff."""

    retryable = True


class Unreachable(TransientError):
    """The Graph API could not be reached (connection refused, reset, timeout)."""


class MalformedResponse(TransientError):
    """The Graph API answered with a body that is not the JSON we expected."""


class AppThrottled(GraphError):
    """The app is rate-limited (codes 4, 17, 32, 341, 613, 368); back off app-wide."""

    retryable = True


class AccountThrottled(GraphError):
    """This Instagram account's usage budget is exhausted (80002/80001); pause the account."""

    retryable = True


class BudgetPause(AccountThrottled):
    """The account's usage reached the pause mark: this job stops and waits (no call refused).

    ``batch`` holds what the job had collected before stopping, so none of it is lost.
    """

    def __init__(self, message: str, *, batch: Any = None) -> None:
        self.batch = batch
        super().__init__(message)


class AccountError(GraphError):
    """The account cannot be collected until an operator acts (token, permission)."""


class AccountUnreadable(AccountError):
    """The token cannot read the configured account (100/33 on the account node)."""


class TokenInvalid(AccountError):
    """The access token is invalid or expired (code 190)."""


class PermissionDenied(AccountError):
    """The token lacks a permission (code 10, 200-299, 3)."""


class ObjectError(GraphError):
    """A problem with one object (media, story), not with the account."""


class NotEnoughViewers(ObjectError):
    """Story insights are withheld below 5 viewers ("(#10) Not enough viewers")."""


class ObjectGone(ObjectError):
    """The object does not exist any more or cannot be loaded (100/33)."""


class BeforeConversion(ObjectError):
    """The media was posted before the account became a business account (100/2108006)."""


class ListingTruncated(GraphError):
    """A listing stopped before its end: a cursor came back again, or too many pages."""


class InvalidRequest(GraphError):
    """The request was invalid (code 100 and others)."""


class InvalidMetric(InvalidRequest):
    """Some requested metrics are not accepted for this object kind or API version."""

    def __init__(self, message: str, *, metrics: list[str], **kw: Any) -> None:
        self.metrics = metrics
        super().__init__(message, **kw)


class NeedsTotalValue(InvalidRequest):
    """These metrics must be requested with ``metric_type=total_value``."""

    def __init__(self, message: str, *, metrics: list[str], **kw: Any) -> None:
        self.metrics = metrics
        super().__init__(message, **kw)


class RangeTooLong(InvalidRequest):
    """``since``/``until`` span more than 30 days."""


class InvalidBreakdown(InvalidRequest):
    """A requested breakdown is not supported for that metric."""


APP_THROTTLE_CODES = frozenset({4, 17, 32, 341, 368, 613})
ACCOUNT_THROTTLE_CODES = frozenset({80001, 80002})

_MUST_BE_ONE_OF = re.compile(r"metric\[(\d+)\] must be one of the following values")
_NOT_SUPPORTED_MEDIA = re.compile(
    r"does not support the (\w+) metric|metric (\w+) is not supported|"
    r"the (\w+) metric is no longer supported"
)
_NEEDS_TOTAL_VALUE = re.compile(
    r"following metrics \(([^)]*)\) should be specified with parameter metric_type=total_value"
)
_INCOMPATIBLE_PERIOD = re.compile(r"periods \(([^)]*)\) are incompatible with the metric \((\w+)\)")


def classify(
    http_status: int,
    error: dict[str, Any],
    *,
    requested_metrics: list[str] | None = None,
    retry_after: float | None = None,
) -> GraphError:
    """Turn the ``error`` object of a Graph error envelope into a typed exception.

    ``requested_metrics`` lets a "metric[N] must be one of …" message be resolved to a name.
    """
    raw_code = error.get("code")
    raw_sub = error.get("error_subcode")
    code = raw_code if isinstance(raw_code, int) else None
    subcode = raw_sub if isinstance(raw_sub, int) else None
    # Meta's text ends up in logs and in the database: made storable (no NUL, no lone
    # surrogate) and bounded here, where it enters
    message = parse.storable(str(error.get("message") or "")[:_MAX_MESSAGE])
    user_title = error.get("error_user_title")
    fbtrace_id = error.get("fbtrace_id")
    kw: dict[str, Any] = {
        "code": code,
        "subcode": subcode,
        "fbtrace_id": parse.storable(fbtrace_id[:100]) if isinstance(fbtrace_id, str) else None,
        "http_status": http_status,
        "user_title": parse.storable(user_title[:500]) if isinstance(user_title, str) else None,
        "retry_after": retry_after,
    }
    lowered = message.lower()
    if code in (1, 2) or (code is None and http_status >= 500):
        return TransientError(message or f"HTTP {http_status}", **kw)
    if code in APP_THROTTLE_CODES:
        return AppThrottled(message, **kw)
    if code in ACCOUNT_THROTTLE_CODES:
        return AccountThrottled(message, **kw)
    if code == 190:
        return TokenInvalid(message, **kw)
    if code == 10 and "not enough viewers" in lowered:
        return NotEnoughViewers(message, **kw)
    if code in {3, 10} or (code is not None and 200 <= code <= 299):
        return PermissionDenied(message, **kw)
    if code == 100 and subcode == 33:
        return ObjectGone(message, **kw)
    if code == 100 and subcode == 2108006:
        return BeforeConversion(message, **kw)
    if code == -1 and subcode == 2207086:
        # "Fatal" on facebook_views/crossposted_views for media not shared to Facebook.
        names = [
            m for m in (requested_metrics or []) if m in ("facebook_views", "crossposted_views")
        ]
        return InvalidMetric(message or "Fatal", metrics=names, **kw)
    if code == 100:
        return _classify_100(message, requested_metrics or [], kw)
    if code is not None and http_status < 500:
        return InvalidRequest(message, **kw)
    return TransientError(message or f"HTTP {http_status}", **kw)


def on_account_node(exc: GraphError, path: str, account: str | None) -> GraphError:
    """``exc`` as it concerns the account when ``path`` is the account node or one of its edges.

    Meta answers 100/33 ("does not exist, cannot be loaded due to missing permissions") for a
    media object that is gone, but on ``/{ig-user-id}`` it means this token cannot read that
    account: a mistyped ``ig_user_id`` or another account's token. Retrying cannot fix that.
    """
    if not isinstance(exc, ObjectGone) or account is None:
        return exc
    if path.strip("/").split("/", 1)[0].split("?", 1)[0] != account:
        return exc
    return AccountUnreadable(
        f"the token cannot read account {account}: mistyped ig_user_id or another account's "
        f"token (Meta said: {exc.graph_message[:300]})",
        code=exc.code,
        subcode=exc.subcode,
        fbtrace_id=exc.fbtrace_id,
        http_status=exc.http_status,
        user_title=exc.user_title,
        retry_after=exc.retry_after,
    )


def _classify_100(message: str, requested: list[str], kw: dict[str, Any]) -> GraphError:
    if m := _MUST_BE_ONE_OF.search(message):
        index = int(m.group(1))
        names = [requested[index]] if 0 <= index < len(requested) else []
        return InvalidMetric(message, metrics=names, **kw)
    if m := _NOT_SUPPORTED_MEDIA.search(message):
        name = next(g for g in m.groups() if g)
        return InvalidMetric(message, metrics=[name], **kw)
    if m := _NEEDS_TOTAL_VALUE.search(message):
        names = [n.strip() for n in m.group(1).split(",") if n.strip()]
        return NeedsTotalValue(message, metrics=names, **kw)
    if m := _INCOMPATIBLE_PERIOD.search(message):
        return InvalidMetric(message, metrics=[m.group(2)], **kw)
    if "cannot be more than 30 days" in message:
        return RangeTooLong(message, **kw)
    if "Incompatible breakdowns" in message or "breakdown[" in message:
        return InvalidBreakdown(message, **kw)
    if "no longer supported" in message and "impressions" in message:
        return InvalidMetric(message, metrics=["impressions"], **kw)
    return InvalidRequest(message, **kw)
