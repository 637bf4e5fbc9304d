"""The hot path's stages: each one small unit over a `Call`, run in order by `gateway.pipeline`.

A stage is `async def stage(call: Call) -> None`: it reads what the stages before it
left on the call, adds its part, and refuses by raising `GatewayError`. One that answers
(the upstream call; later a cache hit) sets `call.reply`, and the pipeline stops there.
An ending (`account`, `complete`) is `def ending(call: Call) -> None`, synchronous
because it also runs from callbacks and a stream's `finally`; the pipeline runs the
endings exactly once, on every exit path of a call whose record was opened.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, Protocol

import orjson
from django.conf import settings

from audit import record, redaction
from audit.outcome import Outcome
from audit.writer import AuditUnavailable
from connections.dbguard import DatabaseUnavailable
from connections.providers.base import ProviderError, Stream, Usage
from connections.tokens import estimate_prompt_tokens, estimate_text_tokens
from quotas import QuotaExceeded, QuotaUnavailable, RateLimited
from quotas.hook import admit_call, settle_soon

from . import auth, calllog, directory, doors, metrics, router
from .call import Call, now
from .errors import GatewayError, database_unavailable, from_provider, internal, quota_refusal
from .validation import check_request, unsupported_field

logger = logging.getLogger(__name__)

AUDIT_UNAVAILABLE = "The audit trail is unavailable; the call was not made."
AUDIT_LATE = "The audit trail did not answer in time; the call was not made."


# --- before the record: a refusal here is recorded in one write -----------------------------


async def authenticate(call: Call) -> None:
    """The caller's principal from its key (401 for every failure); a playground call
    arrives with its principal already set."""
    if call.principal is None:
        call.principal = await auth.authenticate(call.authorization)


async def translate(call: Call) -> None:
    """Another door's request (Responses, Messages, legacy completions) into the internal
    one (`doors.Door.translate`); OpenAI's own body already is it."""
    if call.door is not None and call.door_body is None:
        await call.door.translate(call)


async def validate(call: Call) -> None:
    """A known endpoint and a well-formed request with no field that could redirect it."""
    if call.endpoint not in doors.ENDPOINTS:
        raise GatewayError(404, f"Unknown endpoint {call.endpoint!r}.", code="not_found")
    check_request(call.endpoint, call.body or {})


async def resolve(call: Call) -> None:
    """The model's targets the principal may use (from memory), their strictest payload
    policy and their secrets (scrubbed from errors). 403/404/400 when refused."""
    principal, body = call.principal, call.body or {}
    assert principal is not None  # authenticate ran
    snap = await directory.snapshot()
    user = await directory.user_info(principal.user_id)
    if principal.department_id is not None and principal.department_id not in (user.department_ids):
        raise GatewayError(
            403, "The key's owner no longer belongs to its department.", code="forbidden"
        )
    alias_name, targets = directory.resolve(snap, user, body["model"], call.endpoint)
    targets = supported_targets(snap, targets, body)
    call.snapshot, call.alias_name, call.targets = snap, alias_name, targets
    call.policy = redaction.strictest([t.payload_policy for t in targets])
    call.secrets = tuple(
        secret
        for target in targets
        if target.connection_id in snap.connections
        for secret in snap.connections[target.connection_id].secret_values()
    )


def supported_targets(
    snap: directory.Snapshot, targets: list[directory.Target], body: dict[str, Any]
) -> list[directory.Target]:
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


# --- the record, opened before anything goes upstream --------------------------------------


async def open_record(call: Call) -> None:
    """Queue the call's record. The next stage (admit) runs while it is written."""
    call.attempts = router.Attempts()
    call.opening = record.open(call)


QUOTA_REFUSALS = (QuotaExceeded, QuotaUnavailable, RateLimited)


async def admit(call: Call) -> None:
    """Quotas and rate limits reserve the call's worst case; 429 (or 503) if refused."""
    assert call.principal is not None
    try:
        call.admission = await admit_call(
            call.principal, call.targets, call.body or {}, call.endpoint
        )
    except DatabaseUnavailable:
        raise database_unavailable() from None
    except QUOTA_REFUSALS as exc:
        raise quota_refusal(exc) from None


async def audit_first(call: Call) -> None:
    """No record, no call: wait for the record at most MESHGATE_AUDIT_WAIT_SECONDS, else 503.

    A stalled database must not hold every call: past the wait the call is refused, and
    its record, if it lands later, is completed then (see `audit.record.complete`).
    """
    assert call.opening is not None
    try:
        call.record_id = await call.opening.wait(settings.MESHGATE_AUDIT_WAIT_SECONDS)
    except AuditUnavailable:
        raise audit_refusal(AUDIT_UNAVAILABLE) from None
    except TimeoutError:
        logger.error(
            "audit: request %s refused, its record took over %d s",
            call.request_id,
            settings.MESHGATE_AUDIT_WAIT_SECONDS,
        )
        raise audit_refusal(AUDIT_LATE) from None


def audit_refusal(message: str) -> GatewayError:
    return GatewayError(503, message, code="audit_unavailable", outcome=Outcome.INTERNAL_ERROR)


# --- upstream --------------------------------------------------------------------------------


async def call_upstream(call: Call) -> None:
    """The call, through the router (retries and fallback); a stream is answered as soon
    as it opens, its chunks passed on as they arrive."""
    assert call.snapshot is not None and call.attempts is not None and call.body is not None
    try:
        if call.streamed:
            target, stream = await router.open_stream(
                call.snapshot, call.targets, call.body, call.attempts
            )
        else:
            target, result = await router.complete(
                call.snapshot, call.targets, call.endpoint, call.body, call.attempts
            )
    except ProviderError as exc:
        raise from_provider(exc, call.secrets) from None
    call.target = target
    if call.streamed:
        call.reply = doors.stream_reply(call.request_id, frames(call, stream))
        return
    call.usage = result.usage
    if target.payload_policy != redaction.METADATA:
        parsed = result.parsed if result.parsed is not None else orjson.loads(result.body)
        call.response_body = doors.recorded_answer(call.endpoint, parsed)
    call.end(Outcome.OK, 200)
    call.reply = doors.json_reply(call.request_id, result.body)


async def frames(call: Call, stream: Stream) -> AsyncIterator[bytes]:
    """The stream's frames then DONE; on failure an error event and no DONE. However it
    ends (iterated to the end or closed), the call ends with it."""
    call.end(Outcome.CLIENT_DISCONNECTED, 499)
    delivered = False
    sent: list[bytes] = []  # kept to count a cut-off stream's partial usage
    try:
        async for frame in stream:
            if call.first_token_at is None:
                call.first_token_at = now()
            sent.append(frame)
            yield frame
        call.end(Outcome.OK, 200)
        delivered = True
        yield doors.DONE
    except ProviderError as exc:
        error = from_provider(exc, call.secrets)
        call.fail(error)
        yield error.event()
    except (asyncio.CancelledError, GeneratorExit):
        if not delivered:
            call.end(Outcome.CLIENT_DISCONNECTED, 499)
        raise
    except Exception as exc:
        log_internal(call.request_id, exc)
        error = internal(call.request_id)
        call.end(Outcome.INTERNAL_ERROR, 500, error.message)
        yield error.event()
    finally:
        try:
            await stream.aclose()
        except Exception:
            logger.warning("gateway: closing the upstream stream of %s failed", call.request_id)
        usage, answer = getattr(stream, "usage", None), getattr(stream, "message", None)
        if call.outcome != Outcome.OK and sent and not (usage and usage.completion_tokens):
            prompt = estimate_prompt_tokens(call.body or {})
            usage, answer = partial_usage(sent, prompt, usage)
        call.usage, call.response_body = usage, answer
        finish(call)


def partial_usage(
    frames: list[bytes], prompt_estimate: int, usage: Usage | None
) -> tuple[Usage, dict[str, Any]]:
    """Usage and message of a stream cut off before the provider reported its usage.

    What was delivered is counted (estimated) so the department pays for what it
    received, and the record shows the partial answer.
    """
    text, arguments = doors.parse_frames(frames)
    completion = estimate_text_tokens(len(text + arguments))
    prompt = usage.prompt_tokens if usage and usage.prompt_tokens else prompt_estimate
    message = {"role": "assistant", "content": text or None, "partial": True}
    return Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=True), message


# --- endings: on every exit path of an opened call, once -------------------------------------


def account(call: Call) -> None:
    """What the call cost (audit's prices), and the admission settled at that amount."""
    call.cost = record.cost(call)
    if call.admission is not None:
        admission, call.admission = call.admission, None
        usage = call.usage
        tokens = usage.prompt_tokens + usage.completion_tokens if usage else 0
        settle_soon(admission, call.cost if call.cost is not None else Decimal(0), tokens)


def complete(call: Call) -> None:
    """The record's completion (or, if its opening failed, the whole record spooled)."""
    call.ended_at = call.ended_at or now()
    record.complete(call, call.ended_at)


def log_internal(request_id: str, exc: BaseException) -> None:
    # The exception's text may quote a provider's answer: log its type and where, not its text.
    logger.error(
        "gateway: internal error in request %s: %s\n%s",
        request_id,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )


# --- the order: the one place a stage is registered -----------------------------------------


class Stage(Protocol):
    async def __call__(self, call: Call, /) -> None: ...


class Ending(Protocol):
    def __call__(self, call: Call, /) -> None: ...


# Run in this order by `pipeline.serve`. Before `open_record`, a refusal is recorded in one
# write; from it on, every exit path runs ENDINGS. A guardrail or a cache lookup is one more
# entry here (after `resolve` to know the targets and policy; before `open_record` to refuse
# with one write, or after `audit_first` to answer from a cache with the call recorded).
STAGES: tuple[Stage, ...] = (
    authenticate,
    translate,
    validate,
    resolve,
    open_record,
    admit,  # runs while the record is written
    audit_first,
    call_upstream,
)
# What looks at a call once it ended, recorded or refused before its record (`observe`):
# metrics and the call's log line; its trace when tracing is on.
OBSERVERS: tuple[Ending, ...] = (
    (metrics.observe, calllog.log_call) if settings.MESHGATE_METRICS else (calllog.log_call,)
)
ENDINGS: tuple[Ending, ...] = (account, complete, *OBSERVERS)

if settings.MESHGATE_TRACING:  # unset: not one stage more
    from . import tracing

    _MARKS: dict[Stage, Stage] = {
        open_record: tracing.opened,
        admit: tracing.admitted,
        audit_first: tracing.written,
    }
    STAGES = (tracing.begin, *(s for stage in STAGES for s in (stage, _MARKS.get(stage)) if s))
    OBSERVERS = (*OBSERVERS, tracing.end)
    ENDINGS = (*ENDINGS, tracing.end)


def finish(call: Call) -> None:
    """Run the endings of a call whose record was opened, once, whatever its exit path."""
    if call.finished:
        return
    call.finished = True
    for ending in ENDINGS:
        ending(call)


def observe(call: Call) -> None:
    """Run the observers of a call refused before its record was opened (no endings)."""
    for observer in OBSERVERS:
        observer(call)
