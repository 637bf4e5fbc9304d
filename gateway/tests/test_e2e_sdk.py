"""The official openai SDK (sync and async) against a real Meshgate process and the simulator."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import openai
import pytest

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

SIM_KEY_FRAGMENT = "sim-secret-key-not-real"


def client(gw, key: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(api_key=gw.keys[key], base_url=gw.url, max_retries=0, timeout=20)


def aclient(gw, key: str = "alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=gw.keys[key], base_url=gw.url, max_retries=0, timeout=20)


def test_chat_completion_through_meshgate_is_recorded_with_its_cost(gateway):
    response = client(gateway).chat.completions.with_raw_response.create(
        model="sim/gpt-4o", messages=[{"role": "user", "content": "Say hello"}]
    )
    completion = response.parse()
    assert completion.choices[0].message.content
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("req_")
    record = gateway.record(request_id, outcome_not="interrupted")
    assert record["outcome"] == "ok"
    assert record["status_code"] == 200
    assert record["prompt_tokens"] == completion.usage.prompt_tokens
    assert record["completion_tokens"] == completion.usage.completion_tokens
    expected = (
        Decimal(completion.usage.prompt_tokens) * Decimal("2.50")
        + Decimal(completion.usage.completion_tokens) * Decimal("10.00")
    ) / Decimal(1_000_000)
    assert Decimal(str(record["cost"])) == expected
    assert record["api_key_prefix"] and gateway.keys["alice"].startswith(record["api_key_prefix"])
    assert record["purpose"] == "e2e tests"
    assert record["model_requested"] == "sim/gpt-4o"
    assert SIM_KEY_FRAGMENT not in str(record)


def test_streamed_chat_with_usage_ends_with_done_and_costs_the_same_as_unstreamed(gateway):
    sdk = client(gateway)
    messages = [{"role": "user", "content": "Tell me about the weather in Paris"}]
    plain = sdk.chat.completions.with_raw_response.create(
        model="sim/gpt-4o-mini", messages=messages
    )
    with sdk.chat.completions.with_streaming_response.create(
        model="sim/gpt-4o-mini",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    ) as streamed:
        lines = [line for line in streamed.iter_lines() if line]
        stream_id = streamed.headers["x-request-id"]
    assert lines[-1] == "data: [DONE]"
    chunks = [line for line in lines if line.startswith("data: {")]
    assert '"usage"' in chunks[-1]
    plain_record = gateway.record(plain.headers["x-request-id"], outcome_not="interrupted")
    stream_record = gateway.record(stream_id, outcome_not="interrupted")
    assert stream_record["streamed"] == 1 and stream_record["outcome"] == "ok"
    assert stream_record["prompt_tokens"] == plain_record["prompt_tokens"] > 0
    assert stream_record["completion_tokens"] == plain_record["completion_tokens"] > 0
    assert Decimal(str(stream_record["cost"])) == Decimal(str(plain_record["cost"])) > 0
    assert plain.parse().choices[0].message.content in stream_record["response_body"]


def test_streaming_with_the_sdk_iterator_yields_text_and_usage(gateway):
    stream = client(gateway).chat.completions.create(
        model="chat-default",
        messages=[{"role": "user", "content": "Write a line"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text and usage is not None and usage.completion_tokens > 0


def test_tool_calls_come_back_in_openai_shape(gateway):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    completion = client(gateway).chat.completions.create(
        model="sim/gpt-4o",
        messages=[{"role": "user", "content": "Use get_weather for Paris"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in call.function.arguments


def test_embeddings_and_models_list_with_the_async_client(gateway):
    async def run():
        sdk = aclient(gateway)
        embedded = await sdk.embeddings.create(
            model="sim/text-embedding-3-small", input=["one", "two"]
        )
        models = await sdk.models.list()
        one = await sdk.models.retrieve("chat-default")
        await sdk.close()
        return embedded, models, one

    embedded, models, one = asyncio.run(run())
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) > 0
    ids = {model.id for model in models.data}
    assert {"sim/gpt-4o", "sim/gpt-4o-mini", "sim/text-embedding-3-small", "chat-default"} <= ids
    assert "sim/unapproved-model" not in ids
    assert one.id == "chat-default"


def test_async_streaming_chat(gateway):
    async def run():
        sdk = aclient(gateway)
        stream = await sdk.chat.completions.create(
            model="sim/gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        await sdk.close()
        return "".join(parts)

    assert asyncio.run(run())


def test_bob_sees_only_his_models(gateway):
    ids = {model.id for model in client(gateway, "bob").models.list().data}
    assert "sim/gpt-4o" not in ids and "sim/gpt-4o-mini" in ids


@pytest.mark.parametrize("key", ["revoked", "expired", "missing", "malformed", "unknown"])
def test_every_key_failure_gets_the_same_401(gateway, key):
    headers = {
        "revoked": {"Authorization": f"Bearer {gateway.keys['revoked']}"},
        "expired": {"Authorization": f"Bearer {gateway.keys['expired']}"},
        "missing": {},
        "malformed": {"Authorization": "Token something"},
        "unknown": {"Authorization": "Bearer mg-deadbeef-notakey"},
    }[key]
    response = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        headers=headers,
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "Invalid or missing API key. Send 'Authorization: Bearer mg-...'.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    record = gateway.record(response.headers["x-request-id"])
    assert record["outcome"] == "unauthorized" and record["user_id"] is None
    secret = headers.get("Authorization", "").removeprefix("Bearer ")
    if secret:
        assert secret not in str(record)


def test_the_sdk_raises_its_usual_exceptions(gateway):
    sdk = client(gateway)
    bad = openai.OpenAI(api_key="mg-nope", base_url=gateway.url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="sim/gpt-4o", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError) as not_found:
        sdk.chat.completions.create(model="sim/nope", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(
            model="sim/gpt-4o", messages=[{"role": "user", "content": "x"}], temperature=7
        )
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(
            model="sim/limited-fail-429", messages=[{"role": "user", "content": "x"}]
        )


def test_unknown_unapproved_and_ungranted_models_get_the_same_404(gateway):
    bodies = []
    for key, model in [
        ("alice", "sim/does-not-exist"),
        ("alice", "sim/unapproved-model"),
        ("bob", "sim/gpt-4o"),
    ]:
        response = httpx.post(
            gateway.url + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {gateway.keys[key]}"},
        )
        assert response.status_code == 404
        body = response.json()
        body["error"]["message"] = body["error"]["message"].replace(model, "M")
        bodies.append(body)
    assert bodies[0] == bodies[1] == bodies[2]


def test_an_embedding_model_on_chat_is_a_400(gateway):
    with pytest.raises(openai.BadRequestError):
        client(gateway).chat.completions.create(
            model="sim/text-embedding-3-small", messages=[{"role": "user", "content": "x"}]
        )


def test_body_limits_and_bad_json(gateway):
    headers = {"Authorization": f"Bearer {gateway.keys['alice']}"}
    bad = httpx.post(gateway.url + "/chat/completions", content=b"{not json", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    array = httpx.post(gateway.url + "/chat/completions", content=b"[1, 2]", headers=headers)
    assert array.status_code == 400
    huge = b'{"model": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    too_large = httpx.post(gateway.url + "/chat/completions", content=huge, headers=headers)
    assert too_large.status_code == 413

    def chunked():
        for _ in range(11):
            yield b" " * (1024 * 1024)

    streamed = httpx.post(gateway.url + "/embeddings", content=chunked(), headers=headers)
    assert streamed.status_code == 413
    assert gateway.record(too_large.headers["x-request-id"])["outcome"] == "invalid_request"


def test_unknown_routes_and_methods_are_openai_shaped(gateway):
    missing = httpx.get(gateway.url + "/nothing")
    assert missing.status_code == 404 and "error" in missing.json()
    assert missing.headers["x-request-id"]
    wrong = httpx.get(gateway.url + "/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "model",
    [
        "kind-openai/gpt-4o-mini",
        "kind-azure-openai/chat-deployment",
        "kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0",
        "sim/gpt-4o-mini",
    ],
)
def test_each_provider_kind_answers_through_meshgate_plain_and_streamed(gateway, model):
    sdk = client(gateway)
    messages = [{"role": "user", "content": "Describe the sea"}]
    plain = sdk.chat.completions.create(model=model, messages=messages)
    assert plain.choices[0].message.content and plain.usage.completion_tokens > 0
    stream = sdk.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text == plain.choices[0].message.content
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_a_field_the_provider_cannot_honour_is_a_clear_400_before_upstream(gateway, simulator):
    simulator.reset()
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).chat.completions.create(
            model="kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0",
            messages=[{"role": "user", "content": "x"}],
            seed=7,
        )
    assert refused.value.code == "unsupported_field" and refused.value.param == "seed"
    assert simulator.requests() == []


def test_neutral_values_of_fields_a_provider_lacks_are_not_refused(gateway):
    """Clients often send n=1 or penalties of 0 on every call: Bedrock has no such fields,
    and without them gives the same answer, so the call goes through; n=2 does not."""
    model = "kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0"
    answer = client(gateway).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "x"}],
        n=1,
        presence_penalty=0.0,
        frequency_penalty=0,
        logprobs=False,
        response_format={"type": "text"},
    )
    assert answer.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], n=2
        )
    assert refused.value.param == "n"
