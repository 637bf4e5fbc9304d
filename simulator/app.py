"""The simulator's ASGI application: routing, authentication, faults and the control API."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import time
from collections import OrderedDict, deque
from typing import Any

import orjson

from . import bedrock_wire, openai_wire
from .asgi import JSON, Request, respond, respond_faulty, respond_ok, stream

# Model-name conventions (see the package docstring): `fail-503`, `slow-1000`, `drip-50`, `drop-3`.
CONVENTION = re.compile(r"(?:^|[-_.:/])(fail|slow|drip|drop)-(\d+)(?=$|[-_.:/])")
AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|embeddings)$")
SECRET_HEADERS = {b"authorization", b"api-key", b"x-amz-security-token"}
STATUS_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", "timeout"),
    422: ("invalid_request_error", "unprocessable"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def fault_from_name(model: str) -> dict[str, Any]:
    return dict(_fault_of_name(model))


@functools.lru_cache(maxsize=4096)
def _fault_of_name(model: str) -> tuple[tuple[str, Any], ...]:
    """The conventions in a model name, parsed once per name (the regex is not per request)."""
    fault: dict[str, Any] = {}
    for kind, number in CONVENTION.findall(model or ""):
        value = int(number)
        if kind == "fail":
            fault["status"] = value
            if value == 429:
                fault["retry_after"] = 1
        elif kind == "slow":
            fault["delay_ms"] = value
        elif kind == "drip":
            fault["chunk_interval_ms"] = value
        elif kind == "drop":
            fault["drop_after_chunks"] = value
    return tuple(fault.items())


class Simulator:
    """An ASGI provider simulator. Per-process state: scripts, the request log, the prompt cache."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: list[str] | None = None,
        log_size: int = 2000,
        aws_credentials: tuple[str, str] | None = None,
    ) -> None:
        self.api_key = api_key
        self.aws_credentials = aws_credentials
        self.models = models or [name for name, _ in openai_wire.DEFAULT_MODELS]
        self.scripts: dict[str, deque[dict[str, Any]]] = {}
        self.log: deque[tuple[Request, str | None]] = deque(maxlen=log_size)
        self.seen_system_prompts: set[str] = set()
        self.answers = AnswerCache()

    @property
    def api_key(self) -> str | None:
        return self._api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        # Set after construction by the command line; the header it expects, as bytes, once.
        self._api_key = value
        self._bearer = f"Bearer {value}".encode("latin-1") if value else None

    def reset(self) -> None:
        self.scripts.clear()
        self.log.clear()
        self.seen_system_prompts.clear()
        self.answers.clear()

    # --- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        request = Request(scope, b"".join(chunks))
        await self.handle(request, send)

    async def handle(self, request: Request, send) -> None:
        path = request.path
        if path.startswith("/_sim/"):
            return await self.control(request, send)
        if path.startswith("/v1/"):
            return await self.openai(request, send)
        if path.startswith("/openai/"):
            return await self.azure(request, send)
        if path.startswith(("/model/", "/foundation-models")):
            return await bedrock_wire.handle(self, request, send)
        await respond(send, 404, openai_wire.error_body("Not found.", **_kind(404)))

    # --- shared helpers -----------------------------------------------------------------------

    def record(self, request: Request, model: str | None) -> None:
        self.log.append((request, model))

    def next_fault(self, model: str) -> dict[str, Any]:
        if self.scripts:
            for key in (model, "*"):
                queue = self.scripts.get(key)
                if queue:
                    return queue.popleft()
        return fault_from_name(model)

    async def apply_fault(self, fault: dict[str, Any], send, error=None) -> bool:
        """Sleep and/or answer with an error as scripted; True when the answer was sent.

        `error(status, message, fault)` gives a provider's (body, headers); OpenAI's by default.
        """
        if fault.get("delay_ms"):
            await asyncio.sleep(fault["delay_ms"] / 1000)
        status = fault.get("status")
        if status and status >= 400:
            message = fault.get("message") or f"Simulated error {status}."
            body, headers = (error or _openai_fault_error)(status, message, fault)
            if fault.get("retry_after") is not None:
                headers = [*headers, (b"retry-after", str(fault["retry_after"]).encode())]
            await respond(send, status, body, headers)
            return True
        return False

    # --- control API --------------------------------------------------------------------------

    async def control(self, request: Request, send) -> None:
        if request.path == "/_sim/reset" and request.method == "POST":
            self.reset()
            return await respond(send, 200, b'{"ok":true}')
        if request.path == "/_sim/requests" and request.method == "GET":
            return await respond(send, 200, orjson.dumps({"requests": self.requests()}))
        if request.path == "/_sim/script" and request.method == "POST":
            try:
                data = orjson.loads(request.body)
                model, responses = data["model"], data["responses"]
                assert isinstance(model, str) and isinstance(responses, list)
                assert all(isinstance(r, dict) for r in responses)
            except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
                body = openai_wire.error_body(
                    'Expected {"model": str, "responses": [object, ...]}.', **_kind(400)
                )
                return await respond(send, 400, body)
            self.scripts.setdefault(model, deque()).extend(responses)
            return await respond(send, 200, orjson.dumps({"ok": True, "queued": len(responses)}))
        await respond(send, 404, openai_wire.error_body("Not found.", **_kind(404)))

    def requests(self) -> list[dict[str, Any]]:
        out = []
        for request, model in self.log:
            headers = {}
            for key, value in request.headers:
                name = key.decode("latin-1")
                if key in SECRET_HEADERS:
                    headers[name] = "sha256:" + hashlib.sha256(value).hexdigest()
                else:
                    headers[name] = value.decode("latin-1")
            try:
                body: Any = orjson.loads(request.body) if request.body else None
            except orjson.JSONDecodeError:
                body = request.body.decode("utf-8", "replace")
            out.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": request.query.decode("latin-1"),
                    "model": model,
                    "headers": headers,
                    "body": body,
                }
            )
        return out

    # --- OpenAI and Azure OpenAI --------------------------------------------------------------

    async def openai(self, request: Request, send) -> None:
        path = request.path
        if request.method == "GET" and path.startswith("/v1/models"):
            self.record(request, None)
            if not self._bearer_ok(request):
                return await respond(send, 401, _openai_error(401, "Incorrect API key provided."))
            if path == "/v1/models":
                return await respond(send, 200, openai_wire.models_body(self.models))
            name = path[len("/v1/models/") :]
            if name in self.models:
                return await respond(send, 200, orjson.dumps(openai_wire.model_object(name)))
            message = f"The model '{name}' does not exist."
            return await respond(send, 404, openai_wire.error_body(message, **_kind(404)))
        if request.method == "POST" and path in ("/v1/chat/completions", "/v1/embeddings"):
            body = _json_object(request.body)
            model = body.get("model") if isinstance(body, dict) else None
            self.record(request, model if isinstance(model, str) else None)
            if not self._bearer_ok(request):
                return await respond(send, 401, _openai_error(401, "Incorrect API key provided."))
            if not isinstance(body, dict):
                return await respond(send, 400, _openai_error(400, "We could not parse the JSON."))
            if not isinstance(model, str) or not model:
                return await respond(send, 400, _openai_error(400, "You must provide a model."))
            endpoint = "chat" if path.endswith("completions") else "embeddings"
            if endpoint == "chat" and not _valid_messages(body.get("messages")):
                message = "'messages' must be a non-empty list of objects with a role."
                return await respond(send, 400, _openai_error(400, message))
            return await self.serve(endpoint, model, body, send, request.body)
        await respond(send, 404, openai_wire.error_body("Not found.", **_kind(404)))

    async def azure(self, request: Request, send) -> None:
        match = AZURE_PATH.match(request.path)
        if request.method != "POST" or not match:
            return await respond(send, 404, _azure_error(404, "Resource not found"))
        deployment, operation = match.groups()
        body = _json_object(request.body)
        self.record(request, deployment)
        if not request.param("api-version"):
            return await respond(send, 404, _azure_error(404, "Resource not found"))
        key = request.header(b"api-key")
        bearer = request.header(b"authorization")
        if self.api_key and key != self.api_key and bearer != f"Bearer {self.api_key}":
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make "
                "sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource."
            )
            return await respond(send, 401, _azure_error(401, message))
        if not isinstance(body, dict):
            return await respond(send, 400, _openai_error(400, "We could not parse the JSON."))
        endpoint = "chat" if operation == "chat/completions" else "embeddings"
        await self.serve(endpoint, deployment, body, send, request.body)

    def _bearer_ok(self, request: Request) -> bool:
        if self._bearer is None:
            return True
        for key, value in request.headers:
            if key == b"authorization":
                return value == self._bearer
        return False

    async def serve(
        self, endpoint: str, model: str, body: dict[str, Any], send, raw: bytes = b""
    ) -> None:
        fault = self.next_fault(model)
        if not fault and raw:
            # The normal path (no fault, nothing scripted): the same request body gets the same
            # answer, so a repeated one is served from the cache (the benchmarks' upstream).
            cached = self.answers.get(endpoint, model, raw)
            if cached is not None:
                if endpoint == "chat" and body.get("stream"):
                    return await stream(send, cached)
                return await respond_ok(send, cached)
        elif await self.apply_fault(fault, send):
            return
        if endpoint == "embeddings":
            answer = openai_wire.embeddings_body(body, model)
            if answer is None:
                message = "'input' must be a string, a list of strings or token lists."
                answer = _openai_error(400, message)
                return await respond(send, 400, answer)
            if not fault and raw:
                self.answers.put(endpoint, model, raw, answer, created=None)
            return await respond_faulty(send, answer, fault)
        seen = len(self.seen_system_prompts)
        content = fault.get("content")
        plan = openai_wire.ChatPlan(
            body, model, self.seen_system_prompts, content if isinstance(content, str) else None
        )
        # A system prompt seen for the first time is reported as cached the next time: that
        # answer cannot be replayed.
        cacheable = not fault and raw and len(self.seen_system_prompts) == seen
        if not body.get("stream"):
            answer = plan.completion()
            if cacheable:
                self.answers.put(endpoint, model, raw, answer, created=plan.created)
            return await respond_faulty(send, answer, fault)
        options = body.get("stream_options") or {}
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        frames = plan.chunks(include_usage)
        if cacheable:
            self.answers.put(endpoint, model, raw, b"".join(frames), created=plan.created)
        if fault.get("error_after_chunks") is not None:
            # OpenAI reports a failure after the stream started as an error event.
            message = (
                fault.get("message") or "The server had an error while processing your request."
            )
            error = openai_wire.error_body(message, error_type="server_error", code=None)
            frames = [*frames[: fault["error_after_chunks"]], b"data: " + error + b"\n\n"]
        await stream(send, frames, fault)


# --- responses --------------------------------------------------------------------------------


class AnswerCache:
    """Rendered answers to repeated fault-free requests, keyed by endpoint, model and raw body.

    A chat answer carries `created` (whole seconds), so it is replayed only within the second it
    was rendered in; embeddings carry no time. Bounded, least recently stored first out.
    """

    MAX_ENTRIES = 512
    MAX_BODY = 64 * 1024

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, str, bytes], tuple[int | None, bytes]] = OrderedDict()

    def clear(self) -> None:
        self._entries.clear()

    def get(self, endpoint: str, model: str, raw: bytes) -> bytes | None:
        entry = self._entries.get((endpoint, model, raw))
        if entry is None:
            return None
        created, answer = entry
        if created is not None and created != int(time.time()):
            return None
        return answer

    def put(self, endpoint: str, model: str, raw: bytes, answer: bytes, *, created) -> None:
        if len(raw) > self.MAX_BODY:
            return
        key = (endpoint, model, raw)
        self._entries[key] = (created, answer)
        self._entries.move_to_end(key)
        if len(self._entries) > self.MAX_ENTRIES:
            self._entries.popitem(last=False)


def _kind(status: int) -> dict[str, Any]:
    error_type, code = STATUS_TYPES.get(
        status, ("server_error" if status >= 500 else "error", None)
    )
    return {"error_type": error_type, "code": code}


def _openai_error(status: int, message: str) -> bytes:
    return openai_wire.error_body(message, **_kind(status))


def _openai_fault_error(status: int, message: str, fault: dict[str, Any]):
    kind = {**_kind(status), **({"code": fault["code"]} if "code" in fault else {})}
    return openai_wire.error_body(message, **kind), JSON


def _azure_error(status: int, message: str) -> bytes:
    return orjson.dumps({"error": {"code": str(status), "message": message}})


def _valid_messages(messages: Any) -> bool:
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    )


def _json_object(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def create_app(
    *,
    api_key: str | None = None,
    models: list[str] | None = None,
    aws_credentials: tuple[str, str] | None = None,
) -> Simulator:
    return Simulator(api_key=api_key, models=models, aws_credentials=aws_credentials)


def app_from_env() -> Simulator:
    key = os.environ.get("MESHGATE_SIMULATOR_API_KEY") or None
    models = os.environ.get("MESHGATE_SIMULATOR_MODELS")
    aws_key = os.environ.get("MESHGATE_SIMULATOR_AWS_ACCESS_KEY_ID")
    aws_secret = os.environ.get("MESHGATE_SIMULATOR_AWS_SECRET_ACCESS_KEY")
    return Simulator(
        api_key=key,
        models=models.split(",") if models else None,
        aws_credentials=(aws_key, aws_secret) if aws_key and aws_secret else None,
    )
