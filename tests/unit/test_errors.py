"""Graph error envelopes (reference §5, §14 I) classified by code, subcode and message."""

from __future__ import annotations

from typing import Any

import pytest

from collector import errors


def _err(code: int | None, message: str = "", subcode: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "type": "OAuthException", "fbtrace_id": "Ax1"}
    if code is not None:
        body["code"] = code
    if subcode is not None:
        body["error_subcode"] = subcode
    return body


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (500, _err(1, "An unknown error occurred"), errors.TransientError),
        (503, _err(2, "Service temporarily unavailable", 1504044), errors.TransientError),
        (403, _err(4, "(#4) Application request limit reached"), errors.AppThrottled),
        (400, _err(17, "(#17) User request limit reached"), errors.AppThrottled),
        (400, _err(32, "(#32) Page request limit reached"), errors.AppThrottled),
        (400, _err(613, "Calls to this api have exceeded the rate limit."), errors.AppThrottled),
        (400, _err(341, "Application limit reached"), errors.AppThrottled),
        (400, _err(80002, "(#80002) There have been too many calls"), errors.AccountThrottled),
        (
            400,
            _err(190, "Error validating access token: Session has expired", 463),
            errors.TokenInvalid,
        ),
        (
            400,
            _err(190, "Invalid OAuth access token - Cannot parse access token"),
            errors.TokenInvalid,
        ),
        (
            400,
            _err(10, "(#10) Application does not have permission for this action"),
            errors.PermissionDenied,
        ),
        (400, _err(200, "(#200) Permissions error"), errors.PermissionDenied),
        (
            400,
            _err(10, "(#10) Not enough viewers for the media to show insights"),
            errors.NotEnoughViewers,
        ),
        (
            400,
            _err(100, "Unsupported get request. Object with ID '1' does not exist", 33),
            errors.ObjectGone,
        ),
        (400, _err(100, "Invalid parameter", 2108006), errors.BeforeConversion),
        (
            400,
            _err(
                100, "(#100) There cannot be more than 30 days (2592000 s) between since and until"
            ),
            errors.RangeTooLong,
        ),
        (
            400,
            _err(100, "(#100) Incompatible breakdowns (follow_type) for metric (views)"),
            errors.InvalidBreakdown,
        ),
        (400, _err(100, "(#100) Tried accessing nonexisting field (x)"), errors.InvalidRequest),
        (502, _err(None, ""), errors.TransientError),
    ],
)
def test_classification_by_code(
    status: int, error: dict[str, Any], cls: type[errors.GraphError]
) -> None:
    exc = errors.classify(status, error)
    assert type(exc) is cls
    assert exc.fbtrace_id == "Ax1"
    assert exc.http_status == status


def test_http_status_and_type_do_not_matter() -> None:
    # Meta sends 100/33 as GraphMethodException with 400, sometimes as OAuthException.
    a = errors.classify(400, {"code": 100, "error_subcode": 33, "type": "GraphMethodException"})
    b = errors.classify(500, {"code": 100, "error_subcode": 33, "type": "OAuthException"})
    assert isinstance(a, errors.ObjectGone)
    assert isinstance(b, errors.ObjectGone)


def test_must_be_one_of_resolves_the_index_to_the_requested_name() -> None:
    exc = errors.classify(
        400,
        _err(100, "(#100) metric[1] must be one of the following values: reach, views"),
        requested_metrics=["reach", "impressions", "views"],
    )
    assert isinstance(exc, errors.InvalidMetric)
    assert exc.metrics == ["impressions"]


@pytest.mark.parametrize(
    ("message", "metric"),
    [
        (
            "(#100) The Media Insights API does not support the views metric for this media product type.",
            "views",
        ),
        ("(#100) The metric shares is not supported for this media type", "shares"),
        (
            "Starting from version v22.0 and above, the impressions metric is no longer supported for the queried media.",
            "impressions",
        ),
        (
            "(#100) The following periods (week) are incompatible with the metric (online_followers)",
            "online_followers",
        ),
    ],
)
def test_unsupported_metric_messages(message: str, metric: str) -> None:
    exc = errors.classify(400, _err(100, message))
    assert isinstance(exc, errors.InvalidMetric)
    assert exc.metrics == [metric]


def test_needs_total_value_lists_the_metrics() -> None:
    exc = errors.classify(
        400,
        _err(
            100,
            "(#100) The following metrics (views,profile_views) should be specified with parameter metric_type=total_value",
        ),
    )
    assert isinstance(exc, errors.NeedsTotalValue)
    assert exc.metrics == ["views", "profile_views"]


def test_retryable_flags() -> None:
    assert errors.TransientError().retryable
    assert errors.AccountThrottled().retryable
    assert not errors.TokenInvalid().retryable
    assert not errors.ObjectGone().retryable


def test_describe_and_default_message() -> None:
    assert str(errors.TokenInvalid()) == "The access token is invalid or expired (code 190)."
    exc = errors.classify(400, _err(190, "Session has expired", 463))
    assert exc.describe() == "code=190 subcode=463 Session has expired"


def test_pending_migrations_message_names_the_fix() -> None:
    exc = errors.PendingMigrations(["0002_more"])
    assert "python -m collector migrate" in str(exc)
    assert "0002_more" in str(exc)
