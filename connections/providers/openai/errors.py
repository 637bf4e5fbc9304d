"""Upstream HTTP failures mapped to ProviderErrors whose text is safe to show a client."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import orjson

from meshsite.lib import http

from .. import failures
from ..base import ConnectionConfig, ProviderError
from ..context import UPSTREAM_HEADERS

MAX_MESSAGE = 300
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://\S+", re.IGNORECASE)
# Long opaque runs (keys, tokens, signatures) are never worth showing a client.
_OPAQUE = re.compile(r"\b(?:sk-|AKIA|ASIA)?[A-Za-z0-9_\-+/=]{32,}\b")


def sanitize(text: str, config: ConnectionConfig) -> str:
    """Upstream text made safe for a client: no secret, URL, host or opaque token; short."""
    for secret in config.secret_values():
        text = text.replace(secret, "[redacted]")
    host = urlsplit(config.base_url).hostname if config.base_url else None
    text = _URL.sub("[url]", text)
    if host:
        text = text.replace(host, "[host]")
    text = _OPAQUE.sub("[redacted]", text)
    text = " ".join(text.split())
    return text[:MAX_MESSAGE] + ("…" if len(text) > MAX_MESSAGE else "")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def upstream_error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, code, param) from an OpenAI-, Azure- or AWS-shaped error body, if any."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return "", None, None
    if not isinstance(data, dict):
        return "", None, None
    error = data.get("error") if isinstance(data.get("error"), dict) else data
    message = error.get("message") or error.get("Message") or ""
    code, param = error.get("code"), error.get("param")
    code = code if isinstance(code, str) and _IDENTIFIER.match(code) else None
    param = param if isinstance(param, str) and _IDENTIFIER.match(param) else None
    return (message if isinstance(message, str) else ""), code, param


def error_for_status(
    status: int, headers: Mapping[str, str], body: bytes, config: ConnectionConfig
) -> ProviderError:
    """Map an upstream HTTP error to what Meshgate answers (see the module doc)."""
    message, code, param = upstream_error_fields(body)
    detail = sanitize(message, config) if message else ""
    if status == 429:
        # An exhausted quota will not heal by waiting; a rate limit will.
        quota = code == "insufficient_quota"
        return ProviderError(
            "The provider's quota for this connection is exhausted."
            if quota
            else "The provider is rate limiting requests; try again later.",
            status=429,
            code="insufficient_quota" if quota else "rate_limited",
            error_type="rate_limit_error",
            retryable=not quota,
            retry_after=retry_after_seconds(headers),
            upstream_status=status,
        )
    if status in (401, 403):
        return ProviderError(
            "Upstream authentication failed: the provider refused this connection's "
            "credentials. An administrator must check the connection.",
            status=502,
            code="upstream_auth_failed",
            upstream_status=status,
        )
    if status == 408:
        return timeout_error(upstream_status=status)
    if status in (400, 404, 409, 413, 415, 422):
        text = "The provider rejected the request"
        return ProviderError(
            f"{text}: {detail}" if detail else f"{text} (HTTP {status}).",
            status=413 if status == 413 else 400,
            code=code or "invalid_request",
            error_type="invalid_request_error",
            upstream_status=status,
            param=param,
        )
    if status >= 500:
        return ProviderError(
            f"The provider failed to answer (HTTP {status}).",
            status=502,
            code="upstream_error",
            retryable=True,
            retry_after=retry_after_seconds(headers),
            upstream_status=status,
        )
    return ProviderError(
        f"The provider answered with an unexpected status (HTTP {status}).",
        status=502,
        code="upstream_error",
        upstream_status=status,
    )


def timeout_error(*, upstream_status: int | None = None) -> ProviderError:
    error = ProviderError(
        "The provider did not answer in time.",
        status=504,
        code="timeout",
        error_type="timeout_error",
        retryable=True,
        upstream_status=upstream_status,
    )
    error.cause = "timeout"
    return error


def transport_error(exc: Exception) -> ProviderError:
    """A network failure, without the exception's text (it can name the host)."""
    if isinstance(exc, (http.TimeoutException, TimeoutError)):
        return timeout_error()
    if isinstance(exc, http.AddressRefused):
        return address_refused(exc)
    if isinstance(exc, http.ClosedBeforeAnswer):
        # The request went out on a kept-alive connection the server then closed: it may
        # have been read. Another attempt (recorded) may go at once: nothing asked to wait.
        return ProviderError(
            "The provider closed the connection before answering.",
            status=502,
            code="upstream_connection_closed",
            retryable=True,
            retry_after=0.0,
        )
    cause = exc.cause if isinstance(exc, http.TransportError) else ""
    error = ProviderError(
        f"The provider could not be reached ({cause})."
        if cause
        else "The provider could not be reached.",
        status=502,
        code="upstream_unreachable",
        retryable=True,
    )
    error.cause = cause
    return error


def address_refused(exc: http.AddressRefused) -> ProviderError:
    """The provider's address is not allowed (checked when connecting): nothing was sent.
    Another target may be allowed; this one is not tried again in the call."""
    return ProviderError(
        f"The provider's address was refused: {exc}",
        status=502,
        code="upstream_address_refused",
        retryable=True,
    )


def malformed_error(what: str = "response") -> ProviderError:
    return ProviderError(
        f"The provider sent a malformed {what}.", status=502, code="upstream_malformed"
    )


async def post_checked(
    client: http.Client,
    url: str,
    body: bytes,
    headers: bytes,
    *,
    stream: bool,
    status_error: Callable[[int, Mapping[str, str], bytes], ProviderError],
    slug: str = "",
    method: str = "POST",
) -> http.Response:
    """POST `body`: the response if its status is under 300; otherwise `status_error`'s
    error for it (its body read, the response closed). Network failures as ProviderErrors,
    a connection failure logged (at most once a minute per upstream, `failures.note`)."""
    extra = UPSTREAM_HEADERS.get()
    if extra:
        headers = headers + extra
    try:
        response = await client.request(method, url, content=body, headers=headers, stream=stream)
    except http.TransportError as exc:
        error = transport_error(exc)
        if error.cause or isinstance(exc, http.ConnectError):
            failures.note(slug, url, error.cause or http.cause(exc))
        raise error
    if response.status_code >= 300:
        try:
            raw = await response.aread() if stream else response.content
        except http.TransportError:
            raw = b""
        finally:
            await response.aclose()
        raise status_error(response.status_code, response.headers, raw)
    return response


def stream_failure(exc: ProviderError | http.TransportError, sent: int) -> ProviderError:
    """What a failure while reading a stream becomes. It is retryable (another attempt,
    another target) only if nothing had been passed on yet."""
    if isinstance(exc, ProviderError):
        error = exc
    elif isinstance(exc, http.TimeoutException):
        error = timeout_error()
    else:
        return stream_broken(sent, "broke off")
    error.retryable = error.retryable and sent == 0
    return error


def stream_broken(sent: int, how: str) -> ProviderError:
    return ProviderError(
        f"The provider's stream {how}.",
        status=502,
        code="upstream_stream_broken",
        retryable=sent == 0,
    )
