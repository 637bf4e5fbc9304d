"""The gateway's transport-independent core: one call, from principal to reply.

The ASGI app (`gateway.asgi`) and the playground both call `handle`. It checks
the request, resolves and authorizes the model from memory, writes the audit
record *before* going upstream (no record, no call: 503), calls the provider
through the router, and completes the record on every exit path. A streamed
reply's iterator completes the record when it ends, however it ends: iterate
it to the end or `aclose()` it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings

from audit import redaction
from audit.cost import call_cost
from audit.writer import AuditUnavailable, writer
from connections.providers.base import ProviderError, Usage
from quotas.admission import estimate_prompt_tokens
from quotas.hook import admit_call, settle_soon

from . import directory as catalog  # was gateway/catalog.py (alias until rewritten)
from . import router
from .errors import GatewayError, from_provider, internal
from .validation import check_request, unsupported_field

logger = logging.getLogger(__name__)

JSON_HEADER = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
DONE = b"data: [DONE]\n\n"
ENDPOINTS = ("chat.completions", "embeddings", "classifications", "summaries")


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    department_id: int | None
    api_key_id: int | None  # None for playground calls
    api_key_prefix: str  # "" for playground calls
    purpose: str


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes | None = None  # JSON reply, or
    stream: AsyncIterator[bytes] | None = None  # SSE frames incl. the final b"data: [DONE]\n\n"


@dataclass
class _Call:
    """What one call carries from its start to its record's completion."""

    request_id: str
    endpoint: str
    started: float  # monotonic
    started_at: datetime
    record_id: int | None = None
    attempts: router.Attempts | None = None
    secrets: tuple[str, ...] = ()
    prompt_estimate: int = 0
    admission: Any = None  # the quota reservation, settled when the call ends
    # The first target's, from the record's opening: an unchanged value on completion
    # lets PostgreSQL update the row in place (a HOT update, no index entries).
    llm_id: int | None = None
    connection_id: int | None = None
    opening: dict[str, Any] | None = None  # its record's opening fields, for the spool


def _now() -> datetime:
    return datetime.now(UTC)


def _headers(request_id: str, extra: list[tuple[bytes, bytes]] | None = None) -> list:
    headers = [JSON_HEADER, (b"x-request-id", request_id.encode())]
    if extra:
        headers.extend(extra)
    return headers


def error_reply(error: GatewayError, request_id: str) -> Reply:
    extra = []
    if error.status == 401:
        extra.append((b"www-authenticate", b"Bearer"))
    if error.retry_after is not None:
        extra.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
    extra.extend(error.extra_headers)
    return Reply(error.status, _headers(request_id, extra), body=error.body())


def _opening_fields(
    call: _Call,
    principal: Principal | None,
    body: dict[str, Any] | None,
    *,
    client_ip: str | None,
    user_agent: str,
    policy: str,
    alias_name: str = "",
) -> dict[str, Any]:
    model = body.get("model") if isinstance(body, dict) else None
    return {
        "request_id": call.request_id,
        "started_at": call.started_at,
        "user_id": principal.user_id if principal else None,
        "api_key_id": principal.api_key_id if principal else None,
        "api_key_prefix": principal.api_key_prefix if principal else "",
        "department_id": principal.department_id if principal else None,
        "purpose": principal.purpose if principal else "",
        "endpoint": call.endpoint[:40],
        "streamed": bool(isinstance(body, dict) and body.get("stream") is True),
        "model_requested": model[:255] if isinstance(model, str) else "",
        "alias_name": alias_name,
        "client_ip": client_ip,
        "user_agent": (user_agent or "")[:512],
        "request_body": redaction.apply_policy(policy, body),
        "llm_id": call.llm_id,
        "connection_id": call.connection_id,
    }


def _closing_fields(
    call: _Call,
    *,
    outcome: str,
    status: int,
    error_message: str = "",
    target: catalog.Target | None = None,
    usage: Usage | None = None,
    response_body: Any = None,
    first_token_at: datetime | None = None,
) -> dict[str, Any]:
    ended_at = _now()
    latency = int((time.monotonic() - call.started) * 1000)
    usage = usage or Usage()
    fields: dict[str, Any] = {
        "outcome": outcome,
        "status_code": status,
        "error_message": error_message[:2000],
        "first_token_at": first_token_at,
        "ended_at": ended_at,
        "latency_ms": latency,
        "ttft_ms": (
            int((first_token_at - call.started_at).total_seconds() * 1000)
            if first_token_at
            else None
        ),
        "attempts": call.attempts.items if call.attempts else [],
        "llm_id": target.llm_id if target else call.llm_id,
        "connection_id": target.connection_id if target else call.connection_id,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "tokens_estimated": usage.estimated,
        "input_price": target.input_price if target else None,
        "output_price": target.output_price if target else None,
        "cached_input_price": target.cached_input_price if target else None,
        "response_body": (
            redaction.apply_policy(target.payload_policy, response_body) if target else None
        ),
    }
    fields["cost"] = call_cost(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        input_price=fields["input_price"],
        output_price=fields["output_price"],
        cached_input_price=fields["cached_input_price"],
    )
    return fields


async def record_refusal(
    error: GatewayError,
    *,
    endpoint: str,
    request_id: str,
    principal: Principal | None = None,
    body: dict[str, Any] | None = None,
    client_ip: str | None = None,
    user_agent: str = "",
    started: float | None = None,
    policy: str = redaction.FULL,
) -> Reply:
    """Write the complete record of a call refused before any upstream call (one write)."""
    call = _Call(request_id, endpoint, started or time.monotonic(), _now())
    if started is not None:
        call.started_at = _now() - timedelta(seconds=time.monotonic() - started)
    fields = _opening_fields(
        call, principal, body, client_ip=client_ip, user_agent=user_agent, policy=policy
    )
    fields.update(
        _closing_fields(
            call, outcome=error.outcome, status=error.status, error_message=error.message
        )
    )
    inserted = writer.insert_soon(fields)
    try:
        async with asyncio.timeout(settings.MESHGATE_AUDIT_WAIT_SECONDS):
            await asyncio.shield(inserted)
    except AuditUnavailable:
        # The database is away: the record waits in the spool until it is back.
        writer.spool(fields)
    except TimeoutError:
        # Still queued: written when the database answers again, or spooled if it fails.
        logger.error("audit: the refusal of request %s is not recorded yet", request_id)
        inserted.add_done_callback(lambda done: _spool_if_failed(done, fields))
    return error_reply(error, request_id)


def _spool_if_failed(done: asyncio.Future, fields: dict[str, Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        writer.spool(fields)


async def handle(
    endpoint: str,
    principal: Principal,
    body: dict,
    *,
    request_id: str,
    client_ip: str | None,
    user_agent: str,
) -> Reply:
    """Serve one call to `endpoint` (one of ENDPOINTS) for `principal`."""
    started = time.monotonic()
    refuse = {
        "endpoint": endpoint,
        "request_id": request_id,
        "principal": principal,
        "body": body,
        "client_ip": client_ip,
        "user_agent": user_agent,
        "started": started,
    }
    try:
        if endpoint not in ENDPOINTS:
            raise GatewayError(404, f"Unknown endpoint {endpoint!r}.", code="not_found")
        check_request(endpoint, body)
        snap = await catalog.snapshot()
        user = await catalog.user_info(principal.user_id)
        if principal.department_id is not None and principal.department_id not in (
            user.department_ids
        ):
            raise GatewayError(
                403, "The key's owner no longer belongs to its department.", code="forbidden"
            )
        alias_name, targets = catalog.resolve(snap, user, body["model"], endpoint)
        targets = _supported_targets(snap, targets, body)
        policy = redaction.strictest([t.payload_policy for t in targets])
        call = _Call(
            request_id,
            endpoint,
            started,
            _now(),
            attempts=router.Attempts(),
            llm_id=targets[0].llm_id,
            connection_id=targets[0].connection_id,
        )
        call.secrets = tuple(
            secret
            for target in targets
            if target.connection_id in snap.connections
            for secret in snap.connections[target.connection_id].secret_values()
        )
        opening = _opening_fields(
            call,
            principal,
            body,
            client_ip=client_ip,
            user_agent=user_agent,
            policy=policy,
            alias_name=alias_name,
        )
        call.opening = opening
    except GatewayError as error:
        return await record_refusal(error, **refuse)
    except Exception as exc:
        _log_internal(request_id, exc)
        return await record_refusal(internal(request_id), **refuse)
    # Steps 4 and 5 at once: open the record, and admit the call (quotas and rate limits
    # reserve its worst case; 429 if refused). The call waits for the slower of the two.
    opened = writer.insert_soon(opening)
    try:
        call.admission = await admit_call(principal, targets, body, endpoint)
    except asyncio.CancelledError:
        _finish_when_opened(call, opened, outcome="client_disconnected", status=499)
        raise
    except Exception as exc:
        if isinstance(exc, GatewayError):
            error = exc
        else:
            _log_internal(request_id, exc)
            error = internal(request_id)
        closing = {"outcome": error.outcome, "status": error.status, "error_message": error.message}
        await _record_opened(call, opened, closing, closing)
        _finish(call, **closing)
        return error_reply(error, request_id)
    # Audit first: a call that cannot be recorded is not made (and costs nothing).
    refused = await _record_opened(
        call,
        opened,
        {"outcome": "internal_error", "status": 503, "error_message": AUDIT_LATE},
        {"outcome": "internal_error", "status": 503, "error_message": AUDIT_UNAVAILABLE},
    )
    if refused is not None:
        if call.admission is not None:
            admission, call.admission = call.admission, None
            settle_soon(admission, Decimal(0), 0)
        return error_reply(refused, request_id)
    streamed = endpoint == "chat.completions" and body.get("stream") is True
    try:
        if streamed:
            call.prompt_estimate = estimate_prompt_tokens(body)
            return await _open_stream(call, snap, targets, body)
        return await _complete(call, snap, targets, body)
    except asyncio.CancelledError:
        _finish_cut(call, body)
        raise
    except Exception as exc:
        return await _internal_error(call, exc)


def _finish_cut(call: _Call, body: dict[str, Any]) -> None:
    """A call whose client hung up. Once a target was called it is billed as a cut stream is:
    its estimated prompt tokens (a plain call delivers no output before it ends), marked as
    estimated, and the reservation is settled at that amount."""
    target = call.attempts.cut if call.attempts else None
    if target is None:  # a stream cut mid-way is finished by _frames; else nothing was called
        _finish(call, outcome="client_disconnected", status=499)
        return
    usage = Usage(prompt_tokens=estimate_prompt_tokens(body), estimated=True)
    _finish(call, outcome="client_disconnected", status=499, target=target, usage=usage)


def _supported_targets(
    snap: catalog.Snapshot, targets: list[catalog.Target], body: dict[str, Any]
) -> list[catalog.Target]:
    """Targets whose provider can honour every field; 400 naming the field if none can."""
    from connections.providers import adapter_class

    kept = []
    refused_field = None
    for target in targets:
        config = snap.connections.get(target.connection_id)
        if config is None:  # unusable connection: the router skips it and answers 503
            kept.append(target)
            continue
        field = unsupported_field(body, adapter_class(config.kind).unsupported_fields)
        if field is None:
            kept.append(target)
        elif refused_field is None:
            refused_field = field
    if not kept:
        raise GatewayError(
            400,
            f"The field '{refused_field}' is not supported by this model's provider.",
            code="unsupported_field",
            param=refused_field,
        )
    return kept


def _finish(call: _Call, **closing: Any) -> None:
    fields = _closing_fields(call, **closing)
    if call.admission is not None:
        admission, call.admission = call.admission, None
        tokens = fields["prompt_tokens"] + fields["completion_tokens"]
        settle_soon(admission, fields["cost"], tokens)
    if call.record_id is not None:
        writer.complete(call.record_id, fields)


AUDIT_UNAVAILABLE = "The audit trail is unavailable; the call was not made."
AUDIT_LATE = "The audit trail did not answer in time; the call was not made."


async def _record_opened(
    call: _Call,
    opened: asyncio.Future,
    if_late: dict[str, Any],
    if_unavailable: dict[str, Any],
) -> GatewayError | None:
    """Wait for the call's opening record, at most MESHGATE_AUDIT_WAIT_SECONDS.

    None once it is written (`call.record_id` set); otherwise the 503 the call gets. A
    stalled database must not hold every call: past the wait the call is refused, and
    the record, if it lands later, is completed with `if_late`'s outcome. A record the
    database could not take is kept in the writer's spool with `if_unavailable`'s.
    """
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can drop a cancel that arrives
        # in the turn the record lands, and the call would then go upstream.
        async with asyncio.timeout(settings.MESHGATE_AUDIT_WAIT_SECONDS):
            call.record_id = await asyncio.shield(opened)
    except AuditUnavailable:
        _spool(call, **if_unavailable)
        return GatewayError(503, AUDIT_UNAVAILABLE, code="audit_unavailable")
    except asyncio.CancelledError:  # the client went away meanwhile
        _finish_when_opened(call, opened, outcome="client_disconnected", status=499)
        raise
    except TimeoutError:
        logger.error(
            "audit: request %s refused, its record took over %d s",
            call.request_id,
            settings.MESHGATE_AUDIT_WAIT_SECONDS,
        )
        _finish_when_opened(call, opened, **if_late)
        return GatewayError(503, AUDIT_LATE, code="audit_unavailable")
    return None


def _finish_when_opened(call: _Call, opened: asyncio.Future, **closing: Any) -> None:
    """End a call that stopped waiting for its record, once the record's write ends:
    complete the record if it was written, and settle the call's admission either way."""

    def finish(done: asyncio.Future) -> None:
        if not done.cancelled() and done.exception() is None:
            call.record_id = done.result()
        else:
            _spool(call, **closing)
        _finish(call, **closing)

    opened.add_done_callback(finish)


def _spool(call: _Call, **closing: Any) -> None:
    """Keep the complete record of a call whose opening could not be written (the
    database is away) in the writer's spool, written once the database is back."""
    if call.opening is not None:
        writer.spool({**call.opening, **_closing_fields(call, **closing)})


def _log_internal(request_id: str, exc: BaseException) -> None:
    # The exception's text may quote a provider's answer: log its type and where, not its text.
    logger.error(
        "gateway: internal error in request %s: %s\n%s",
        request_id,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )


async def _internal_error(call: _Call, exc: BaseException) -> Reply:
    _log_internal(call.request_id, exc)
    error = internal(call.request_id)
    _finish(call, outcome="internal_error", status=500, error_message=error.message)
    return error_reply(error, call.request_id)


def _upstream_failure(call: _Call, exc: ProviderError) -> GatewayError:
    return from_provider(exc, call.secrets)


async def _complete(
    call: _Call, snap: catalog.Snapshot, targets: list[catalog.Target], body: dict[str, Any]
) -> Reply:
    try:
        target, result = await router.complete(snap, targets, call.endpoint, body, call.attempts)
    except ProviderError as exc:
        error = _upstream_failure(call, exc)
        _finish(call, outcome=error.outcome, status=error.status, error_message=error.message)
        return error_reply(error, call.request_id)
    response_body = None
    if target.payload_policy != redaction.METADATA:
        response_body = result.parsed if result.parsed is not None else orjson.loads(result.body)
        if call.endpoint == "embeddings":
            response_body = _summarize_embeddings(response_body)
    _finish(
        call,
        outcome="ok",
        status=200,
        target=target,
        usage=result.usage,
        response_body=response_body,
    )
    return Reply(200, _headers(call.request_id), body=result.body)


def _summarize_embeddings(body: Any) -> Any:
    """Vectors are bulky and say nothing to an auditor: keep their count and size."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return body
    data = []
    for item in body["data"]:
        if isinstance(item, dict) and "embedding" in item:
            vector = item["embedding"]
            item = {**item, "embedding": f"<{len(vector)} values>"}
        data.append(item)
    return {**body, "data": data}


async def _open_stream(
    call: _Call, snap: catalog.Snapshot, targets: list[catalog.Target], body: dict[str, Any]
) -> Reply:
    try:
        target, stream = await router.open_stream(snap, targets, body, call.attempts)
    except ProviderError as exc:
        error = _upstream_failure(call, exc)
        _finish(call, outcome=error.outcome, status=error.status, error_message=error.message)
        return error_reply(error, call.request_id)
    headers = [*SSE_HEADERS, (b"x-request-id", call.request_id.encode())]
    return Reply(200, headers, stream=_frames(call, target, stream))


async def _frames(call: _Call, target: catalog.Target, stream: Any) -> AsyncIterator[bytes]:
    """The stream's frames then [DONE]; on failure an error event and no [DONE]."""
    outcome, status, message = "client_disconnected", 499, ""
    first_token_at = None
    delivered = False
    sent: list[bytes] = []  # kept to count a cut-off stream's partial usage
    try:
        async for frame in stream:
            if first_token_at is None:
                first_token_at = _now()
            sent.append(frame)
            yield frame
        outcome, status = "ok", 200
        delivered = True
        yield DONE
    except ProviderError as exc:
        error = _upstream_failure(call, exc)
        outcome, status, message = error.outcome, error.status, error.message
        yield error.event()
    except (asyncio.CancelledError, GeneratorExit):
        if not delivered:
            outcome, status = "client_disconnected", 499
        raise
    except Exception as exc:
        _log_internal(call.request_id, exc)
        error = internal(call.request_id)
        outcome, status, message = "internal_error", 500, error.message
        yield error.event()
    finally:
        try:
            await stream.aclose()
        except Exception:
            logger.warning("gateway: closing the upstream stream of %s failed", call.request_id)
        usage, answer = getattr(stream, "usage", None), getattr(stream, "message", None)
        if outcome != "ok" and sent and not (usage and usage.completion_tokens):
            usage, answer = partial_usage(sent, call.prompt_estimate, usage)
        _finish(
            call,
            outcome=outcome,
            status=status,
            error_message=message,
            target=target,
            usage=usage,
            response_body=answer,
            first_token_at=first_token_at,
        )


def partial_usage(
    frames: list[bytes], prompt_estimate: int, usage: Usage | None
) -> tuple[Usage, dict[str, Any]]:
    """Usage and message of a stream cut off before the provider reported its usage.

    What was delivered is counted (estimated, ~4 characters a token) so the
    department pays for what it received, and the record shows the partial answer.
    """
    content: list[str] = []
    arguments: list[str] = []
    events = (event for part in frames for event in part.split(b"\n\n") if event)
    for frame in events:
        try:
            chunk = orjson.loads(frame[6:])
        except orjson.JSONDecodeError:
            continue
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices or ():
            delta = (choice or {}).get("delta") or {}
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            for tool_call in delta.get("tool_calls") or ():
                function = (tool_call or {}).get("function") or {}
                arguments.append((function.get("name") or "") + (function.get("arguments") or ""))
    text = "".join(content)
    completion = -(-len(text + "".join(arguments)) // 4)
    prompt = usage.prompt_tokens if usage and usage.prompt_tokens else prompt_estimate
    message = {"role": "assistant", "content": text or None, "partial": True}
    return Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=True), message


async def list_models(principal: Principal) -> list[dict]:
    """The LLMs and aliases the principal may use, in OpenAI's model shape plus Meshgate's."""
    snap = await catalog.snapshot()
    user = await catalog.user_info(principal.user_id)
    return catalog.usable_models(snap, user)
