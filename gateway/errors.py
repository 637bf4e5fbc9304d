"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right status.

SDK clients raise their usual exceptions from the status (401 AuthenticationError,
404 NotFoundError, 429 RateLimitError...), so the status matters as much as the body.
Upstream failures are mapped here and never passed through raw: the message is
the adapter's (which promises to be safe) with URLs, hosts and the connection's
secrets scrubbed once more, because a leaked credential cannot be taken back.
"""

from __future__ import annotations

import re

import orjson

from audit.outcome import Outcome
from connections.providers.base import ProviderError
from quotas import QuotaExceeded, QuotaUnavailable, error_response

# The `type` OpenAI uses for each status; clients read `code` for the detail.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "api_error",
    503: "service_unavailable",
    504: "timeout_error",
}

# The record's outcome by status.
_OUTCOMES = {
    400: Outcome.INVALID_REQUEST,
    401: Outcome.UNAUTHORIZED,
    403: Outcome.FORBIDDEN,
    404: Outcome.NOT_FOUND,
    405: Outcome.INVALID_REQUEST,
    408: Outcome.TIMEOUT,
    413: Outcome.INVALID_REQUEST,
    422: Outcome.INVALID_REQUEST,
    429: Outcome.RATE_LIMITED,
    500: Outcome.INTERNAL_ERROR,
    502: Outcome.UPSTREAM_ERROR,
    503: Outcome.UPSTREAM_ERROR,
    504: Outcome.TIMEOUT,
}

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)
_HOST_PORT = re.compile(
    r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|[a-z0-9-]+(?:\.[a-z0-9-]+)+|localhost)(?::\d{2,5})\b",
    re.IGNORECASE,
)
_MAX_MESSAGE = 500


class GatewayError(Exception):
    """A refusal or failure the client sees, already in OpenAI's terms."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        error_type: str | None = None,
        outcome: Outcome | str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type or _TYPES.get(status, "api_error")
        self.outcome = Outcome(outcome) if outcome else outcome_for(status)
        self.retry_after = retry_after
        # Headers the answer carries besides the body (rate-limit state from admission).
        self.extra_headers: list[tuple[bytes, bytes]] = []

    def body(self) -> bytes:
        return error_body(self.message, self.error_type, self.code, self.param)

    def event(self) -> bytes:
        """The same error as a final SSE frame, for a stream that fails after its first byte."""
        return b"data: " + self.body() + b"\n\n"


def outcome_for(status: int) -> Outcome:
    if status in _OUTCOMES:
        return _OUTCOMES[status]
    return Outcome.UPSTREAM_ERROR if status >= 500 else Outcome.INVALID_REQUEST


def error_body(message: str, error_type: str, code: str, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    )


def scrub(message: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove secrets, URLs and host:port pairs from a message meant for a client or a record."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            message = message.replace(secret, "[redacted]")
    message = _URL.sub("[upstream]", message)
    message = _HOST_PORT.sub("[upstream]", message)
    return message[:_MAX_MESSAGE]


def from_provider(exc: ProviderError, secrets: list[str] | tuple[str, ...] = ()) -> GatewayError:
    status = exc.status if exc.status in _TYPES else (502 if exc.status >= 500 else 400)
    if status in (401, 403):
        # The provider refused Meshgate's own credentials: not the caller's key, so not a 401.
        return GatewayError(
            502, "The provider refused the connection's credentials.", code="upstream_auth_failed"
        )
    return GatewayError(
        status,
        scrub(exc.message or "The provider failed.", secrets),
        code=exc.code or "upstream_error",
        param=exc.param,
        error_type=exc.error_type or None,
        retry_after=exc.retry_after,
    )


# The refusals every caller gets the same way, whatever the detail behind them.
def unauthorized() -> GatewayError:
    return GatewayError(
        401,
        "Invalid or missing API key. Send 'Authorization: Bearer mg-...'.",
        code="invalid_api_key",
    )


def model_not_found(model: object) -> GatewayError:
    shown = model if isinstance(model, str) else ""
    return GatewayError(
        404,
        f"The model '{shown[:200]}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def internal(request_id: str) -> GatewayError:
    return GatewayError(
        500,
        f"Meshgate failed to handle the request (request id {request_id}).",
        code="internal_error",
    )


def database_unavailable() -> GatewayError:
    """The database is away: no record can be written, so no call is made (503, retryable)."""
    return GatewayError(
        503,
        "The audit database is unreachable; the call was not made.",
        code="audit_unavailable",
        outcome=Outcome.INTERNAL_ERROR,
        retry_after=1,
    )


def quota_refusal(exc: Exception) -> GatewayError:
    """A refusal by quotas and rate limits, in the OpenAI shape: 429 with its headers, or 503
    when their counter store cannot be reached."""
    if isinstance(exc, QuotaUnavailable):
        return GatewayError(
            503,
            "Quotas and rate limits cannot be checked right now (their counter store is "
            "unreachable); the call was not made. Retry shortly.",
            code="quota_unavailable",
            outcome=Outcome.INTERNAL_ERROR,
            retry_after=1,
        )
    status, error_body, headers = error_response(exc)
    detail = error_body["error"]
    error = GatewayError(
        status,
        detail["message"],
        code=detail["code"],
        error_type=detail["type"],
        outcome=Outcome.BUDGET_EXCEEDED if isinstance(exc, QuotaExceeded) else Outcome.RATE_LIMITED,
        retry_after=float(headers["Retry-After"]) if "Retry-After" in headers else None,
    )
    error.extra_headers = [
        (name.lower().encode(), value.encode())
        for name, value in headers.items()
        if name != "Retry-After"  # the error reply writes retry-after itself
    ]
    return error
