"""The Bedrock adapter against the simulator: signed Converse, ConverseStream and InvokeModel."""

from __future__ import annotations

import asyncio
import base64
import struct

import orjson
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from connections.providers import build_adapter
from connections.providers.base import ConnectionConfig, ProviderError
from connections.providers.bedrock import BedrockAdapter, converse_request
from simulator.text import count_tokens

SONNET = "anthropic.claude-3-5-sonnet-20241022-v2:0"
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}},
    },
}


@pytest.fixture
def sim(simulator):
    simulator.reset()
    return simulator


def bedrock_config(sim, *, secret=None, token=None, **options) -> ConnectionConfig:
    key_id, real_secret = sim.aws_credentials
    secrets = {"aws_access_key_id": key_id, "aws_secret_access_key": secret or real_secret}
    if token:
        secrets["aws_session_token"] = token
    return ConnectionConfig(
        id=3,
        slug="aws",
        kind="bedrock",
        version=1,
        base_url=sim.url,
        region="us-east-1",
        options=options,
        secrets=secrets,
        timeout_seconds=5,
    )


@pytest.fixture
def adapter(sim):
    return build_adapter(bedrock_config(sim))


def run(coro):
    return asyncio.run(coro)


async def drain(stream):
    try:
        return [frame async for frame in stream]
    finally:
        await stream.aclose()


def test_the_registry_builds_the_bedrock_adapter_with_its_default_endpoint(sim):
    assert isinstance(build_adapter(bedrock_config(sim)), BedrockAdapter)
    config = ConnectionConfig(id=1, slug="b", kind="bedrock", version=1, region="eu-west-3")
    assert build_adapter(config).endpoint == "https://bedrock-runtime.eu-west-3.amazonaws.com"


def test_openai_requests_translate_to_converse():
    body = {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [{"type": "text", "text": "Order 7?"}]},
            {"role": "user", "content": "Quickly."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id": 7}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
                ],
            },
        ],
        "tools": [TOOL],
        "tool_choice": "required",
        "max_completion_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": "END",
    }
    request = converse_request(body)
    assert request["system"] == [{"text": "Be terse."}, {"text": "Use metric units."}]
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    assert request["messages"][0]["content"] == [{"text": "Order 7?"}, {"text": "Quickly."}]
    assert request["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "call_1", "name": "lookup_order", "input": {"order_id": 7}}}
    ]
    assert request["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "call_1", "content": [{"text": "shipped"}]}},
        {"image": {"format": "png", "source": {"bytes": "iVBO"}}},
    ]
    assert request["inferenceConfig"] == {
        "maxTokens": 50,
        "temperature": 0.3,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    spec = request["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["name"] == "lookup_order" and spec["inputSchema"]["json"]["type"] == "object"
    assert request["toolConfig"]["toolChoice"] == {"any": {}}


def test_requests_bedrock_cannot_express_are_refused_before_sending():
    with pytest.raises(ProviderError) as caught:
        converse_request(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            }
        )
    assert caught.value.status == 400
    assert {"n", "logprobs", "seed"} <= BedrockAdapter.unsupported_fields


def test_chat_is_signed_translated_and_answered_in_openai_shape(sim, adapter):
    body = {
        "model": "aws/sonnet",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello Bedrock"},
        ],
        "max_tokens": 100,
        "temperature": 0.2,
    }
    result = run(adapter.chat(SONNET, body))
    completion = ChatCompletion.model_validate(result.parsed)
    assert orjson.loads(result.body) == result.parsed
    assert completion.model == SONNET and completion.choices[0].finish_reason == "stop"
    text = completion.choices[0].message.content
    assert result.usage.prompt_tokens == count_tokens("Be brief.") + count_tokens("Hello Bedrock")
    assert result.usage.completion_tokens == count_tokens(text)
    assert (
        completion.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    )
    [logged] = sim.requests()  # the simulator verified the SigV4 signature to get here
    assert logged["path"] == f"/model/{SONNET}/converse"
    assert logged["headers"]["authorization"].startswith("sha256:")
    assert logged["body"]["system"] == [{"text": "Be brief."}]
    assert logged["body"]["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.2}


def test_cache_reads_count_in_the_prompt_and_as_cached(adapter):
    body = {
        "messages": [
            {"role": "system", "content": "A long shared system prompt."},
            {"role": "user", "content": "hi"},
        ]
    }
    run(adapter.chat(SONNET, body))
    usage = run(adapter.chat(SONNET, body)).usage
    assert usage.cached_tokens == count_tokens("A long shared system prompt.")
    assert usage.prompt_tokens == usage.cached_tokens + 1


def test_a_session_token_is_sent_and_signed(sim):
    adapter = build_adapter(bedrock_config(sim, token="session-token-value"))
    run(adapter.chat(SONNET, {"messages": [{"role": "user", "content": "x"}]}))
    assert sim.requests()[0]["headers"]["x-amz-security-token"].startswith("sha256:")


def test_a_tool_call_comes_back_as_openai_tool_calls_and_a_result_goes_back(sim, adapter):
    ask = {"messages": [{"role": "user", "content": "please lookup_order"}], "tools": [TOOL]}
    result = run(adapter.chat(SONNET, ask))
    choice = result.parsed["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "lookup_order"
    assert isinstance(orjson.loads(call["function"]["arguments"])["order_id"], int)
    follow_up = {
        **ask,
        "messages": [
            *ask["messages"],
            choice["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "shipped"},
        ],
    }
    answer = run(adapter.chat(SONNET, follow_up))
    assert answer.parsed["choices"][0]["finish_reason"] == "stop"
    sent = sim.requests()[-1]["body"]["messages"]
    assert sent[1]["content"][0]["toolUse"]["toolUseId"] == call["id"]
    assert sent[2]["content"][0]["toolResult"]["toolUseId"] == call["id"]


def test_a_stream_is_translated_to_openai_chunks_with_usage_when_asked(adapter):
    body = {
        "messages": [{"role": "user", "content": "Stream it"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async def go():
        stream = await adapter.open_stream(SONNET, body)
        return stream, await drain(stream)

    stream, frames = run(go())
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(f[6:])) for f in frames]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert stream.message == {"role": "assistant", "content": text}
    assert stream.usage.completion_tokens == count_tokens(text)
    assert stream.first_byte_at is not None
    plain = run(adapter.chat(SONNET, {"messages": body["messages"]}))
    assert plain.parsed["choices"][0]["message"]["content"] == text


def test_a_stream_without_include_usage_still_counts_usage(adapter):
    async def go():
        stream = await adapter.open_stream(SONNET, {"messages": [{"role": "user", "content": "x"}]})
        return stream, await drain(stream)

    stream, frames = run(go())
    assert all(orjson.loads(f[6:])["choices"] for f in frames)
    assert stream.usage.prompt_tokens == 1 and stream.usage.completion_tokens > 0


def test_a_streamed_tool_call_is_assembled(adapter):
    body = {
        "messages": [{"role": "user", "content": "hello"}],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "lookup_order"}},
    }

    async def go():
        stream = await adapter.open_stream(SONNET, body)
        return stream, await drain(stream)

    stream, frames = run(go())
    [call] = stream.message["tool_calls"]
    assert call["function"]["name"] == "lookup_order"
    assert isinstance(orjson.loads(call["function"]["arguments"])["order_id"], int)
    assert orjson.loads(frames[-1][6:])["choices"][0]["finish_reason"] == "tool_calls"


def test_titan_embeddings_one_call_per_input_with_counted_tokens(sim, adapter):
    body = {"input": ["hello world", "three more words"], "dimensions": 256}
    result = run(adapter.embed("amazon.titan-embed-text-v2:0", body))
    parsed = CreateEmbeddingResponse.model_validate(result.parsed)
    assert [len(d.embedding) for d in parsed.data] == [256, 256]
    assert result.usage.prompt_tokens == 5 and not result.usage.estimated
    paths = {r["path"] for r in sim.requests()}
    assert paths == {"/model/amazon.titan-embed-text-v2:0/invoke"}
    assert len(sim.requests()) == 2


def test_cohere_embeddings_in_base64_with_tokens_from_the_header(adapter):
    body = {"input": ["a", "b c"], "encoding_format": "base64"}
    result = run(adapter.embed("cohere.embed-english-v3", body))
    encoded = result.parsed["data"][1]["embedding"]
    vector = struct.unpack("<1024f", base64.b64decode(encoded))
    assert abs(sum(v * v for v in vector) - 1) < 1e-4
    assert result.usage.prompt_tokens == 3


def test_embedding_with_a_chat_model_or_token_input_is_a_400(adapter):
    with pytest.raises(ProviderError) as caught:
        run(adapter.embed(SONNET, {"input": "x"}))
    assert caught.value.status == 400
    with pytest.raises(ProviderError) as caught:
        run(adapter.embed("cohere.embed-english-v3", {"input": [1, 2, 3]}))
    assert caught.value.status == 400


def test_throttling_and_server_errors_are_retryable(sim, adapter):
    body = {"messages": [{"role": "user", "content": "x"}]}
    sim.script(SONNET, [{"status": 429}, {"status": 503}, {"status": 424}])
    for status, code in ((429, "rate_limited"), (502, "upstream_error"), (502, "upstream_error")):
        with pytest.raises(ProviderError) as caught:
            run(adapter.chat(SONNET, body))
        assert (caught.value.status, caught.value.code, caught.value.retryable) == (
            status,
            code,
            True,
        )


def test_a_validation_error_is_a_sanitized_400(sim, adapter):
    key_id, secret = sim.aws_credentials
    sim.script(SONNET, [{"status": 400, "message": f"Bad maxTokens for {key_id} {secret}"}])
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat(SONNET, {"messages": [{"role": "user", "content": "x"}]}))
    assert caught.value.status == 400 and not caught.value.retryable
    assert "Bad maxTokens" in caught.value.message and secret not in caught.value.message
    assert key_id not in caught.value.message


def test_a_wrong_secret_is_an_upstream_authentication_failure(sim):
    adapter = build_adapter(bedrock_config(sim, secret="wrong-aws-secret"))
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat(SONNET, {"messages": [{"role": "user", "content": "x"}]}))
    assert (caught.value.status, caught.value.code) == (502, "upstream_auth_failed")
    assert "wrong-aws-secret" not in str(caught.value)


def test_a_stream_failing_before_the_first_byte_raises_from_open_stream(sim, adapter):
    sim.script(SONNET, [{"status": 503}])
    with pytest.raises(ProviderError) as caught:
        run(adapter.open_stream(SONNET, {"messages": [{"role": "user", "content": "x"}]}))
    assert caught.value.retryable


def test_a_dropped_stream_raises_mid_iteration(sim, adapter):
    sim.script(SONNET, [{"drop_after_chunks": 3, "chunk_interval_ms": 5}])

    async def go():
        stream = await adapter.open_stream(SONNET, {"messages": [{"role": "user", "content": "x"}]})
        frames = []
        with pytest.raises(ProviderError) as caught:
            async for frame in stream:
                frames.append(frame)
        return frames, caught.value

    frames, exc = run(go())
    assert len(frames) == 3 and exc.code == "upstream_stream_broken" and not exc.retryable


def test_a_corrupted_frame_raises_a_malformed_stream_error(sim, adapter):
    sim.script(SONNET, [{"malformed_sse": True}])

    async def go():
        stream = await adapter.open_stream(SONNET, {"messages": [{"role": "user", "content": "x"}]})
        return await drain(stream)

    with pytest.raises(ProviderError) as caught:
        run(go())
    assert caught.value.code == "upstream_malformed"


def test_discovery_and_test_use_list_foundation_models(sim, adapter):
    found = {m.name: m.kind for m in adapter.list_models()}
    assert found[SONNET] == "chat"
    assert found["amazon.titan-embed-text-v2:0"] == "embedding"
    assert "stability.sd3-large-v1:0" not in found  # images are not served
    assert adapter.test().startswith("Connected: 8 foundation models")


def test_discovery_with_a_wrong_secret_is_a_clean_error(sim):
    adapter = build_adapter(bedrock_config(sim, secret="wrong-aws-secret"))
    with pytest.raises(ProviderError) as caught:
        adapter.list_models()
    assert caught.value.code == "upstream_auth_failed"
    assert "wrong-aws-secret" not in str(caught.value)


def test_a_throttling_exception_mid_stream_is_a_429(sim, adapter):
    sim.script(SONNET, [{"error_after_chunks": 3, "code": "throttlingException"}])

    async def go():
        stream = await adapter.open_stream(SONNET, {"messages": [{"role": "user", "content": "x"}]})
        frames = []
        with pytest.raises(ProviderError) as caught:
            async for frame in stream:
                frames.append(frame)
        return frames, caught.value

    frames, exc = run(go())
    assert len(frames) == 3
    # Past the first byte nothing is retryable: the client already has part of the answer.
    assert (exc.status, exc.code, exc.retryable) == (429, "rate_limited", False)


def test_a_model_stream_error_mid_stream_is_a_502(sim, adapter):
    sim.script(SONNET, [{"error_after_chunks": 0}])

    async def go():
        stream = await adapter.open_stream(SONNET, {"messages": [{"role": "user", "content": "x"}]})
        return await drain(stream)

    with pytest.raises(ProviderError) as caught:
        run(go())
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")


def test_bedrock_validation_errors_come_back_as_400s(sim, adapter):
    # boto3 would refuse maxTokens 0 itself; the adapter sends it and Bedrock says no.
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat(SONNET, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}))
    assert caught.value.status == 400 and "at least 1" in caught.value.message
    with pytest.raises(ProviderError) as caught:
        run(adapter.chat(SONNET, {"messages": [{"role": "assistant", "content": "hello"}]}))
    assert caught.value.status == 400 and "user message" in caught.value.message
