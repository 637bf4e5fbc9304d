"""Both upstream client implementations behind one interface (`meshsite.lib.http.client`):
what an adapter relies on holds for the lean client and for aiohttp's alike."""

from __future__ import annotations

import asyncio

import pytest

from meshsite.lib import http
from meshsite.lib.tests.test_http_client import Upstream, answer, echo, keep_alive, run


@pytest.fixture(params=http.IMPLEMENTATIONS)
def implementation(request):
    return request.param


def test_a_post_reads_the_whole_answer_with_its_status_and_headers(implementation):
    async def scenario():
        async with Upstream(keep_alive(echo)) as upstream:
            client = http.client(implementation=implementation)
            headers = http.encode_headers({"content-type": "application/json", "x-k": "v"})
            try:
                first = await client.request("POST", upstream.url, content=b"one", headers=headers)
                second = await client.request("POST", upstream.url, content=b"two", headers=headers)
            finally:
                await client.aclose()
            return upstream, first, second

    upstream, first, second = run(scenario())
    assert (first.status_code, first.content, second.content) == (200, b"one", b"two")
    assert first.headers["content-length"] == "3"
    assert upstream.accepts == 1  # kept alive
    head = upstream.requests[0][0].lower()
    assert b"x-k: v" in head and b"user-agent: meshgate" in head


def test_a_stream_passes_pieces_on_as_they_arrive(implementation):
    release = asyncio.Event()

    async def handler(upstream, reader, writer):
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()

    async def scenario():
        async with Upstream(handler) as upstream:
            client = http.client(implementation=implementation)
            try:
                response = await client.request("POST", upstream.url, content=b"{}", stream=True)
                pieces = response.aiter_bytes()
                first = await anext(pieces)  # before the rest is even written
                release.set()
                rest = b"".join([piece async for piece in pieces])
                await response.aclose()
            finally:
                await client.aclose()
            return first, rest

    assert run(scenario()) == (b"first", b"last")


def test_a_refused_address_sends_nothing(implementation):
    def refuse(infos):
        raise http.AddressRefused("not this one")

    async def scenario():
        async with Upstream(keep_alive(echo)) as upstream:
            client = http.client(implementation=implementation, address_check=refuse)
            try:
                with pytest.raises(http.AddressRefused):
                    await client.request("POST", upstream.url, content=b"x")
            finally:
                await client.aclose()
            return upstream.accepts

    assert run(scenario()) == 0


def test_a_server_that_stops_answering_times_out_as_a_transport_error(implementation):
    async def silent(upstream, reader, writer):
        await upstream.read_request(reader)
        await asyncio.sleep(5)

    async def scenario():
        async with Upstream(silent) as upstream:
            client = http.client(implementation=implementation, timeout=0.2)
            try:
                with pytest.raises(http.TimeoutException):
                    await client.request("POST", upstream.url, content=b"x")
            finally:
                await client.aclose()

    run(scenario())


def test_an_error_status_is_a_response_not_an_exception(implementation):
    async def scenario():
        async with Upstream(keep_alive(lambda head, body: _busy())) as upstream:
            client = http.client(implementation=implementation)
            try:
                return await client.request("POST", upstream.url, content=b"x")
            finally:
                await client.aclose()

    response = run(scenario())
    assert (response.status_code, response.content) == (429, b"busy")


async def _busy() -> bytes:
    return answer(b"busy", status="429 Too Many Requests")


def test_an_unknown_implementation_is_refused():
    with pytest.raises(ValueError):
        http.client(implementation="curl")


def test_the_path_is_sent_as_given_not_requoted(implementation):
    """A signed request (Bedrock's SigV4) signs its quoted path: it must leave unchanged."""

    async def scenario():
        async with Upstream(keep_alive(echo)) as upstream:
            client = http.client(implementation=implementation)
            url = upstream.url.replace("/v1/chat/completions", "/model/a.b-v1%3A0/converse")
            try:
                await client.request("POST", url, content=b"x")
            finally:
                await client.aclose()
            return upstream.requests[0][0]

    assert run(scenario()).startswith(b"POST /model/a.b-v1%3A0/converse HTTP/1.1\r\n")
