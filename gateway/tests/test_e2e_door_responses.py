"""The Responses door with the real openai SDK (sync and async), on OpenAI-kind and Bedrock-kind
models through a real Meshgate process and the simulator."""

from __future__ import annotations

import asyncio
import json

import openai
import pydantic
import pytest

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

MODELS = ["kind-openai/gpt-4o-mini", "kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def client(gw, key: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(api_key=gw.keys[key], base_url=gw.url, max_retries=0, timeout=20)


@pytest.mark.parametrize("model", MODELS)
def test_a_response_is_answered_costed_and_recorded_under_its_door(gateway, model):
    raw = client(gateway).responses.with_raw_response.create(
        model=model,
        input="Say something about Paris",
        instructions="Be brief.",
        max_output_tokens=40,
        temperature=0.5,
        top_p=0.9,
        metadata={"ticket": "T-1"},
    )
    response = raw.parse()
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.output_text
    assert response.metadata == {"ticket": "T-1"} and response.instructions == "Be brief."
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    record = gateway.record(raw.headers["x-request-id"], outcome_not="interrupted")
    assert record["endpoint"] == "responses" and record["outcome"] == "ok"
    assert record["prompt_tokens"] == response.usage.input_tokens
    assert record["completion_tokens"] == response.usage.output_tokens
    assert float(record["cost"]) > 0
    assert "Be brief." in record["request_body"]


@pytest.mark.parametrize("model", MODELS)
def test_a_streamed_response_gives_the_typed_events_in_order(gateway, model):
    sdk = client(gateway)
    plain = sdk.responses.create(model=model, input="Tell me about the weather in Paris")
    kinds = []
    with sdk.responses.stream(model=model, input="Tell me about the weather in Paris") as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[4] == "response.output_text.delta"
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == plain.output_text
    assert final.usage.output_tokens == plain.usage.output_tokens


@pytest.mark.parametrize("model", MODELS)
def test_a_function_tool_round_trip_plain_and_streamed(gateway, model):
    sdk = client(gateway)
    asked = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    first = sdk.responses.create(
        model=model,
        input=asked,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    second = sdk.responses.create(
        model=model,
        tools=[WEATHER],
        input=[
            *asked,
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
        ],
    )
    assert second.output_text and second.output[0].type == "message"
    kinds = []
    with sdk.responses.stream(
        model=model, input=asked, tools=[WEATHER], tool_choice="required"
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    streamed = next(item for item in final.output if item.type == "function_call")
    assert streamed.name == "get_weather" and streamed.arguments == call.arguments
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds


@pytest.mark.parametrize("model", MODELS)
def test_previous_response_id_chains_and_stored_responses_are_the_owners(gateway, model):
    sdk = client(gateway)
    first = sdk.responses.create(model=model, input="My name is Zora. Say hello.")
    second = sdk.responses.create(
        model=model, input="What did I say my name was?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.output_text
    # The chain reached the model: the record's request holds the first turn and its answer.
    records = gateway.records("endpoint = 'responses'")
    record = next(r for r in reversed(records) if "What did I say" in (r["request_body"] or ""))
    sent = json.loads(record["request_body"])["messages"]
    assert sent[0] == {"role": "user", "content": "My name is Zora. Say hello."}
    assert sent[1] == {"role": "assistant", "content": first.output_text}
    # Stored: retrievable by its owner (another key of hers too), nobody else.
    assert sdk.responses.retrieve(first.id).output_text == first.output_text
    assert client(gateway, "alice2").responses.retrieve(first.id).id == first.id
    with pytest.raises(openai.NotFoundError):
        client(gateway, "bob").responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):  # a chain may not cross owners
        client(gateway, "bob").responses.create(
            model="sim/gpt-4o", input="Hi", previous_response_id=first.id
        )
    with pytest.raises(openai.NotFoundError):
        client(gateway, "bob").responses.delete(first.id)
    sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first.id)
    # store=False keeps nothing.
    unstored = sdk.responses.create(model=model, input="Hello", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)


class Weather(pydantic.BaseModel):
    city: str
    temperature: int


def test_parse_with_a_pydantic_model_and_the_async_client(gateway):
    parsed = client(gateway).responses.parse(
        model="kind-openai/gpt-4o-mini", input="The weather in Paris", text_format=Weather
    )
    assert isinstance(parsed.output_parsed, Weather)

    async def run():
        sdk = openai.AsyncOpenAI(
            api_key=gateway.keys["alice"], base_url=gateway.url, max_retries=0, timeout=20
        )
        answered = await sdk.responses.create(model="sim/gpt-4o", input="Hi")
        async with sdk.responses.stream(model="sim/gpt-4o", input="Hi") as stream:
            final = await stream.get_final_response()
        parsed = await sdk.responses.parse(
            model="sim/gpt-4o", input="The weather", text_format=Weather
        )
        return answered, final, parsed

    answered, final, parsed = asyncio.run(run())
    assert answered.output_text and final.output_text == answered.output_text
    assert isinstance(parsed.output_parsed, Weather)


def test_refusals_name_what_is_refused_and_are_recorded(gateway):
    sdk = client(gateway)
    for tool in ("web_search", "file_search", "code_interpreter", "computer_use_preview"):
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.responses.create(model="sim/gpt-4o", input="x", tools=[{"type": tool}])
        assert tool in refused.value.body["message"]
    record = gateway.record(refused.value.response.headers["x-request-id"])
    assert record["endpoint"] == "responses" and record["status_code"] == 400
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="sim/gpt-4o", input="x", previous_response_id="resp_nope")
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "revoked").responses.create(model="sim/gpt-4o", input="x")
    with pytest.raises(openai.BadRequestError):  # a provider that cannot honour a JSON schema
        sdk.responses.parse(
            model="kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0",
            input="x",
            text_format=Weather,
        )
