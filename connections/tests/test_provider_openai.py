"""The OpenAI adapter against the simulator: bytes forwarded, usage read, every error mapped."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from email.utils import formatdate

import orjson
import pytest

from connections.providers import build_adapter
from connections.providers.base import ConnectionConfig, ProviderError
from connections.providers.openai import (
    OpenAIAdapter,
    OpenAICompatibleAdapter,
    retry_after_seconds,
    sanitize,
)
from simulator.text import count_tokens


def split_frames(chunk: bytes) -> list[bytes]:
    """The SSE frames in one chunk of a stream (a chunk holds what one upstream read brought)."""
    return [event + b"\n\n" for event in chunk.split(b"\n\n") if event]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def config_for(base_url: str, key: str | None, **kwargs) -> ConnectionConfig:
    return ConnectionConfig(
        id=1,
        slug="sim",
        kind=kwargs.pop("kind", "openai_compatible"),
        version=1,
        base_url=base_url,
        secrets={"api_key": key} if key else {},
        timeout_seconds=kwargs.pop("timeout_seconds", 5.0),
        **kwargs,
    )


@pytest.fixture
def sim(simulator):
    simulator.reset()
    return simulator


@pytest.fixture
def adapter(sim):
    return build_adapter(config_for(sim.openai_base, sim.api_key))


def run(coro):
    return asyncio.run(coro)


def chat_body(text: str = "Hello, adapter.", **extra) -> dict:
    return {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


async def drain(stream) -> list[bytes]:
    frames = []
    try:
        async for frame in stream:
            frames.extend(split_frames(frame))
    finally:
        await stream.aclose()
    return frames


def assert_safe(exc: ProviderError, sim) -> None:
    text = f"{exc} {exc.message} {exc.code} {exc.param}"
    assert sim.api_key not in text
    assert "127.0.0.1" not in text and str(sim.port) not in text


def test_the_registry_builds_both_openai_kinds(sim):
    assert isinstance(build_adapter(config_for(sim.openai_base, None)), OpenAICompatibleAdapter)
    openai_kind = build_adapter(config_for("", "k", kind="openai"))
    assert type(openai_kind) is OpenAIAdapter
    assert openai_kind.base_url == "https://api.openai.com/v1"


def test_chat_forwards_the_body_with_the_provider_model_name_and_returns_upstream_bytes(
    sim, adapter
):
    result = run(adapter.chat("gpt-4o", chat_body(temperature=0.2, user="alice")))
    parsed = orjson.loads(result.body)
    assert parsed["object"] == "chat.completion" and parsed == result.parsed
    content = parsed["choices"][0]["message"]["content"]
    assert result.usage.prompt_tokens == count_tokens("Hello, adapter.")
    assert result.usage.completion_tokens == count_tokens(content)
    assert result.usage.estimated is False
    [logged] = sim.requests()
    assert logged["model"] == "gpt-4o"
    assert logged["body"]["temperature"] == 0.2 and logged["body"]["user"] == "alice"
    assert "stream" not in logged["body"]
    key_hash = hashlib.sha256(f"Bearer {sim.api_key}".encode()).hexdigest()
    assert logged["headers"]["authorization"] == "sha256:" + key_hash


def test_cached_tokens_are_read_from_the_usage(adapter):
    system = {"role": "system", "content": "Answer in French, always."}
    body = {"messages": [system, {"role": "user", "content": "hi"}]}
    run(adapter.chat("gpt-4o", body))
    again = run(adapter.chat("gpt-4o", body))
    assert again.usage.cached_tokens == count_tokens(system["content"])


def test_a_stream_passes_frames_on_and_collects_usage_and_the_message(sim, adapter):
    async def go():
        stream = await adapter.open_stream(
            "gpt-4o", chat_body(stream=True, stream_options={"include_usage": True})
        )
        frames = await drain(stream)
        return stream, frames

    stream, frames = run(go())
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    assert b"[DONE]" not in b"".join(frames)
    chunks = [orjson.loads(f[6:]) for f in frames]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert stream.message == {"role": "assistant", "content": text}
    assert stream.usage.completion_tokens == count_tokens(text)
    assert stream.usage.prompt_tokens == count_tokens("Hello, adapter.")
    assert not stream.usage.estimated
    assert stream.first_byte_at is not None and stream.first_byte_at <= time.monotonic()
    plain = run(adapter.chat("gpt-4o", chat_body()))
    assert plain.parsed["choices"][0]["message"]["content"] == text


def test_usage_is_asked_upstream_but_the_usage_chunk_is_not_forwarded_unasked(sim, adapter):
    async def go():
        stream = await adapter.open_stream("gpt-4o", chat_body(stream=True))
        return stream, await drain(stream)

    stream, frames = run(go())
    assert all(orjson.loads(f[6:])["choices"] for f in frames)
    assert stream.usage.completion_tokens > 0 and not stream.usage.estimated
    [logged] = sim.requests()
    assert logged["body"]["stream_options"] == {"include_usage": True}


def test_without_upstream_usage_tokens_are_estimated(sim):
    adapter = build_adapter(
        config_for(sim.openai_base, sim.api_key, options={"stream_usage": False})
    )

    async def go():
        stream = await adapter.open_stream("gpt-4o", chat_body("x" * 40, stream=True))
        await drain(stream)
        return stream

    stream = run(go())
    assert stream.usage.estimated is True
    assert stream.usage.prompt_tokens == 10  # 40 characters at ~4 per token
    assert stream.usage.completion_tokens == -(-len(stream.message["content"]) // 4)
    assert "stream_options" not in sim.requests()[0]["body"]


def test_tool_calls_come_back_plain_and_assembled_from_a_stream(adapter):
    body = chat_body("please call get_weather", tools=[WEATHER_TOOL])
    plain = run(adapter.chat("gpt-4o", body))
    call = plain.parsed["choices"][0]["message"]["tool_calls"][0]

    async def go():
        stream = await adapter.open_stream("gpt-4o", {**body, "stream": True})
        await drain(stream)
        return stream

    stream = run(go())
    assert stream.finish_reason == "tool_calls"
    [streamed] = stream.message["tool_calls"]
    assert streamed == {"id": call["id"], "type": "function", "function": call["function"]}
    assert orjson.loads(streamed["function"]["arguments"]) == {"city": "city value"}


def test_embeddings_are_forwarded_with_usage(sim, adapter):
    result = run(adapter.embed("text-embedding-3-small", {"model": "x", "input": ["a b", "c"]}))
    assert len(result.parsed["data"]) == 2 and result.usage.prompt_tokens == 3
    assert sim.requests()[0]["body"]["model"] == "text-embedding-3-small"


def test_a_429_is_retryable_with_retry_after_from_the_header(sim, adapter):
    sim.script("gpt-4o", [{"status": 429, "retry_after": 7, "message": "Slow down."}])
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat("gpt-4o", chat_body()))
    exc = caught.value
    assert (exc.status, exc.code, exc.retryable, exc.retry_after) == (429, "rate_limited", True, 7)
    assert exc.upstream_status == 429


def test_an_exhausted_quota_is_not_retryable(sim, adapter):
    sim.script("gpt-4o", [{"status": 429, "code": "insufficient_quota", "message": "No quota."}])
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat("gpt-4o", chat_body()))
    assert (caught.value.status, caught.value.code) == (429, "insufficient_quota")
    assert caught.value.retryable is False


def test_a_5xx_becomes_a_retryable_502(sim, adapter):
    for status in (500, 502, 503):
        sim.script("gpt-4o", [{"status": status}])
        with pytest.raises(ProviderError) as caught:
            run(adapter.chat("gpt-4o", chat_body()))
        assert (caught.value.status, caught.value.retryable) == (502, True)
        assert caught.value.upstream_status == status


def test_a_408_and_a_slow_upstream_become_a_retryable_504(sim):
    adapter = build_adapter(config_for(sim.openai_base, sim.api_key, timeout_seconds=0.3))
    sim.script("gpt-4o", [{"status": 408}])
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat("gpt-4o", chat_body()))
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (
        504,
        "timeout",
        True,
    )
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat("gpt-4o-slow-1500", chat_body()))
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (
        504,
        "timeout",
        True,
    )


def test_an_unreachable_upstream_is_a_retryable_502_naming_no_host(sim):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    adapter = build_adapter(config_for(f"http://127.0.0.1:{port}/v1", "k"))
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat("gpt-4o", chat_body()))
    exc = caught.value
    assert (exc.status, exc.code, exc.retryable) == (502, "upstream_unreachable", True)
    assert "127.0.0.1" not in str(exc) and str(port) not in str(exc)


def test_a_client_error_is_a_400_with_a_sanitized_message(sim, adapter):
    leaky = (
        f"Invalid 'max_tokens' near {sim.api_key} sent to {sim.openai_base}/chat/completions "
        "with token sk-"
        "proj-"
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd"
    )
    for status in (400, 404, 422):
        sim.script("gpt-4o", [{"status": status, "message": leaky}])
        with pytest.raises(ProviderError) as caught:
            run(adapter.chat("gpt-4o", chat_body()))
        exc = caught.value
        assert (exc.status, exc.error_type, exc.retryable) == (400, "invalid_request_error", False)
        assert "Invalid 'max_tokens'" in exc.message
        assert "sk-proj" not in exc.message and "/chat/completions" not in exc.message
        assert_safe(exc, sim)


def test_refused_credentials_are_a_502_upstream_authentication_failure(sim):
    adapter = build_adapter(config_for(sim.openai_base, "the-wrong-key-123"))
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat("gpt-4o", chat_body()))
    exc = caught.value
    assert (exc.status, exc.code, exc.retryable) == (502, "upstream_auth_failed", False)
    assert "authentication failed" in exc.message and "the-wrong-key-123" not in exc.message
    sim.script("gpt-4o", [{"status": 403}])
    with pytest.raises(ProviderError) as caught:
        run(build_adapter(config_for(sim.openai_base, sim.api_key)).chat("gpt-4o", chat_body()))
    assert caught.value.code == "upstream_auth_failed"


def test_open_stream_raises_before_the_first_byte_on_an_upstream_error(sim, adapter):
    sim.script("gpt-4o", [{"status": 503}])
    with pytest.raises(ProviderError) as caught:
        run(adapter.open_stream("gpt-4o", chat_body(stream=True)))
    assert caught.value.retryable and caught.value.status == 502


def test_a_dropped_stream_raises_mid_iteration_after_the_frames_received(sim, adapter):
    sim.script("gpt-4o", [{"drop_after_chunks": 3, "chunk_interval_ms": 5}])

    async def go():
        stream = await adapter.open_stream("gpt-4o", chat_body(stream=True))
        frames = []
        with pytest.raises(ProviderError) as caught:
            async for frame in stream:
                frames.extend(split_frames(frame))
        await stream.aclose()
        return frames, caught.value

    frames, exc = run(go())
    assert len(frames) == 3
    assert (exc.status, exc.code, exc.retryable) == (502, "upstream_stream_broken", False)
    assert_safe(exc, sim)


def test_a_malformed_frame_raises_mid_iteration(sim, adapter):
    sim.script("gpt-4o", [{"malformed_sse": True}])

    async def go():
        stream = await adapter.open_stream("gpt-4o", chat_body(stream=True))
        frames = []
        with pytest.raises(ProviderError) as caught:
            async for frame in stream:
                frames.extend(split_frames(frame))
        return frames, caught.value

    frames, exc = run(go())
    assert len(frames) == 2 and exc.code == "upstream_malformed" and exc.status == 502


def test_a_stream_read_across_many_small_network_reads_is_reassembled(sim, adapter):
    sim.script("gpt-4o", [{"chunk_interval_ms": 2}])

    async def go():
        stream = await adapter.open_stream("gpt-4o", chat_body(stream=True, max_tokens=8))
        frames = await drain(stream)
        return stream, frames

    stream, frames = run(go())
    assert len(frames) == 10 and stream.usage.completion_tokens == 8


def test_retry_after_accepts_seconds_milliseconds_and_http_dates():
    assert retry_after_seconds({"retry-after": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    in_ten = retry_after_seconds({"retry-after": formatdate(time.time() + 10, usegmt=True)})
    assert 8 <= in_ten <= 10
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_sanitize_removes_secrets_urls_and_hosts():
    config = config_for("https://llm.internal.corp/v1", "s3cr3t-key")
    text = sanitize("bad key s3cr3t-key for llm.internal.corp at https://x.y/z", config)
    assert "s3cr3t" not in text and "internal.corp" not in text and "x.y" not in text


def test_one_adapter_serves_concurrent_streams_without_serialising(sim, adapter):
    async def one():
        stream = await adapter.open_stream("gpt-4o-slow-500", chat_body(stream=True))
        await drain(stream)

    async def many():
        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(60)))
        elapsed = time.monotonic() - started
        await adapter.aclose()
        return elapsed

    assert run(many()) < 2.5  # serialised, 60 x 0.5 s would be 30 s


def test_a_short_lived_event_loop_gets_its_own_client_and_leaves_the_main_ones_pool(adapter):
    main_loop = asyncio.new_event_loop()
    try:
        main_loop.run_until_complete(adapter.chat("gpt-4o", chat_body()))
        pooled = adapter._pool._clients[main_loop]
        # e.g. async_to_sync in a sync view: another loop, another client.
        assert run(adapter.chat("gpt-4o", chat_body())).usage.prompt_tokens > 0
        main_loop.run_until_complete(adapter.chat("gpt-4o", chat_body()))
        assert adapter._pool._clients[main_loop] is pooled
        main_loop.run_until_complete(adapter.aclose())
        assert pooled.is_closed
    finally:
        main_loop.close()


def test_discovery_and_the_connection_test_go_through_the_sdk(sim, adapter):
    found = {m.name: m.kind for m in adapter.list_models()}
    assert found["gpt-4o"] == "chat" and found["text-embedding-3-small"] == "embedding"
    assert adapter.test().startswith("Connected")
    assert sim.requests()[0]["path"] == "/v1/models"


def test_discovery_with_refused_credentials_names_no_secret(sim):
    adapter = build_adapter(config_for(sim.openai_base, "wrong-key-abc"))
    for call in (adapter.list_models, adapter.test):
        with pytest.raises(ProviderError) as caught:
            call()
        assert caught.value.code == "upstream_auth_failed"
        assert "wrong-key-abc" not in str(caught.value)


def test_discovery_of_an_unreachable_server_is_a_clean_error(sim):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    adapter = build_adapter(config_for(f"http://127.0.0.1:{port}/v1", "k", timeout_seconds=2))
    with pytest.raises(ProviderError) as caught:
        adapter.test()
    assert caught.value.code == "upstream_unreachable" and str(port) not in str(caught.value)


def test_an_error_event_mid_stream_raises_after_the_frames_before_it(sim, adapter):
    sim.script("gpt-4o", [{"error_after_chunks": 2, "message": "overloaded"}])

    async def go():
        stream = await adapter.open_stream("gpt-4o", chat_body(stream=True))
        frames = []
        with pytest.raises(ProviderError) as caught:
            async for frame in stream:
                frames.extend(split_frames(frame))
        return frames, caught.value

    frames, exc = run(go())
    assert len(frames) == 2 and exc.status == 502 and not exc.retryable
    assert "overloaded" in exc.message


def test_a_stream_stalling_past_the_timeout_raises_a_504_mid_stream(sim):
    adapter = build_adapter(config_for(sim.openai_base, sim.api_key, timeout_seconds=0.3))
    sim.script("gpt-4o", [{"chunk_interval_ms": 600}])

    async def go():
        stream = await adapter.open_stream("gpt-4o", chat_body(stream=True))
        with pytest.raises(ProviderError) as caught:
            async for _frame in stream:
                pass
        return caught.value

    exc = run(go())
    assert (exc.status, exc.code) == (504, "timeout")


def test_a_plain_answer_cut_short_or_not_json_is_a_502(sim, adapter):
    sim.script("gpt-4o", [{"drop_after_chunks": 1}, {"malformed_sse": True}])
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat("gpt-4o", chat_body()))
    assert (caught.value.status, caught.value.retryable) == (502, True)
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat("gpt-4o", chat_body()))
    assert (caught.value.status, caught.value.code) == (502, "upstream_malformed")


def _chunk(**fields) -> bytes:
    return orjson.dumps({"id": "c1", "object": "chat.completion.chunk", **fields})


def _content(text: str, finish: str | None = None) -> bytes:
    return _chunk(choices=[{"index": 0, "delta": {"content": text}, "finish_reason": finish}])


async def _serve_once(body: bytes) -> tuple[asyncio.AbstractServer, str]:
    """A hand-written upstream that answers any request with `body` as one SSE answer."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


def test_one_read_goes_on_as_its_first_event_then_the_rest_in_the_upstreams_own_bytes():
    usage = _chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 3})
    events = [
        b": a comment line is not passed on",
        b"data: " + _content("Hel"),
        b"data:" + _content("lo"),  # no space after the colon: passed on as "data: ..."
        b"data: " + _content(" you").replace(b'"object"', b'\ndata: "object"'),  # two lines
        b"data: " + usage,  # the client did not ask for usage: not passed on
        b"data: " + _content("", finish="stop"),
        b"data: [DONE]",
        b"data: " + _content("after the end"),
    ]
    body = b"\r\n\r\n".join(events).replace(b"comment line", b"comment\r\nline") + b"\r\n\r\n"

    async def go():
        server, base_url = await _serve_once(body)
        async with server:
            adapter = build_adapter(config_for(base_url, "k"))
            stream = await adapter.open_stream("m", chat_body(stream=True))
            chunks = [chunk async for chunk in stream]
            await adapter.aclose()
        return stream, chunks

    stream, chunks = run(go())
    # The first event goes on alone, before the rest of the read is parsed: time to first token.
    assert chunks == [
        b"data: " + _content("Hel") + b"\n\n",
        b"data: " + _content("lo") + b"\n\n"
        b"data: " + _content(" you").replace(b'"object"', b'\ndata: "object"') + b"\n\n"
        b"data: " + _content("", finish="stop") + b"\n\n",
    ]
    assert stream.message == {"role": "assistant", "content": "Hello you"}
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (3, 3)
    assert stream.finish_reason == "stop"


def test_events_split_anywhere_across_reads_come_out_whole():
    from connections.tests.upstreams import RawUpstream

    events = [b"data: " + _content(word) for word in ("One", " two", " three")]
    events += [b"data: " + _content("", finish="stop"), b"data: [DONE]"]
    body = b"\r\n\r\n".join(events) + b"\r\n\r\n"

    def dribble(request, nth):
        yield b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        for i in range(0, len(body), 3):  # every split, "\r" | "\n" included, happens
            time.sleep(0.002)
            yield body[i : i + 3]

    upstream = RawUpstream(dribble, close_after_answer=True)

    async def go():
        adapter = build_adapter(config_for(upstream.base_url, "k"))
        stream = await adapter.open_stream("m", chat_body(stream=True))
        chunks = [chunk async for chunk in stream]
        await adapter.aclose()
        return stream, chunks

    try:
        stream, chunks = run(go())
    finally:
        upstream.close()
    assert b"".join(chunks) == b"".join(e + b"\n\n" for e in events[:-1])
    assert stream.message["content"] == "One two three"
