"""The Anthropic Messages door with the real `anthropic` SDK, on OpenAI-kind and Bedrock-kind
models through a real Meshgate process and the simulator."""

from __future__ import annotations

import asyncio
import base64

import anthropic
import httpx
import pytest

from connections.tokens import estimate_prompt_tokens
from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

MODELS = ["kind-openai/gpt-4o-mini", "kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0"]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
# A 1x1 PNG.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


def root(gw) -> str:
    return gw.url.removesuffix("/v1")


def client(gw, key: str = "alice") -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=gw.keys[key], base_url=root(gw), max_retries=0, timeout=20)


@pytest.mark.parametrize("model", MODELS)
def test_a_message_is_answered_costed_and_recorded_under_its_door(gateway, model):
    raw = client(gateway).messages.with_raw_response.create(
        model=model,
        max_tokens=50,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say something about Paris"}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0
    record = gateway.record(raw.headers["x-request-id"], outcome_not="interrupted")
    assert record["endpoint"] == "messages" and record["outcome"] == "ok"
    assert record["prompt_tokens"] == message.usage.input_tokens
    assert record["completion_tokens"] == message.usage.output_tokens
    assert float(record["cost"]) > 0
    assert "You are terse." in record["request_body"]


@pytest.mark.parametrize("model", MODELS)
def test_a_streamed_message_gives_the_event_sequence_and_the_same_text(gateway, model):
    sdk = client(gateway)
    messages = [{"role": "user", "content": "Tell me about the weather in Paris"}]
    plain = sdk.messages.create(model=model, max_tokens=60, messages=messages)
    kinds = []
    with sdk.messages.stream(model=model, max_tokens=60, messages=messages) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    raw = [k for k in kinds if k not in ("text",)]
    assert raw[0] == "message_start" and raw[-1] == "message_stop"
    assert raw[1] == "content_block_start" and "content_block_delta" in raw
    assert raw.index("content_block_stop") < raw.index("message_delta")
    assert final.content[0].text == plain.content[0].text
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.stop_reason == plain.stop_reason


@pytest.mark.parametrize("model", MODELS)
def test_a_tool_round_trip(gateway, model):
    sdk = client(gateway)
    asked = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    first = sdk.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=asked,
    )
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input
    second = sdk.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            *asked,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}],
            },
        ],
    )
    assert second.content[0].type == "text" and second.stop_reason == "end_turn"
    # Streamed, the tool call arrives as input_json_delta pieces the SDK assembles.
    with sdk.messages.stream(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=asked,
    ) as stream:
        final = stream.get_final_message()
    streamed = next(block for block in final.content if block.type == "tool_use")
    assert streamed.name == "get_weather" and streamed.input == use.input


def test_images_stop_sequences_and_bearer_auth(gateway):
    sdk = anthropic.Anthropic(
        auth_token=gateway.keys["alice"], base_url=root(gateway), max_retries=0, timeout=20
    )
    message = sdk.messages.create(
        model="kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0",
        max_tokens=40,
        stop_sequences=["zzz"],
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                    {"type": "text", "text": "Describe the image"},
                ],
            }
        ],
    )
    assert message.content[0].text


def test_count_tokens_uses_the_estimator_and_checks_the_model(gateway):
    sdk = client(gateway)
    counted = sdk.messages.count_tokens(
        model="kind-openai/gpt-4o-mini",
        system="Be brief",
        messages=[{"role": "user", "content": "x" * 400}],
    )
    # The project's one estimator, over the chat messages the request translates to.
    chat = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "x" * 400}]
    assert counted.input_tokens == estimate_prompt_tokens({"messages": chat}) > 100
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.count_tokens(
            model="kind-openai/nope", messages=[{"role": "user", "content": "x"}]
        )


def test_errors_come_in_anthropic_shape_with_the_sdk_exceptions(gateway):
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client(gateway, "revoked").messages.create(
            model="sim/gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "authentication_error"
    record = gateway.record(refused.value.response.headers["x-request-id"])
    assert record["endpoint"] == "messages" and record["status_code"] == 401
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(gateway).messages.create(
            model="sim/nope", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client(gateway).messages.create(
            model="sim/gpt-4o",
            max_tokens=10,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
            messages=[{"role": "user", "content": "x"}],
        )
    assert "web_search_20250305" in bad.value.body["error"]["message"]
    # A model whose provider fails: the SDK's server error, in Anthropic's shape.
    with pytest.raises(anthropic.InternalServerError) as failed:
        client(gateway).messages.create(
            model="sim/broken-fail-503", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert failed.value.body["type"] == "error"
    # A missing max_tokens is the client's error (the SDK insists on it: sent raw here).
    response = httpx.post(
        f"{gateway.url}/messages",
        headers={"x-api-key": gateway.keys["alice"]},
        json={"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_async_client_streams(gateway):
    async def run():
        sdk = anthropic.AsyncAnthropic(
            api_key=gateway.keys["alice"], base_url=root(gateway), max_retries=0, timeout=20
        )
        async with sdk.messages.stream(
            model="sim/gpt-4o", max_tokens=30, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
        return text

    assert asyncio.run(run())
