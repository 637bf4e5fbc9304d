"""The playground page and the endpoints its script calls.

Every call goes through `gateway.pipeline.handle`, in process: the same
permission, budget, routing and audit path as `/v1/`, with purpose
"playground", no API key, and the department the user picked.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from gateway import pipeline

from . import picker, runs
from .csp import content_security_policy
from .payload import PayloadError, parse_chat_request

PURPOSE = runs.PURPOSE
# Gateway headers worth passing to the page; hop-by-hop and length headers are not.
RELAYED_HEADERS = frozenset({"x-request-id", "x-meshgate-model", "x-meshgate-llm", "retry-after"})


def _principal(user, department_id: int | None) -> pipeline.Principal:
    return pipeline.Principal(
        user_id=user.pk,
        username=user.get_username(),
        department_id=department_id,
        api_key_id=None,
        api_key_prefix="",
        purpose=PURPOSE,
    )


def _error(message: str, status: int, code: str) -> JsonResponse:
    # The OpenAI error shape, like the gateway's own refusals, so the page reads one shape.
    return JsonResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}},
        status=status,
    )


@never_cache
@login_required
@ensure_csrf_cookie
@content_security_policy
async def page(request):
    user = await request.auser()
    departments = await picker.adepartments_of(user)
    first_department = departments[0]["id"] if departments else None
    models = picker.entries(await pipeline.list_models(_principal(user, first_department)))
    recent = await runs.arecent_runs(user)
    context = {
        "departments": departments,
        "models": models,
        "recent_runs": recent,
        # Read by playground.js from a JSON data block (not executed, so the CSP allows it).
        "page_data": {
            "models": models,
            "departments": departments,
            "recent_runs": recent,
            "urls": {"chat": reverse("playground:chat"), "runs": reverse("playground:runs")},
        },
    }
    # Rendered in a thread: the auth context processor reads the (lazy, sync) request.user.
    return await sync_to_async(render)(request, "playground/index.html", context)


async def _relay(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-emit the gateway's SSE frames, and close its stream on every exit path.

    When the browser stops (Stop button, closed tab), Django cancels this
    generator; closing the gateway's stream lets it record the call as
    client_disconnected and release the upstream connection.
    """
    try:
        async for frame in stream:
            yield frame
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


@never_cache
@require_POST
@content_security_policy
async def chat(request):
    user = await request.auser()
    if not user.is_authenticated:
        return _error("Your session has ended: log in again.", 401, "not_logged_in")
    try:
        chat_request = parse_chat_request(request.body)
    except PayloadError as exc:
        return _error(str(exc), 400, "invalid_playground_request")

    departments = {d["id"] for d in await picker.adepartments_of(user)}
    if chat_request.department_id not in departments:
        return _error(
            "You can only charge a department you are a member of.", 403, "not_your_department"
        )

    request_id = f"pg-{uuid.uuid4().hex}"
    reply = await pipeline.handle(
        "chat.completions",
        _principal(user, chat_request.department_id),
        chat_request.gateway_body(),
        request_id=request_id,
        client_ip=request.META.get("REMOTE_ADDR") or None,
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
    )
    if reply.stream is not None:
        response: HttpResponse = StreamingHttpResponse(
            _relay(reply.stream), status=reply.status, content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass each frame on as it comes
    else:
        response = HttpResponse(
            reply.body or b"", status=reply.status, content_type="application/json"
        )
    for name, value in reply.headers:
        header = name.decode("latin1")
        if header.lower() in RELAYED_HEADERS:
            response[header] = value.decode("latin1")
    response["X-Request-Id"] = request_id
    return response


@never_cache
@login_required
@require_GET
@content_security_policy
async def run_list(request):
    user = await request.auser()
    return JsonResponse({"runs": await runs.arecent_runs(user)})


@never_cache
@login_required
@require_GET
@content_security_policy
async def run_detail(request, request_id: str):
    user = await request.auser()
    found = await runs.arun_detail(user, request_id)
    if found is None:
        raise Http404("No such playground run of yours.")
    return JsonResponse(found)
