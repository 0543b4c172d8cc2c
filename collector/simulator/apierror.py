"""Graph API errors as the simulator serves them (the real ``{"error": {...}}`` envelope)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from collector.simulator import world

DOCS = "https://developers.facebook.com/docs/graph-api"


class ApiError(Exception):
    """An error answer; ``body(fbtrace_id)`` renders the envelope."""

    def __init__(
        self,
        message: str,
        *,
        code: int,
        status: int = 400,
        type_: str = "OAuthException",
        subcode: int | None = None,
        is_transient: bool | None = None,
        user_title: str | None = None,
        user_msg: str | None = None,
        error_data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.type = type_
        self.subcode = subcode
        self.is_transient = is_transient
        self.user_title = user_title
        self.user_msg = user_msg
        self.error_data = error_data
        self.headers = headers or {}

    @property
    def error_class(self) -> str:
        """Counter key: ``100`` or ``100/33``."""
        return f"{self.code}" if self.subcode is None else f"{self.code}/{self.subcode}"

    def body(self, fbtrace_id: str) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.error_data is not None:
            err["error_data"] = self.error_data
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        if self.is_transient is not None:
            err["is_transient"] = self.is_transient
        if self.user_title is not None:
            err["error_user_title"] = self.user_title
        if self.user_msg is not None:
            err["error_user_msg"] = self.user_msg
        err["fbtrace_id"] = fbtrace_id
        return {"error": err}


def invalid_param(message: str) -> ApiError:
    """Code 100 with the ``(#100)`` prefix most parameter errors carry."""
    return ApiError(f"(#100) {message}", code=100)


def object_missing(object_id: str, method: str = "get") -> ApiError:
    """100/33: the object is gone, unknown, or not visible to this token."""
    return ApiError(
        f"Unsupported {method} request. Object with ID '{object_id}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation. Please read the "
        f"Graph API documentation at {DOCS}",
        code=100,
        subcode=33,
        type_="GraphMethodException",
    )


def unknown_path(path: str) -> ApiError:
    return ApiError(f"Unknown path components: {path}", code=2500)


def nonexisting_field(name: str, node_type: str) -> ApiError:
    return invalid_param(f"Tried accessing nonexisting field ({name}) on node type ({node_type})")


def duplicate_field(name: str, position: int, fields: str) -> ApiError:
    return ApiError(
        f'(#2500) Syntax error "Field {name} specified more than once. This is only possible '
        f'before version 2.1" at character {position}: {fields}',
        code=2500,
    )


def syntax_error(detail: str, position: int, fields: str) -> ApiError:
    return ApiError(f'(#2500) Syntax error "{detail}" at character {position}: {fields}', code=2500)


def no_token() -> ApiError:
    return ApiError("An access token is required to request this resource.", code=104)


def bad_token() -> ApiError:
    return ApiError("Invalid OAuth access token - Cannot parse access token", code=190)


def _pacific(when: datetime) -> str:
    return when.astimezone(world.PACIFIC).strftime("%A, %d-%b-%y %H:%M:%S %Z")


def token_expired(expired_at: datetime, now: datetime) -> ApiError:
    return ApiError(
        f"Error validating access token: Session has expired on {_pacific(expired_at)}. "
        f"The current time is {_pacific(now)}.",
        code=190,
        subcode=463,
    )


def password_changed() -> ApiError:
    return ApiError(
        "Error validating access token: The session has been invalidated because the user "
        "changed their password or Facebook has changed the session for security reasons.",
        code=190,
        subcode=460,
    )


def logged_out() -> ApiError:
    return ApiError(
        "Error validating access token: The session is invalid because the user logged out.",
        code=190,
        subcode=467,
    )


def no_permission() -> ApiError:
    return ApiError("(#10) Application does not have permission for this action", code=10)


def not_enough_viewers() -> ApiError:
    return ApiError("(#10) Not enough viewers for the media to show insights", code=10)


def before_conversion() -> ApiError:
    return ApiError(
        "Invalid parameter",
        code=100,
        subcode=2108006,
        is_transient=False,
        user_title="Media posted before business account conversion",
        user_msg=(
            "The media was posted before the most recent time that the user's account was "
            "converted to a business account from a personal account."
        ),
        error_data={"blame_field_specs": [[""]]},
    )


def account_throttled(headers: dict[str, str]) -> ApiError:
    return ApiError(
        "(#80002) There have been too many calls to this Instagram account. Wait a bit and try "
        "again. For more info, please refer to "
        "https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
        code=80002,
        headers=headers,
    )


def app_throttled() -> ApiError:
    return ApiError("(#4) Application request limit reached", code=4, status=403, is_transient=True)


def proof_missing() -> ApiError:
    return ApiError(
        "API calls from the server require an appsecret_proof argument",
        code=100,
        type_="GraphMethodException",
    )


def proof_invalid() -> ApiError:
    return ApiError(
        "Invalid appsecret_proof provided in the API argument",
        code=100,
        type_="GraphMethodException",
    )


def unknown_error() -> ApiError:
    return ApiError("An unknown error occurred", code=1, subcode=99, status=500, is_transient=True)


def reduce_data() -> ApiError:
    return ApiError(
        "Please reduce the amount of data you're asking for, then retry your request",
        code=1,
        status=500,
        is_transient=True,
    )


def service_unavailable() -> ApiError:
    return ApiError("Service temporarily unavailable", code=2, subcode=1504044, is_transient=False)


def fatal() -> ApiError:
    return ApiError("Fatal", code=-1, subcode=2207086, is_transient=False)


def batch_too_big() -> ApiError:
    return ApiError(
        "Too many requests in batch message. Maximum batch size is 50",
        code=1,
        type_="GraphBatchException",
    )
