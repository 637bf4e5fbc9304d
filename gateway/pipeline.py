"""The hot path: one call through its stages, from the door's request to its record.

The ASGI app (`gateway.asgi`, the OpenAI door) and the playground both call `serve`
(or `handle`). It runs `stages.STAGES` in order over the call: authenticate,
validate, resolve and authorize, open the record, admit, wait for the record (no
record, no call: 503), call upstream through the router. A refusal before the record
is opened is recorded in one write (`audit.record.refuse`); from the opening on, every
exit path runs `stages.ENDINGS` once (account, complete). A streamed reply's iterator
runs them when it ends, however it ends: iterate it to the end or `aclose()` it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings

from audit import record
from audit.outcome import Outcome
from audit.writer import AuditUnavailable
from connections.providers.base import Usage
from connections.tokens import estimate_prompt_tokens

from . import directory, doors, stages
from .call import Call, Principal, Reply, now
from .errors import GatewayError, internal
from .stages import finish, log_internal


async def serve(call: Call) -> Reply:
    """Run the call through its stages; the reply its door sends (a refusal included)."""
    try:
        for stage in stages.STAGES:
            await stage(call)
            if call.reply is not None:  # a stage answered
                break
    except GatewayError as error:
        return await refused(call, error)
    except asyncio.CancelledError:
        cut(call)
        raise
    except Exception as exc:
        log_internal(call.request_id, exc)
        return await refused(call, internal(call.request_id))
    reply = call.reply
    if reply is None:  # no stage answered: a registration error, not a client's
        log_internal(call.request_id, RuntimeError("no stage answered"))
        return await refused(call, internal(call.request_id))
    if reply.stream is None:
        finish(call)
    return reply


async def refused(call: Call, error: GatewayError) -> Reply:
    """End a call a stage refused (or failed) and answer with the error.

    Before its record was opened: the whole record in one write. After: the refusal
    waits for the record (unless the record is what failed), then the endings run.
    """
    call.fail(error)
    opening = call.opening
    if opening is None:
        await record.refuse(call, now())
        stages.observe(call)
        return doors.reply_error(call, error)
    if call.record_id is None and error.code != "audit_unavailable":
        try:
            call.record_id = await opening.wait(settings.MESHGATE_AUDIT_WAIT_SECONDS)
        except (AuditUnavailable, TimeoutError):
            pass  # completed or spooled once its write ends (audit.record.complete)
        except asyncio.CancelledError:
            call.end(Outcome.CLIENT_DISCONNECTED, 499)
            finish(call)
            raise
    finish(call)
    return doors.reply_error(call, error)


def cut(call: Call) -> None:
    """A call whose client hung up. Before its record was opened nothing was called and
    nothing is recorded. Once a target was called it is billed as a cut stream is: its
    estimated prompt tokens (a plain call delivers no output before it ends), marked as
    estimated, and the reservation is settled at that amount."""
    if call.opening is None:
        return
    call.end(Outcome.CLIENT_DISCONNECTED, 499)
    target = call.attempts.cut if call.attempts else None
    if target is not None:
        call.target = target
        call.usage = Usage(prompt_tokens=estimate_prompt_tokens(call.body or {}), estimated=True)
    finish(call)


async def refuse(error: GatewayError, call: Call) -> Reply:
    """Record and answer a request its door refused before the pipeline (one write)."""
    return await refused(call, error)


async def handle(
    endpoint: str,
    principal: Principal,
    body: dict[str, Any],
    *,
    request_id: str,
    client_ip: str | None,
    user_agent: str,
) -> Reply:
    """Serve one call to `endpoint` for a known `principal` (the playground's way in)."""
    call = Call(
        request_id,
        endpoint,
        client_ip=client_ip,
        user_agent=user_agent,
        body=body,
        principal=principal,
    )
    return await serve(call)


async def list_models(principal: Principal) -> list[dict[str, Any]]:
    """The LLMs and aliases the principal may use, in OpenAI's model shape plus Meshgate's."""
    snap = await directory.snapshot()
    user = await directory.user_info(principal.user_id)
    models: list[dict[str, Any]] = directory.usable_models(snap, user)
    return models


__all__ = ["Call", "Principal", "Reply", "handle", "list_models", "serve"]
