"""The adapters' lean HTTP/1.1 client (`meshsite.lib.http`) against real servers.

Edge cases are hand-written HTTP/1.1 on `asyncio.start_server` sockets in the test's own
loop, so each test controls every byte and counts the connections it accepts; a real
uvicorn (the simulator, and one with a short keep-alive) stands for an ordinary server.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import hashlib
import ipaddress
import json
import socket
import ssl
import time
import zlib

import pytest

from meshsite.lib import http
from meshsite.lib.http import (
    HIGH_WATER,
    ClosedBeforeAnswer,
    ConnectError,
    HTTPClient,
    RemoteProtocolError,
    TimeoutException,
    TransportError,
    encode_headers,
)

# --- a hand-written upstream ------------------------------------------------------------------


class Upstream:
    """An HTTP/1.1 server on a free port; `handler(upstream, reader, writer)` serves one connection.

    Counts accepted connections and those still open (the server sees the client's close).
    """

    def __init__(self, handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.accepts = 0
        self.open = 0
        self.peak = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/v1/chat/completions"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.accepts += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # the test is over (a cancelled task here logs noise)
            pass
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        """The next request (head, body), or None when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.requests.append((head, body))
        return head, body


def answer(body: bytes = b"ok", *, status: str = "200 OK", headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def keep_alive(respond):
    """A handler answering every request on the connection with `await respond(head, body)`."""

    async def handler(upstream: Upstream, reader, writer) -> None:
        while (request := await upstream.read_request(reader)) is not None:
            writer.write(await respond(*request))
            await writer.drain()

    return handler


async def echo(head: bytes, body: bytes) -> bytes:
    return answer(body)


def pool_count(client: HTTPClient) -> int:
    """Connections the client holds open or is opening, over all its origins."""
    return sum(pool.count for pool in client._pools.values())


async def eventually(predicate, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not become true in time"
        await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 8))


# --- whole answers ----------------------------------------------------------------------------


def test_a_post_sends_its_whole_body_and_reads_the_whole_answer():
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value

    async def respond(head: bytes, received: bytes) -> bytes:
        return answer(hashlib.sha256(received).hexdigest().encode() + b"|" + received)

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            headers = encode_headers({"content-type": "application/octet-stream", "x-k": "v"})
            response = await client.request(
                "POST", upstream.url + "?a=1", content=body, headers=headers
            )
            await client.aclose()
        digest, _, echoed = response.content.partition(b"|")
        assert response.status_code == 200
        assert digest.decode() == hashlib.sha256(body).hexdigest() and echoed == body
        head = upstream.requests[0][0].decode("latin-1")
        assert head.startswith("POST /v1/chat/completions?a=1 HTTP/1.1\r\n")
        lines = head.lower().split("\r\n")
        assert f"host: 127.0.0.1:{upstream.port}" in lines
        assert f"content-length: {len(body)}" in lines
        assert "x-k: v" in lines and "user-agent: meshgate" in lines

    run(scenario())


def test_a_plain_post_to_the_simulator_through_a_real_uvicorn(simulator):
    simulator.reset()
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    headers = encode_headers(
        {"content-type": "application/json", "authorization": "Bearer " + simulator.api_key}
    )

    async def scenario():
        client = HTTPClient()
        url = simulator.openai_base + "/chat/completions"
        answers = [
            await client.request("POST", url, content=json.dumps(payload).encode(), headers=headers)
            for _ in range(3)
        ]
        count = pool_count(client)
        await client.aclose()
        return answers, count

    answers, count = run(scenario())
    assert [a.status_code for a in answers] == [200, 200, 200]
    completion = json.loads(answers[0].content)
    assert completion["object"] == "chat.completion" and completion["choices"][0]["message"]
    assert answers[0].headers["content-type"].startswith("application/json")
    assert count == 1  # three calls, one keep-alive connection
    assert len(simulator.requests()) == 3


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_it_reads_content_length_and_chunked_answers(framing):
    body = b"".join(b"line %d of the answer\n" % i for i in range(2000))

    async def respond(head: bytes, received: bytes) -> bytes:
        if framing == "content-length":
            return answer(body)
        pieces = [body[i : i + 777] for i in range(0, len(body), 777)]
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            first = await client.request("POST", upstream.url, content=b"{}")
            second = await client.request("POST", upstream.url, content=b"{}")
            await client.aclose()
            return first, second, upstream.accepts

    first, second, accepts = run(scenario())
    assert first.content == body and second.content == body
    assert accepts == 1


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_answer_without_length_ends_at_eof_and_its_connection_is_not_reused(
    scheme, tls_contexts
):
    server_tls, client_tls = tls_contexts if scheme == "https" else (None, None)
    body = b"x" * 300_000

    async def handler(upstream: Upstream, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for i in range(0, len(body), 50_000):
            writer.write(body[i : i + 50_000])
            await writer.drain()
            await asyncio.sleep(0.001)

    async def scenario():
        async with Upstream(handler, tls=server_tls) as upstream:
            client = HTTPClient(ssl_context=client_tls)
            first = await client.request("POST", upstream.url)
            second = await client.request("POST", upstream.url)
            await client.aclose()
            return first, second, upstream.accepts

    first, second, accepts = run(scenario())
    assert first.content == body and second.content == body
    assert accepts == 2


def test_an_answer_without_length_cut_by_a_reset_is_an_error():
    async def handler(upstream: Upstream, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.02)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # RST: not a clean end of the body

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient()
            with pytest.raises(TransportError):
                await client.request("POST", upstream.url)
            assert pool_count(client) == 0

    run(scenario())


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_it_decodes_gzip_and_deflate_answers(encoding):
    body = b"".join(b'{"index": %d, "text": "compressible"}\n' % i for i in range(20_000))
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)

    async def respond(head: bytes, received: bytes) -> bytes:
        return answer(packed, headers=(f"Content-Encoding: {encoding}",))

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            whole = await client.request("POST", upstream.url)
            streamed = await client.request("POST", upstream.url, stream=True)
            parts = [chunk async for chunk in streamed.aiter_bytes()]
            await streamed.aclose()
            await client.aclose()
            return whole, parts, upstream.accepts

    whole, parts, accepts = run(scenario())
    assert len(packed) < len(body) // 10
    assert whole.content == body and b"".join(parts) == body
    assert all(parts)  # no empty pieces handed to the consumer
    assert accepts == 1


def test_an_undecodable_body_is_a_protocol_error():
    async def respond(head: bytes, received: bytes) -> bytes:
        return answer(b"this is not gzip at all", headers=("Content-Encoding: gzip",))

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            with pytest.raises(RemoteProtocolError):
                await client.request("POST", upstream.url)
            await eventually(lambda: upstream.open == 0)
            assert pool_count(client) == 0

    run(scenario())


def test_interim_1xx_answers_are_skipped_for_the_real_one():
    async def respond(head: bytes, received: bytes) -> bytes:
        return (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            + answer(b'{"ok": true}', status="201 Created", headers=("X-Final: yes",))
        )

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            first = await client.request("POST", upstream.url)
            second = await client.request("POST", upstream.url)
            await client.aclose()
            return first, second, upstream.accepts

    first, second, accepts = run(scenario())
    assert (first.status_code, first.content) == (201, b'{"ok": true}')
    assert first.headers == {"content-length": "12", "x-final": "yes"}  # not the 103's link
    assert second.status_code == 201
    assert accepts == 1


def test_repeated_headers_are_joined_and_names_lower_cased():
    async def respond(head: bytes, received: bytes) -> bytes:
        return answer(
            headers=(
                "X-RateLimit-Remaining-Requests: 99",
                "Set-Cookie: a=1",
                "set-cookie: b=2",
                "SET-COOKIE: c=3",
                "Cache-Control: no-cache",
                "Cache-control: no-store",
            )
        )

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            response = await client.request("POST", upstream.url)
            await client.aclose()
            return response

    response = run(scenario())
    assert isinstance(response.headers, http.Headers)
    assert response.headers == {
        "content-length": "2",
        "x-ratelimit-remaining-requests": "99",
        "set-cookie": "a=1, b=2, c=3",
        "cache-control": "no-cache, no-store",
    }


@pytest.mark.parametrize("when", ["same-write", "while-streaming"])
def test_bytes_after_the_end_of_an_answer_join_nothing_and_close_the_connection(when):
    extra = b"HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\nContent-Length: 3\r\n\r\nbad"

    async def scenario():
        sent = asyncio.Event()

        async def handler(upstream: Upstream, reader, writer) -> None:
            while await upstream.read_request(reader) is not None:
                if when == "same-write":
                    writer.write(answer(b"good") + extra)
                else:
                    writer.write(answer(b"good"))
                    await writer.drain()
                    await asyncio.sleep(0.02)
                    writer.write(extra)
                await writer.drain()
                sent.set()

        async with Upstream(handler) as upstream:
            client = HTTPClient()
            response = await client.request("POST", upstream.url, stream=True)
            await sent.wait()
            await asyncio.sleep(0.02)  # the extra bytes have reached the client
            content = await response.aread()
            await response.aclose()
            again = await client.request("POST", upstream.url)
            await client.aclose()
            return response, content, again, upstream.accepts

    response, content, again, accepts = run(scenario())
    assert content == b"good" and again.content == b"good"
    assert response.headers == {"content-length": "4"}
    assert accepts == 2  # the connection that carried the extra bytes was not reused


# --- the pool ---------------------------------------------------------------------------------


def test_sequential_requests_reuse_one_keep_alive_connection():
    async def scenario():
        async with Upstream(keep_alive(echo)) as upstream:
            client = HTTPClient()
            for i in range(25):
                response = await client.request("POST", upstream.url, content=b"%d" % i)
                assert response.content == b"%d" % i
            count = pool_count(client)
            await client.aclose()
            return upstream.accepts, count, len(upstream.requests)

    assert run(scenario()) == (1, 1, 25)


def test_concurrent_requests_open_several_connections():
    async def scenario():
        arrived = 0
        everyone = asyncio.Event()

        async def respond(head: bytes, body: bytes) -> bytes:
            nonlocal arrived
            arrived += 1
            if arrived == 5:
                everyone.set()
            await everyone.wait()  # each answer waits until all five requests are in
            return answer(body)

        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            answers = await asyncio.gather(
                *(client.request("POST", upstream.url, content=b"%d" % i) for i in range(5))
            )
            count = pool_count(client)
            await client.aclose()
            return [a.content for a in answers], upstream.accepts, count

    contents, accepts, count = run(scenario())
    assert contents == [b"%d" % i for i in range(5)]
    assert accepts == 5 and count == 5


def test_max_connections_caps_them_and_the_others_wait_their_turn():
    async def respond(head: bytes, body: bytes) -> bytes:
        await asyncio.sleep(0.03)
        return answer(body)

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient(max_connections=2)
            answers = await asyncio.gather(
                *(client.request("POST", upstream.url, content=b"%d" % i) for i in range(8))
            )
            count = pool_count(client)
            await client.aclose()
            return [a.content for a in answers], upstream.accepts, upstream.peak, count

    contents, accepts, peak, count = run(scenario())
    assert contents == [b"%d" % i for i in range(8)]
    assert accepts == 2 and peak == 2 and count == 2


def test_a_request_waiting_for_a_connection_can_be_cancelled_without_losing_the_turn():
    async def respond(head: bytes, body: bytes) -> bytes:
        await asyncio.sleep(0.05)
        return answer(body)

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient(max_connections=1)
            busy = asyncio.create_task(client.request("POST", upstream.url, content=b"first"))
            await asyncio.sleep(0.01)
            waiting = asyncio.create_task(client.request("POST", upstream.url, content=b"gone"))
            after = asyncio.create_task(client.request("POST", upstream.url, content=b"after"))
            await asyncio.sleep(0.01)
            waiting.cancel()
            first, last = await busy, await after
            assert waiting.cancelled()
            count = pool_count(client)
            await client.aclose()
            return first.content, last.content, upstream.accepts, count, upstream.requests

    first, last, accepts, count, requests = run(scenario())
    assert (first, last) == (b"first", b"after")
    assert accepts == 1 and count == 1
    assert [body for _, body in requests] == [b"first", b"after"]  # the cancelled one never sent


def test_waiting_for_a_free_connection_is_bounded_by_the_connect_timeout():
    async def respond(head: bytes, body: bytes) -> bytes:
        await asyncio.sleep(1.0)
        return answer(body)

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient(max_connections=1, connect_timeout=0.2)
            busy = asyncio.create_task(client.request("POST", upstream.url, content=b"slow"))
            await asyncio.sleep(0.01)
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutException):
                await client.request("POST", upstream.url, content=b"waits")
            waited = asyncio.get_running_loop().time() - started
            first = await busy
            count = pool_count(client)
            await client.aclose()
            return waited, first.content, count

    waited, first, count = run(scenario())
    assert 0.15 < waited < 0.9
    assert first == b"slow" and count == 1


def test_a_waiter_cancelled_just_as_its_turn_came_passes_the_turn_on():
    async def scenario():
        async with Upstream(keep_alive(echo)) as upstream:
            client = HTTPClient(max_connections=1)
            held = await client.request("POST", upstream.url, content=b"held", stream=True)
            unlucky = asyncio.create_task(client.request("POST", upstream.url, content=b"x"))
            patient = asyncio.create_task(client.request("POST", upstream.url, content=b"next"))
            await asyncio.sleep(0.01)  # both wait for the one connection, in that order
            await held.aread()
            await held.aclose()  # gives the connection back and wakes `unlucky`...
            unlucky.cancel()  # ...which is cancelled before it could run
            response = await asyncio.wait_for(patient, 2)  # the turn went on to `patient`
            count = pool_count(client)
            await client.aclose()
            return unlucky.cancelled(), response.content, count, upstream.accepts

    assert run(scenario()) == (True, b"next", 1, 1)


def test_requests_cancelled_at_any_point_leave_no_connection_behind():
    async def respond(head: bytes, body: bytes) -> bytes:
        await asyncio.sleep(0.001 * (len(head) % 3))
        return answer(body * 2000)

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient(max_connections=4)
            tasks = []
            for i in range(120):
                request = client.request("POST", upstream.url, content=b"%03d" % i)
                tasks.append(asyncio.create_task(request))
                if i % 3:
                    loop = asyncio.get_running_loop()
                    loop.call_later(0.0005 * (i % 17), tasks[-1].cancel)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
            done = [r for r in results if isinstance(r, http.Response)]
            assert all(r.content == r.content[:3] * 2000 for r in done)
            assert len(done) + cancelled == 120
            pool = next(iter(client._pools.values()))
            await eventually(lambda: pool.count == len(pool.idle) and upstream.open == pool.count)
            counts = (pool.count, len(pool.waiters))
            after = await client.request("POST", upstream.url, content=b"end")
            await client.aclose()
            await eventually(lambda: upstream.open == 0)
            return counts, after.content, upstream.peak, cancelled

    (count, waiting), after, peak, cancelled = run(scenario())
    assert 1 <= count <= 4 and waiting == 0
    assert after == b"end" * 2000 and peak <= 4
    assert cancelled > 0


def test_a_connection_idle_past_keepalive_expiry_is_not_reused():
    async def scenario():
        async with Upstream(keep_alive(echo)) as upstream:
            client = HTTPClient(keepalive_expiry=0.1)
            await client.request("POST", upstream.url, content=b"a")
            await client.request("POST", upstream.url, content=b"b")  # within expiry: reused
            await asyncio.sleep(0.15)
            response = await client.request("POST", upstream.url, content=b"c")
            await eventually(lambda: upstream.open == 1)  # the expired one was closed
            count = pool_count(client)
            await client.aclose()
            return response.content, upstream.accepts, count

    assert run(scenario()) == (b"c", 2, 1)


def test_uvicorn_closing_an_idle_keep_alive_connection_does_not_fail_the_next_request():
    import uvicorn

    ports: list[int] = []

    async def app(scope, receive, send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        ports.append(scope["client"][1])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def scenario():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False, timeout_keep_alive=0.2
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await eventually(lambda: server.started)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/echo"
        client = HTTPClient()
        try:
            first = await client.request("POST", url, content=b"one")
            second = await client.request("POST", url, content=b"two")
            await asyncio.sleep(0.4)  # past uvicorn's keep-alive timeout: it closed the connection
            third = await client.request("POST", url, content=b"three")
            count = pool_count(client)
        finally:
            await client.aclose()
            server.should_exit = True
            await serving
            sock.close()
        return [first.content, second.content, third.content], count

    contents, count = run(scenario())
    assert contents == [b"one", b"two", b"three"]
    assert ports[0] == ports[1] != ports[2]  # reused while alive, a new one after uvicorn closed it
    assert count == 1


def test_a_reused_connection_closed_after_the_request_went_out_is_an_error_not_a_hidden_resend():
    async def handler(upstream: Upstream, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(answer(b"first"))
        await writer.drain()
        await upstream.read_request(reader)  # read the next request on it, then hang up

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient()
            first = await client.request("POST", upstream.url, content=b"1")
            with pytest.raises(ClosedBeforeAnswer):
                await client.request("POST", upstream.url, content=b"2")
            count = pool_count(client)
            await client.aclose()
            return first.content, upstream.accepts, count, upstream.requests

    first, accepts, count, requests = run(scenario())
    assert first == b"first" and accepts == 1 and count == 0
    assert [body for _, body in requests] == [b"1", b"2"]  # sent once: the router decides


def test_an_idle_connection_the_server_closed_unnoticed_is_not_written_to():
    from connections.tests.upstreams import RawUpstream

    upstream = RawUpstream(lambda request, nth: answer(b"ok"), close_after_answer=True)

    async def scenario():
        client = HTTPClient()
        url = upstream.base_url + "/x"
        await client.request("POST", url, content=b"1")
        # The loop is held (as under load) so it cannot see the server's close before the
        # next request: the poll of a connection idle past _PROBE_AFTER does.
        time.sleep(1.2)
        second = await client.request("POST", url, content=b"2")
        await client.aclose()
        return second.status_code

    try:
        assert run(scenario()) == 200
    finally:
        upstream.close()
    assert [r.body for r in upstream.requests] == [b"1", b"2"]
    assert upstream.connections == 2  # the second request went out on a new connection


def test_a_fresh_connection_closed_after_reading_the_request_is_an_error_not_a_resend():
    async def handler(upstream: Upstream, reader, writer) -> None:
        await upstream.read_request(reader)  # then close without a byte of answer

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient()
            with pytest.raises(TransportError):
                await client.request("POST", upstream.url, content=b"once")
            count = pool_count(client)
            await client.aclose()
            return upstream.accepts, len(upstream.requests), count

    assert run(scenario()) == (1, 1, 0)


def test_a_reused_connection_closed_after_part_of_the_answer_is_not_resent():
    async def handler(upstream: Upstream, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(answer(b"first"))
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhalf")
        await writer.drain()

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient()
            await client.request("POST", upstream.url, content=b"1")
            with pytest.raises(TransportError):
                await client.request("POST", upstream.url, content=b"2")
            count = pool_count(client)
            await client.aclose()
            return upstream.accepts, len(upstream.requests), count

    assert run(scenario()) == (1, 2, 0)


def test_a_connection_close_answer_is_not_reused():
    async def respond(head: bytes, body: bytes) -> bytes:
        return answer(body, headers=("Connection: close",))

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            for i in range(3):
                response = await client.request("POST", upstream.url, content=b"%d" % i)
                assert response.content == b"%d" % i
            await eventually(lambda: upstream.open == 0)  # the client closed each one
            count = pool_count(client)
            await client.aclose()
            return upstream.accepts, count

    assert run(scenario()) == (3, 0)


# --- timeouts and failures --------------------------------------------------------------------


def test_connecting_to_a_listener_with_a_full_backlog_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue: further SYNs are dropped, not refused
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)

    async def scenario():
        client = HTTPClient(connect_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            await client.request("POST", f"http://127.0.0.1:{port}/v1")
        elapsed = time.monotonic() - started
        assert pool_count(client) == 0
        return elapsed

    try:
        elapsed = run(scenario())
    finally:
        for sock in [listener, *fillers]:
            sock.close()
    assert 0.15 < elapsed < 1.5


def test_a_refused_connection_is_a_connect_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now

    async def scenario():
        client = HTTPClient()
        with pytest.raises(ConnectError):
            await client.request("POST", f"http://127.0.0.1:{port}/v1")
        assert pool_count(client) == 0

    run(scenario())


def test_a_server_hanging_up_on_accept_is_an_error_at_once_not_a_timeout():
    async def handler(upstream: Upstream, reader, writer) -> None:
        return  # closes the connection as soon as it is accepted

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient(timeout=5)
            started = time.monotonic()
            with pytest.raises(TransportError):
                await client.request("POST", upstream.url)
            elapsed = time.monotonic() - started
            assert pool_count(client) == 0
            return elapsed

    assert run(scenario()) < 1.0


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_closed():
    async def handler(upstream: Upstream, reader, writer) -> None:
        await upstream.read_request(reader)
        await reader.read()  # never answers; returns when the client closes

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient(timeout=0.2)
            started = time.monotonic()
            with pytest.raises(TimeoutException):
                await client.request("POST", upstream.url)
            elapsed = time.monotonic() - started
            await eventually(lambda: upstream.open == 0)
            assert pool_count(client) == 0
            return elapsed

    assert 0.15 < run(scenario()) < 1.0


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_that_stalls_midway_is_a_timeout_and_the_connection_is_closed(stream):
    async def handler(upstream: Upstream, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst ten.")
        await writer.drain()
        await reader.read()  # stalls with 90 bytes owed

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient(timeout=0.2)
            received = b""
            with pytest.raises(TimeoutException):
                response = await client.request("POST", upstream.url, stream=stream)
                try:
                    async for chunk in response.aiter_bytes():
                        received += chunk
                finally:
                    await response.aclose()
            await eventually(lambda: upstream.open == 0)
            assert pool_count(client) == 0
            return received

    assert run(scenario()) == (b"first ten." if stream else b"")


def test_the_timeout_is_of_inactivity_so_a_slow_steady_answer_completes():
    async def handler(upstream: Upstream, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(8):  # 0.8 s in all, never 0.5 s without a byte
            await asyncio.sleep(0.1)
            writer.write(b"1\r\n%d\r\n" % i)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await reader.read()

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient(timeout=0.5)
            response = await client.request("POST", upstream.url)
            await client.aclose()
            return response.content

    assert run(scenario()) == b"01234567"


def test_a_slow_consumer_pausing_the_stream_does_not_time_it_out():
    body = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)

    async def respond(head: bytes, received: bytes) -> bytes:
        return answer(body)

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient(timeout=0.2)
            response = await client.request("POST", upstream.url, stream=True)
            parts, paused = [], False
            async for chunk in response.aiter_bytes():
                if not parts:
                    await asyncio.sleep(0.7)  # 3.5 timeouts with the provider waiting on us
                    paused = response._conn._paused
                parts.append(chunk)
            await response.aclose()
            again = await client.request("POST", upstream.url)  # the connection is still good
            await client.aclose()
            return b"".join(parts), paused, again.content, upstream.accepts

    received, paused, again, accepts = run(scenario())
    assert paused  # the consumer's slowness did pause reading the socket
    assert received == body and again == body
    assert accepts == 1


def test_a_malformed_answer_is_a_protocol_error():
    async def respond(head: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 abc Not A Status\r\nContent-Length: 2\r\n\r\nok"

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            with pytest.raises(RemoteProtocolError):
                await client.request("POST", upstream.url)
            await eventually(lambda: upstream.open == 0)
            assert pool_count(client) == 0

    run(scenario())


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_answer_cut_off_mid_body_is_an_error_and_its_connection_is_not_pooled(framing):
    async def handler(upstream: Upstream, reader, writer) -> None:
        await upstream.read_request(reader)
        if framing == "content-length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 400)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123")
        await writer.drain()  # and close

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient()
            with pytest.raises(TransportError):
                await client.request("POST", upstream.url)
            count = pool_count(client)
            idle = [conn for pool in client._pools.values() for conn in pool.idle]
            await client.aclose()
            return count, idle

    assert run(scenario()) == (0, [])


# --- streams ----------------------------------------------------------------------------------


def test_stream_chunks_arrive_as_the_server_sends_them():
    async def scenario():
        consumer_saw_first = asyncio.Event()

        async def handler(upstream: Upstream, reader, writer) -> None:
            await upstream.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"6\r\nfirst \r\n")
            await writer.drain()
            # The rest is sent only once the consumer holds the first piece: a client that
            # buffered to the end would wait here forever.
            await asyncio.wait_for(consumer_saw_first.wait(), 2)
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            await writer.drain()
            await reader.read()

        async with Upstream(handler) as upstream:
            client = HTTPClient()
            response = await client.request("POST", upstream.url, stream=True)
            parts = []
            async for chunk in response.aiter_bytes():
                parts.append(chunk)
                consumer_saw_first.set()
            await response.aclose()
            await client.aclose()
            return parts

    assert run(scenario()) == [b"first ", b"second"]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_back_pressure_bounds_what_the_client_buffers_for_a_slow_consumer(scheme, tls_contexts):
    server_tls, client_tls = tls_contexts if scheme == "https" else (None, None)
    body = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(200_000))  # 6.4 MB

    async def respond(head: bytes, received: bytes) -> bytes:
        return answer(body)

    async def scenario():
        async with Upstream(keep_alive(respond), tls=server_tls) as upstream:
            client = HTTPClient(ssl_context=client_tls)
            response = await client.request("POST", upstream.url, stream=True)
            conn = response._conn
            digest, total, most, pauses = hashlib.sha256(), 0, 0, 0
            async for chunk in response.aiter_bytes():
                most = max(most, conn._buffered + len(chunk))
                pauses += conn._paused
                digest.update(chunk)
                total += len(chunk)
                if total < 3_000_000:
                    await asyncio.sleep(0.002)  # slow for the first half
            await response.aclose()
            again = await client.request("POST", upstream.url)
            await client.aclose()
            return digest.hexdigest(), total, most, pauses, again.content, upstream.accepts

    hexdigest, total, most, pauses, again, accepts = run(scenario())
    assert total == len(body) and hexdigest == hashlib.sha256(body).hexdigest()
    assert pauses > 0
    # At most HIGH_WATER plus one socket read (asyncio reads up to 256 KiB at a time).
    assert HIGH_WATER / 2 < most <= HIGH_WATER + 256 * 1024
    assert again == body and accepts == 1  # a paused-then-finished connection is reusable


def test_closing_a_stream_early_closes_its_connection():
    async def handler(upstream: Upstream, reader, writer) -> None:
        while await upstream.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()  # the rest never comes

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient()
            response = await client.request("POST", upstream.url, stream=True)
            first = await response.aiter_bytes().__anext__()
            await response.aclose()
            await eventually(lambda: upstream.open == 0)
            count = pool_count(client)
            with pytest.raises(RemoteProtocolError):
                await response.aread()  # a closed response reads nothing more
            again = await client.request("POST", upstream.url, stream=True)
            await again.aclose()
            await client.aclose()
            return first, count, upstream.accepts

    assert run(scenario()) == (b"first", 0, 2)


def test_a_request_cancelled_while_waiting_leaks_no_connection():
    async def handler(upstream: Upstream, reader, writer) -> None:
        if upstream.accepts == 1:
            await upstream.read_request(reader)
            await reader.read()  # the first never gets an answer
            return
        await keep_alive(echo)(upstream, reader, writer)

    async def scenario():
        async with Upstream(handler) as upstream:
            client = HTTPClient()
            task = asyncio.create_task(client.request("POST", upstream.url, content=b"slow"))
            await eventually(lambda: len(upstream.requests) == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await eventually(lambda: upstream.open == 0)
            count_after_cancel = pool_count(client)
            response = await client.request("POST", upstream.url, content=b"next")
            count = pool_count(client)
            await client.aclose()
            return count_after_cancel, response.content, count, upstream.accepts

    assert run(scenario()) == (0, b"next", 1, 2)


# --- header injection -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\r\nx-evil: 1", "a\x00b"])
def test_encode_headers_refuses_line_breaks_and_nul(bad):
    with pytest.raises(ConnectError):
        encode_headers({"x-name": bad})
    with pytest.raises(ConnectError):
        encode_headers({bad: "value"})


def test_encode_headers_refuses_what_latin_1_cannot_carry_and_encodes_the_rest():
    with pytest.raises(ConnectError):
        encode_headers({"x-name": "caf\u00e9 \u2603"})
    assert encode_headers({"a": "1", "x-caf\u00e9": "\u00e9t\u00e9"}) == (
        b"a: 1\r\nx-caf\xe9: \xe9t\xe9\r\n"
    )


def test_a_user_agent_with_a_line_break_is_refused_before_anything_is_sent():
    async def scenario():
        async with Upstream(keep_alive(echo)) as upstream:
            client = HTTPClient(user_agent="meshgate\r\nx-evil: 1")
            with pytest.raises(ConnectError):
                await client.request("POST", upstream.url)
            return upstream.accepts

    assert run(scenario()) == 0


# --- TLS --------------------------------------------------------------------------------------


def _self_signed() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshgate test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = _self_signed()
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=cert.decode())
    return server, client


def test_https_with_a_trusted_certificate_keeps_its_connection_alive(tls_contexts):
    server_tls, client_tls = tls_contexts
    body = b"secret-ish " * 100_000

    async def respond(head: bytes, received: bytes) -> bytes:
        if received == b"big":
            return answer(gzip.compress(body), headers=("Content-Encoding: gzip",))
        return answer(received)

    async def scenario():
        async with Upstream(keep_alive(respond), tls=server_tls) as upstream:
            client = HTTPClient(ssl_context=client_tls)
            contents = [
                (await client.request("POST", upstream.url, content=b"%d" % i)).content
                for i in range(5)
            ]
            streamed = await client.request("POST", upstream.url, content=b"big", stream=True)
            big = await streamed.aread()
            await streamed.aclose()
            count = pool_count(client)
            await client.aclose()
            return contents, big, upstream.accepts, count

    contents, big, accepts, count = run(scenario())
    assert contents == [b"%d" % i for i in range(5)] and big == body
    assert accepts == 1 and count == 1


def test_https_to_an_untrusted_certificate_is_refused(tls_contexts):
    server_tls, _ = tls_contexts

    async def scenario():
        async with Upstream(keep_alive(echo), tls=server_tls) as upstream:
            client = HTTPClient()  # the default trust store does not know the test's certificate
            with pytest.raises(ConnectError):
                await client.request("POST", upstream.url)
            assert pool_count(client) == 0
            return len(upstream.requests)

    assert run(scenario()) == 0


# --- closing the client -----------------------------------------------------------------------


def test_aclose_closes_idle_connections_and_busy_ones_when_their_answer_ends():
    async def scenario():
        release = asyncio.Event()

        async def respond(head: bytes, body: bytes) -> bytes:
            if body == b"slow":
                await release.wait()
            return answer(body)

        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            await asyncio.gather(*(client.request("POST", upstream.url) for _ in range(2)))
            assert upstream.open == 2
            busy = asyncio.create_task(client.request("POST", upstream.url, content=b"slow"))
            await eventually(lambda: upstream.requests[-1][1] == b"slow")
            await client.aclose()
            await eventually(lambda: upstream.open == 1)  # the idle one closed at once
            release.set()
            response = await busy  # the busy one finishes its answer...
            await eventually(lambda: upstream.open == 0)  # ...and is closed, not pooled
            with pytest.raises(ConnectError):
                await client.request("POST", upstream.url)
            return response.content, upstream.accepts

    assert run(scenario()) == (b"slow", 2)


def test_aclose_during_a_stream_closes_the_connection_when_the_stream_is_done():
    async def respond(head: bytes, body: bytes) -> bytes:
        return answer(b"streamed")

    async def scenario():
        async with Upstream(keep_alive(respond)) as upstream:
            client = HTTPClient()
            response = await client.request("POST", upstream.url, stream=True)
            await client.aclose()
            assert upstream.open == 1
            content = await response.aread()
            await response.aclose()
            await eventually(lambda: upstream.open == 0)
            return content

    assert run(scenario()) == b"streamed"
