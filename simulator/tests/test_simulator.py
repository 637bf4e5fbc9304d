"""The simulator speaks OpenAI's wire protocol well enough for the official SDK to parse it."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from simulator.text import count_tokens

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        },
    },
}


@pytest.fixture
def sim(simulator):
    simulator.reset()
    return simulator


@pytest.fixture
def client(sim):
    return openai.OpenAI(api_key=sim.api_key, base_url=sim.openai_base, max_retries=0)


@pytest.fixture
def async_client(sim):
    return openai.AsyncOpenAI(api_key=sim.api_key, base_url=sim.openai_base, max_retries=0)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_a_chat_completion_is_parsed_by_the_sdk_with_exact_usage(client):
    completion = client.chat.completions.create(model="gpt-4o", messages=user("Hello there, sim!"))
    assert isinstance(completion, ChatCompletion)
    assert completion.model == "gpt-4o"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.message.content
    assert completion.usage.prompt_tokens == count_tokens("Hello there, sim!") == 5
    assert completion.usage.completion_tokens == count_tokens(choice.message.content)
    assert completion.usage.total_tokens == 5 + completion.usage.completion_tokens


def test_the_same_prompt_gets_the_same_answer_and_another_prompt_another(client):
    def ask(text):
        return client.chat.completions.create(model="gpt-4o", messages=user(text))

    first, again, other = ask("one"), ask("one"), ask("two")
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content


def test_max_tokens_bounds_the_answer_and_says_length(client):
    completion = client.chat.completions.create(model="gpt-4o", messages=user("hi"), max_tokens=3)
    assert completion.usage.completion_tokens == 3
    assert count_tokens(completion.choices[0].message.content) == 3
    assert completion.choices[0].finish_reason == "length"
    newer = client.chat.completions.create(
        model="gpt-4o", messages=user("hi"), max_completion_tokens=2
    )
    assert newer.usage.completion_tokens == 2


def test_a_repeated_system_prompt_counts_as_cached(client):
    system = {"role": "system", "content": "You are a terse assistant for the finance team."}
    first = client.chat.completions.create(model="gpt-4o", messages=[system, *user("a")])
    second = client.chat.completions.create(model="gpt-4o", messages=[system, *user("b")])
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == count_tokens(system["content"])


def test_a_stream_has_one_token_per_chunk_and_a_final_usage_chunk(client):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=user("Stream me something."),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    text = "".join(c.choices[0].delta.content for c in content_chunks)
    assert usage_chunk.usage.completion_tokens == len(content_chunks) == count_tokens(text)
    assert usage_chunk.usage.prompt_tokens == count_tokens("Stream me something.")
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_a_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=user("x"), stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_tool_is_called_when_the_user_asks_for_it(client):
    completion = client.chat.completions.create(
        model="gpt-4o", messages=user("What is the weather? Use get_weather."), tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit", "days"}
    assert arguments["unit"] in {"celsius", "fahrenheit"} and isinstance(arguments["days"], int)
    assert completion.usage.completion_tokens == 1 + count_tokens(call.function.arguments)


def test_tool_choice_naming_a_function_forces_the_call_and_none_forbids_it(client):
    forced = client.chat.completions.create(
        model="gpt-4o",
        messages=user("hello"),
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"
    plain = client.chat.completions.create(
        model="gpt-4o", messages=user("hello"), tools=[WEATHER_TOOL]
    )
    assert plain.choices[0].message.tool_calls is None
    refused = client.chat.completions.create(
        model="gpt-4o", messages=user("use the tool"), tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert refused.choices[0].message.tool_calls is None


def test_a_streamed_tool_call_assembles_to_valid_json_arguments(client):
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=user("call the tool please"),
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            name += call.function.name or ""
            arguments += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls"
    assert json.loads(arguments)["unit"] in {"celsius", "fahrenheit"}


def test_embeddings_are_deterministic_unit_vectors_in_float_and_base64(client):
    result = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
    assert isinstance(result, CreateEmbeddingResponse)
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 64
    assert abs(sum(v * v for v in result.data[0].embedding) - 1) < 1e-6
    assert result.usage.prompt_tokens == 3
    # The SDK asks for base64 unless told otherwise; float gives the same vector.
    as_float = client.embeddings.create(
        model="text-embedding-3-small", input="alpha", encoding_format="float"
    )
    assert as_float.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)
    raw = httpx.post(
        str(client.base_url.join("embeddings")),
        json={"model": "m", "input": "alpha", "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {client.api_key}"},
    ).json()
    assert isinstance(raw["data"][0]["embedding"], str)


def test_models_are_listed_and_retrieved_and_unknown_ones_are_404(client):
    names = [m.id for m in client.models.list()]
    assert "gpt-4o" in names and "text-embedding-3-small" in names
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_a_wrong_key_gets_an_openai_shaped_401(sim):
    bad = openai.OpenAI(api_key="wrong", base_url=sim.openai_base, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert caught.value.code == "invalid_api_key"


def test_the_async_client_chats_and_streams(async_client):
    async def run():
        completion = await async_client.chat.completions.create(
            model="gpt-4o", messages=user("async hello")
        )
        stream = await async_client.chat.completions.create(
            model="gpt-4o",
            messages=user("async hello"),
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            usage = chunk.usage or usage
        embedded = await async_client.embeddings.create(model="e", input="async")
        return completion, text, usage, embedded

    completion, text, usage, embedded = asyncio.run(run())
    assert text == completion.choices[0].message.content
    assert usage.completion_tokens == completion.usage.completion_tokens
    assert len(embedded.data[0].embedding) == 64


def test_model_name_conventions_fail_and_delay(client):
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fail-503", messages=user("x"))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fail-429", messages=user("x"))
    assert caught.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fail-400", messages=user("x"))
    import time

    started = time.monotonic()
    client.chat.completions.create(model="gpt-4o-slow-300", messages=user("x"))
    assert time.monotonic() - started >= 0.3


def test_scripted_responses_are_consumed_in_order_then_normal(sim, client):
    sim.script("gpt-4o", [{"status": 429, "retry_after": 2}, {"status": 503}, {}])
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=user("x"))
    assert caught.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=user("x"))
    client.chat.completions.create(model="gpt-4o", messages=user("x"))
    client.chat.completions.create(model="gpt-4o", messages=user("x"))
    # Another model's script does not apply.
    sim.script("gpt-4o-mini", [{"status": 500}])
    client.chat.completions.create(model="gpt-4o", messages=user("x"))


def test_a_scripted_drop_cuts_the_stream_mid_way(sim, client):
    sim.script("gpt-4o", [{"drop_after_chunks": 3}])
    stream = client.chat.completions.create(model="gpt-4o", messages=user("x"), stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3


def test_a_scripted_malformed_frame_breaks_sdk_parsing(sim, client):
    sim.script("gpt-4o", [{"malformed_sse": True}])
    stream = client.chat.completions.create(model="gpt-4o", messages=user("x"), stream=True)
    with pytest.raises(json.JSONDecodeError):
        list(stream)


def test_a_scripted_chunk_interval_spreads_the_stream(sim, client):
    import time

    sim.script("gpt-4o", [{"chunk_interval_ms": 20}])
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="gpt-4o", messages=user("x"), stream=True, max_tokens=5
    )
    chunks = list(stream)
    # opening + 5 tokens + finish = 7 frames, 20 ms apart
    assert len(chunks) == 7
    assert time.monotonic() - started >= 0.12


def test_the_request_log_hashes_the_key_and_reset_clears_it(sim, client):
    client.chat.completions.create(model="gpt-4o", messages=user("logged"))
    [entry] = sim.requests()
    assert entry["method"] == "POST" and entry["path"] == "/v1/chat/completions"
    assert entry["model"] == "gpt-4o"
    assert entry["body"]["messages"] == user("logged")
    expected = hashlib.sha256(f"Bearer {sim.api_key}".encode()).hexdigest()
    assert entry["headers"]["authorization"] == "sha256:" + expected
    assert sim.api_key not in json.dumps(entry)
    sim.reset()
    assert sim.requests() == []


def test_a_bad_script_is_refused(sim):
    response = httpx.post(sim.url + "/_sim/script", json={"responses": "nope"})
    assert response.status_code == 400


def test_the_command_line_serves_the_simulator_with_an_expected_key(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(port), "--api-key", "cli-k"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(base + "/models", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.1)
        good = openai.OpenAI(api_key="cli-k", base_url=base, max_retries=0)
        assert good.chat.completions.create(model="gpt-4o", messages=user("hi")).choices
        bad = openai.OpenAI(api_key="other", base_url=base, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_chat_without_messages_is_a_400(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=[])
