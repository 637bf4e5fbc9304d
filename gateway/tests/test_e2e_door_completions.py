"""Legacy completions (`/v1/completions`) with the real openai SDK, on OpenAI-kind and Bedrock-kind
models through a real Meshgate process and the simulator."""

from __future__ import annotations

import asyncio

import openai
import pytest

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

MODELS = ["kind-openai/gpt-4o-mini", "kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0"]


def client(gw, key: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(api_key=gw.keys[key], base_url=gw.url, max_retries=0, timeout=20)


@pytest.mark.parametrize("model", MODELS)
def test_a_completion_answers_as_text_completion_and_is_recorded_under_its_door(gateway, model):
    raw = client(gateway).completions.with_raw_response.create(
        model=model, prompt="Say something about Paris", max_tokens=20
    )
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.choices[0].text
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens > 0
    record = gateway.record(raw.headers["x-request-id"], outcome_not="interrupted")
    assert record["endpoint"] == "completions"
    assert record["outcome"] == "ok"
    assert record["model_requested"] == model
    assert record["prompt_tokens"] == completion.usage.prompt_tokens
    assert float(record["cost"]) > 0


@pytest.mark.parametrize("model", MODELS)
def test_a_streamed_completion_gives_text_chunks_and_usage(gateway, model):
    plain = client(gateway).completions.create(model=model, prompt="Tell me a story")
    stream = client(gateway).completions.create(
        model=model,
        prompt="Tell me a story",
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, kinds = "", None, set()
    for chunk in stream:
        kinds.add(chunk.object)
        for choice in chunk.choices:
            text += choice.text
        if chunk.usage:
            usage = chunk.usage
    assert kinds == {"text_completion"}
    assert text == plain.choices[0].text
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens


def test_echo_puts_the_prompt_before_the_text_and_the_async_client_works(gateway):
    async def run():
        sdk = openai.AsyncOpenAI(
            api_key=gateway.keys["alice"], base_url=gateway.url, max_retries=0, timeout=20
        )
        return await sdk.completions.create(model="sim/gpt-4o", prompt=["Hello there"], echo=True)

    completion = asyncio.run(run())
    assert completion.choices[0].text.startswith("Hello there")
    assert len(completion.choices[0].text) > len("Hello there")


def test_what_chat_models_cannot_do_is_refused_in_openai_shape_and_recorded(gateway):
    sdk = client(gateway)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.completions.create(model="sim/gpt-4o", prompt="x", suffix="after")
    assert refused.value.body["param"] == "suffix"
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.completions.create(model="sim/gpt-4o", prompt=["one", "two"])
    assert refused.value.body["param"] == "prompt"
    request_id = refused.value.response.headers["x-request-id"]
    record = gateway.record(request_id)
    assert record["endpoint"] == "completions" and record["status_code"] == 400
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "revoked").completions.create(model="sim/gpt-4o", prompt="x")
    with pytest.raises(openai.NotFoundError):
        sdk.completions.create(model="sim/no-such-model", prompt="x")


def test_a_fallback_alias_serves_legacy_completions(gateway):
    completion = client(gateway).completions.create(model="fallback-chain", prompt="Hello")
    assert completion.choices[0].text
    record = gateway.records("endpoint = 'completions' AND alias_name = 'fallback-chain'")[-1]
    assert record["outcome"] == "ok"
