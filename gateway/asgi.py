"""`GatewayApp`: the lean ASGI app serving `/v1/` (see ARCHITECTURE.md, "the request path").

No Django middleware and no HttpRequest: a bounded body read, orjson, the
cached key, catalog and adapters, and the audit writer. Every response carries
`x-request-id`. From the moment a call's body is read until its answer is sent,
a second task listens for the client's disconnect and cancels the call, because
uvicorn silently drops writes to a closed socket: without the listener a
disconnected client's upstream call, plain or streamed, would run to its end
and be recorded as answered.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import orjson
from django.conf import settings

from audit.outcome import Outcome
from audit.writer import writer
from connections import versioning
from meshsite.lib.ids import unique_hex

from . import auth, directory, door_routes, doors, pipeline, runtime
from .call import Call, Principal, Reply
from .errors import GatewayError, error_body, model_not_found
from .ops import ops_app

logger = logging.getLogger(__name__)

CALL_ROUTES = doors.ROUTES


# Every /v1/ answer, errors and streams included: a browser must never guess a JSON or SSE
# body (which can quote a client's own input) to be HTML.
NOSNIFF = (b"x-content-type-options", b"nosniff")


def new_request_id() -> str:
    return "req_" + unique_hex()


class GatewayApp:
    def __init__(self) -> None:
        self.max_body = settings.MESHGATE_MAX_BODY_BYTES

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.http(scope, receive, send)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                writer.start()
                await writer.attach_loop()
                await ops_app.startup()
                versioning.start_refresher()
                try:
                    # Keys and the catalog are loaded (and adapters imported) before the first call.
                    await directory.snapshot()
                except Exception:
                    logger.warning("gateway: the catalog could not be loaded at startup")
                if settings.MESHGATE_GC_FREEZE:
                    gc.collect()
                    gc.freeze()
                    gc.set_threshold(settings.MESHGATE_GC_THRESHOLD, 20, 100)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await versioning.stop_refresher()
                await ops_app.shutdown()
                await runtime.current.close()
                await writer.detach_loop()
                await asyncio.get_running_loop().run_in_executor(None, writer.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- HTTP -------------------------------------------------------------------------------

    async def http(self, scope: dict[str, Any], receive, send) -> None:
        started = time.monotonic()
        request_id = new_request_id()
        path, method = scope["path"], scope["method"]
        headers = _headers(scope)
        client = scope.get("client")
        client_ip = client[0] if client else None
        user_agent = headers.get(b"user-agent", b"").decode("latin-1")
        door = door_routes.DOORS.get(path)  # Responses, Messages, legacy completions
        endpoint = door.endpoint if door is not None else CALL_ROUTES.get(path)
        call = Call.since(
            request_id, endpoint or path[:40], started, client_ip=client_ip, user_agent=user_agent
        )
        call.door = door or door_routes.side_door(path)
        try:
            if endpoint is not None:
                if method != "POST":
                    raise _not_allowed()
                call.body = await self.read_json(headers, receive)
                call.authorization = (door or doors.OPENAI).credential(headers)
                call.traceparent = headers.get(b"traceparent")
                watch = _ClientWatch(receive)
                try:
                    reply = await pipeline.serve(call)
                    if door is not None and reply.status == 200:
                        reply = door.answer(call, reply)
                except asyncio.CancelledError:
                    # The client left: the call was ended and recorded (499); nobody to answer.
                    if watch.ours():
                        return
                    raise
                except Exception:
                    watch.stop()
                    raise
                if reply.stream is None:
                    watch.stop()
                else:
                    await self.pump(reply, watch, send)
                    return
            elif path == "/v1/models" or path.startswith("/v1/models/"):
                if method != "GET":
                    raise _not_allowed()
                principal = await auth.authenticate(headers.get(b"authorization"))
                reply = await self.models(principal, path, request_id)
            elif call.door is not None:  # count_tokens, GET/DELETE /v1/responses/{id}
                call.authorization = call.door.credential(headers)
                reply = await door_routes.side(
                    call, method, path, lambda: self.read_json(headers, receive)
                )
            else:
                raise GatewayError(404, f"Unknown path {path[:100]}.", code="not_found")
        except GatewayError as error:
            # Refused before the pipeline: still one record per request to /v1/.
            reply = await pipeline.refuse(error, call)
        except Exception as exc:
            logger.error("gateway: internal error before the service: %s", type(exc).__name__)
            reply = doors.reply_error(
                call,
                GatewayError(
                    500, f"Internal error (request id {request_id}).", code="internal_error"
                ),
            )
        await self.respond(reply, receive, send)

    async def read_json(self, headers: dict[bytes, bytes], receive) -> dict[str, Any]:
        """The request body as a JSON object; 413 before reading past the limit, 400 if not JSON."""
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise GatewayError(400, "Invalid Content-Length.", code="invalid_request")
            if declared > self.max_body:
                raise _too_large(self.max_body)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(
                    400,
                    "The client went away.",
                    code="disconnected",
                    outcome=Outcome.CLIENT_DISCONNECTED,
                )
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(self.max_body)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        try:
            data = orjson.loads(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except orjson.JSONDecodeError:
            raise GatewayError(400, "The request body is not valid JSON.", code="invalid_json")
        if not isinstance(data, dict):
            raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
        return data

    async def models(self, principal: Principal, path: str, request_id: str) -> Reply:
        items = await pipeline.list_models(principal)
        if path == "/v1/models":
            return doors.json_reply(request_id, orjson.dumps({"object": "list", "data": items}))
        wanted = path[len("/v1/models/") :]
        for item in items:
            if item["id"] == wanted:
                return doors.json_reply(request_id, orjson.dumps(item))
        return doors.error_reply(model_not_found(wanted), request_id)

    async def respond(self, reply: Reply, receive, send) -> None:
        if reply.stream is None:
            body = reply.body or b""
            headers = [*reply.headers, (b"content-length", str(len(body)).encode()), NOSNIFF]
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.pump(reply, _ClientWatch(receive), send)

    async def pump(self, reply: Reply, watch: _ClientWatch, send) -> None:
        """Send the stream's frames as they come; stop it as soon as the client goes away.

        The frames are sent from this task, each as soon as the stream yields it (a
        chunk holds what one upstream read brought): no hop through another task
        before the first byte. `watch` cancels this task when the client disconnects,
        which cancels the stream wherever it waits.
        """
        stream = reply.stream
        ending = False  # the last message is going out: nothing more to send
        try:
            # The head goes out while the upstream's first bytes are still on their way.
            headers = [*reply.headers, NOSNIFF]
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            try:
                async for frame in stream:
                    if ending:  # nothing follows [DONE]; the stream is only run to its end
                        continue
                    if frame == doors.DONE:  # the last frame goes out with the response's end
                        ending = True
                        watch.stop()  # a disconnect now is the response's end
                        await send({"type": "http.response.body", "body": frame})
                    else:
                        await send({"type": "http.response.body", "body": frame, "more_body": True})
            except Exception as exc:  # the stream's own bug: end the response cleanly
                logger.warning("gateway: a stream ended with %s", type(exc).__name__)
            if not ending:
                ending = True
                watch.stop()  # a disconnect now is the response's end
                await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            # Our own cancel (the client left) ends the call here; any other goes on up.
            if not watch.ours():
                raise
        finally:
            watch.stop()
            # Runs the stream's own cleanup (upstream closed, record completed) however we left.
            await stream.aclose()


class _ClientWatch:
    """Cancels the current task when the client disconnects, until stopped.

    `ours()`, in an `except CancelledError`, says whether the cancel was this watch's
    (the client left) rather than someone else's (a shutdown), and takes it back.
    """

    __slots__ = ("_fired", "_listening", "_task")

    def __init__(self, receive) -> None:
        self._task = asyncio.current_task()
        self._fired = False
        self._listening = asyncio.ensure_future(_disconnected(receive))
        self._listening.add_done_callback(self._client_left)

    def _client_left(self, listening: asyncio.Future) -> None:
        if not listening.cancelled() and self._listening is not None:
            self._fired = True
            self._task.cancel()

    def stop(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.cancel()

    def ours(self) -> bool:
        self.stop()
        return self._fired and self._task.uncancel() == 0


async def _disconnected(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def _not_allowed() -> GatewayError:
    return GatewayError(405, "Method not allowed.", code="method_not_allowed")


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than {limit} bytes.", code="too_large")


__all__ = ["GatewayApp", "error_body", "new_request_id"]
