"""A raw HTTP/1.1 upstream for tests of the client's edges: it records every request that
reached it (headers included) and answers as a test's `answer` function says, byte by byte.

Not a test module. `answer(request, nth)` gets the parsed request and its index on its
TCP connection (0 for the first) and returns the bytes to send, an iterable of byte
chunks (sent one by one, until the client goes away), or None to close the connection
without answering.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RawUpstream:
    answer: Callable[[Request, int], bytes | Iterable[bytes] | None]
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    sent: int = 0  # bytes of answers written
    aborted: int = 0  # answers the client cut short by closing its side
    close_after_answer: bool = False  # hang up after each answer (no Connection: close)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self._stopped = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        nth = 0
        with sock:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                while len(buffer) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                request = Request(method, path, headers, body)
                self.requests.append(request)
                reply = self.answer(request, nth)
                nth += 1
                if reply is None:
                    return
                try:
                    for chunk in [reply] if isinstance(reply, bytes) else reply:
                        sock.sendall(chunk)
                        self.sent += len(chunk)
                except OSError:
                    self.aborted += 1
                    return
                if self.close_after_answer:
                    return


def json_answer(payload: dict, *, status: str = "200 OK", extra: str = "") -> bytes:
    body = orjson.dumps(payload)
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def chat_answer(text: str = "Hello there.") -> bytes:
    return json_answer(
        {
            "id": "chatcmpl-raw",
            "object": "chat.completion",
            "created": 0,
            "model": "raw-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }
    )


def models_answer() -> bytes:
    return json_answer({"object": "list", "data": [{"id": "raw-model", "object": "model"}]})
