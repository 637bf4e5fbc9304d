"""meshsite.lib.redis: both clients against the real Redis under the same rules; the wire
handling of the lean one against hand-written servers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from meshsite.lib.redis import (
    KINDS,
    LeanRedis,
    RedisConnectionError,
    RedisReplyError,
    Script,
    connect,
    prepare,
)
from quotas.tests.quota_support import REDIS_TEST_URL

SCRIPT = Script("return {tonumber(ARGV[1]) + 1, KEYS[1], redis.call('INCRBY', KEYS[1], ARGV[1])}")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def key():
    name = f"meshgate:test:resp:{uuid.uuid4().hex}"
    yield name
    redis.Redis.from_url(REDIS_TEST_URL).delete(name)


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


def test_a_script_runs_by_sha_and_is_loaded_when_redis_lacks_it(key, kind):
    async def go():
        client = connect(REDIS_TEST_URL, kind=kind)
        await client.execute("SCRIPT", "FLUSH")  # Redis restarted: the SHA is unknown
        first = await client.evalsha(SCRIPT, [key], [41])
        second = await client.evalsha(SCRIPT, [key], [1])  # now by SHA
        await client.aclose()
        return first, second

    first, second = run(go())
    assert first == [42, key.encode(), 41]
    assert second == [2, key.encode(), 42]
    assert int(redis.Redis.from_url(REDIS_TEST_URL).get(key)) == 42


def test_a_prepared_call_sends_its_varying_arguments_before_its_fixed_ones(key, kind):
    script = Script("return {ARGV[1], ARGV[2], ARGV[3], KEYS[1]}")

    async def go():
        client = connect(REDIS_TEST_URL, kind=kind)
        await client.execute("SCRIPT", "FLUSH")
        call = prepare(script, [key], 2, ["fixed"])
        first = await client.call(call, 1, b"two")
        second = await client.call(call, "one", 2)
        await client.aclose()
        return first, second

    first, second = run(go())
    assert first == [b"1", b"two", b"fixed", key.encode()]
    assert second == [b"one", b"2", b"fixed", key.encode()]


def test_concurrent_commands_share_one_connection_and_each_gets_its_own_reply(key):
    async def go():
        client = LeanRedis(REDIS_TEST_URL)
        replies = await asyncio.gather(*(client.execute("INCRBY", key, n) for n in range(1, 201)))
        connections = {id(client.protocol)}
        await client.aclose()
        return replies, connections

    replies, connections = run(go())
    assert len(connections) == 1
    # Each reply is the running total after its own increment, in the order sent.
    assert replies == [n * (n + 1) // 2 for n in range(1, 201)]


def test_the_db_number_of_the_url_is_selected(key, kind):
    base = REDIS_TEST_URL.rsplit("/", 1)[0]

    async def go():
        client = connect(f"{base}/7", kind=kind)
        await client.execute("SET", key, "in seven")
        await client.aclose()

    run(go())
    try:
        assert redis.Redis.from_url(f"{base}/7").get(key) == b"in seven"
    finally:
        redis.Redis.from_url(f"{base}/7").delete(key)


def test_an_error_reply_is_a_reply_error_and_the_connection_stays_usable(key, kind):
    async def go():
        client = connect(REDIS_TEST_URL, kind=kind)
        # redis-py drops the error's code (ERR) from its message; the lean client keeps it.
        with pytest.raises(RedisReplyError, match="ERR" if kind == "lean" else "unknown command"):
            await client.execute("NOSUCHCOMMAND")
        answer = await client.execute("PING")
        await client.aclose()
        return answer

    assert run(go()) == b"PONG"


def test_nothing_listening_is_an_oserror(kind):
    async def go():
        client = connect("redis://127.0.0.1:1/0", kind=kind)
        await client.execute("PING")

    with pytest.raises(OSError):
        run(go())


async def _server(handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_server_that_never_answers_times_out_and_fails_every_waiting_command(kind):
    async def silent(reader, writer):
        await reader.read(1 << 16)
        await asyncio.sleep(5)

    async def go():
        server, port = await _server(silent)
        client = connect(f"redis://127.0.0.1:{port}", timeout=0.3, connect_timeout=0.3, kind=kind)
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            client.execute("PING"), client.execute("PING"), return_exceptions=True
        )
        elapsed = asyncio.get_running_loop().time() - started
        server.close()
        return results, elapsed

    results, elapsed = run(go())
    assert all(isinstance(result, TimeoutError) for result in results)
    assert isinstance(results[0], OSError)  # admission falls back to the database on OSError
    assert 0.25 < elapsed < 2


def test_a_connection_lost_mid_command_fails_it_and_the_next_command_reconnects():
    connections = []

    async def flaky(reader, writer):
        connections.append(writer)
        await reader.read(1 << 16)
        if len(connections) == 1:
            writer.close()  # drop the first connection without answering
            return
        writer.write(b"+PONG\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def go():
        server, port = await _server(flaky)
        client = LeanRedis(f"redis://127.0.0.1:{port}")
        with pytest.raises(RedisConnectionError):
            await client.execute("PING")
        answer = await client.execute("PING")
        server.close()
        return answer

    assert run(go()) == b"PONG"
    assert len(connections) == 2


def test_replies_split_across_reads_and_nested_arrays_are_parsed():
    async def slow(reader, writer):
        await reader.read(1 << 16)
        reply = b"*3\r\n:1\r\n$5\r\nhello\r\n*2\r\n$-1\r\n+OK\r\n"
        for byte in reply:  # one byte per write
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        await asyncio.sleep(1)

    async def go():
        server, port = await _server(slow)
        client = LeanRedis(f"redis://127.0.0.1:{port}")
        answer = await client.execute("ANYTHING")
        server.close()
        return answer

    assert run(go()) == [1, b"hello", [None, b"OK"]]


def test_a_malformed_reply_fails_the_command_as_a_connection_error():
    async def garbage(reader, writer):
        await reader.read(1 << 16)
        writer.write(b"?what\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def go():
        server, port = await _server(garbage)
        client = LeanRedis(f"redis://127.0.0.1:{port}")
        try:
            await client.execute("PING")
        finally:
            server.close()

    with pytest.raises(RedisConnectionError):
        run(go())


def test_a_password_in_the_url_is_sent_with_auth_before_any_command():
    seen = []

    async def auth_server(reader, writer):
        data = b""
        while b"PING" not in data:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            data += chunk
            while data.count(b"\r\n") >= 5 and b"AUTH" in data and not seen:
                seen.append(data)
                writer.write(b"+OK\r\n")
        writer.write(b"+PONG\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def go():
        server, port = await _server(auth_server)
        client = LeanRedis(f"redis://:s3cret@127.0.0.1:{port}")
        answer = await client.execute("PING")
        server.close()
        return answer

    assert run(go()) == b"PONG"
    assert seen[0].startswith(b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n")
