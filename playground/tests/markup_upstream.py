"""An OpenAI-compatible upstream whose model answers with markup, served on a free port.

The threat the playground guards against is a model (compromised, or steered by a
prompt injection) answering with HTML. This server speaks OpenAI's streamed chat
wire format and always answers MARKUP_ANSWER, split across chunks, with usage.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import uvicorn

MARKUP_ANSWER = "Here it is: <img src=x onerror=alert(1)> and <script>alert(2)</script>."
PIECES = ["Here it is: ", "<img src=x ", "onerror=alert(1)>", " and <script>", "alert(2)</script>."]


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-markup",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "markup-model",
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] != "/v1/chat/completions":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    frames = [_chunk({"role": "assistant", "content": ""})]
    frames += [_chunk({"content": piece}) for piece in PIECES]
    frames.append(_chunk({}, finish="stop"))
    usage = {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29}
    frames += [_chunk({}, usage=usage), b"data: [DONE]\n\n"]
    for frame in frames:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


class MarkupUpstream:
    def __enter__(self) -> MarkupUpstream:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "the markup upstream did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
