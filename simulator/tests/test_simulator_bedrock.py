"""The simulator's Bedrock side, driven by boto3: Converse, ConverseStream, InvokeModel, models."""

from __future__ import annotations

import json

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch

from simulator.bedrock_wire import event_frame
from simulator.text import count_tokens

SONNET = "anthropic.claude-3-5-sonnet-20241022-v2:0"


@pytest.fixture
def sim(simulator):
    simulator.reset()
    return simulator


def client(sim, service="bedrock-runtime", secret=None):
    key_id, real_secret = sim.aws_credentials
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=sim.url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret or real_secret,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def user(text):
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse_answers_with_text_usage_and_stop_reason(sim):
    answer = client(sim).converse(
        modelId=SONNET,
        system=[{"text": "Be brief."}],
        messages=user("Hello Bedrock"),
        inferenceConfig={"maxTokens": 200, "temperature": 0.1},
    )
    text = answer["output"]["message"]["content"][0]["text"]
    assert answer["stopReason"] == "end_turn"
    usage = answer["usage"]
    assert usage["inputTokens"] == count_tokens("Be brief.") + count_tokens("Hello Bedrock")
    assert usage["outputTokens"] == count_tokens(text)
    assert sim.requests()[0]["model"] == SONNET


def test_a_repeated_system_prompt_is_reported_as_a_cache_read(sim):
    runtime = client(sim)
    for _ in range(2):
        answer = runtime.converse(
            modelId=SONNET, system=[{"text": "Shared system prompt."}], messages=user("x")
        )
    assert answer["usage"]["cacheReadInputTokens"] == 4
    assert answer["usage"]["inputTokens"] == 1


def test_max_tokens_cuts_the_answer(sim):
    answer = client(sim).converse(
        modelId=SONNET, messages=user("hi"), inferenceConfig={"maxTokens": 2}
    )
    assert answer["stopReason"] == "max_tokens" and answer["usage"]["outputTokens"] == 2


def test_converse_uses_a_tool_when_asked(sim):
    tools = {
        "tools": [
            {
                "toolSpec": {
                    "name": "lookup_order",
                    "inputSchema": {
                        "json": {"type": "object", "properties": {"order_id": {"type": "integer"}}}
                    },
                }
            }
        ]
    }
    answer = client(sim).converse(
        modelId=SONNET, messages=user("please lookup_order 42"), toolConfig=tools
    )
    assert answer["stopReason"] == "tool_use"
    use = answer["output"]["message"]["content"][0]["toolUse"]
    assert use["name"] == "lookup_order" and isinstance(use["input"]["order_id"], int)


def test_converse_stream_frames_are_parsed_by_botocore(sim):
    response = client(sim).converse_stream(modelId=SONNET, messages=user("Stream please"))
    events = list(response["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-3:] == [
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    usage = events[-1]["metadata"]["usage"]
    assert usage["outputTokens"] == kinds.count("contentBlockDelta") == count_tokens(text)
    plain = client(sim).converse(modelId=SONNET, messages=user("Stream please"))
    assert plain["output"]["message"]["content"][0]["text"] == text


def test_a_streamed_tool_use_carries_its_input_as_json_pieces(sim):
    tools = {
        "tools": [{"toolSpec": {"name": "t", "inputSchema": {"json": {"properties": {}}}}}],
        "toolChoice": {"tool": {"name": "t"}},
    }
    response = client(sim).converse_stream(modelId=SONNET, messages=user("x"), toolConfig=tools)
    events = list(response["stream"])
    start = next(e for e in events if "contentBlockStart" in e)
    assert start["contentBlockStart"]["start"]["toolUse"]["name"] == "t"
    pieces = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e
    )
    assert json.loads(pieces) == {}
    assert next(e for e in events if "messageStop" in e)["messageStop"]["stopReason"] == "tool_use"


def test_titan_and_cohere_embeddings_through_invoke_model(sim):
    runtime = client(sim)
    titan = runtime.invoke_model(
        modelId="amazon.titan-embed-text-v2:0",
        body=json.dumps({"inputText": "hello world", "dimensions": 256}),
    )
    data = json.loads(titan["body"].read())
    assert len(data["embedding"]) == 256 and data["inputTextTokenCount"] == 2
    cohere = runtime.invoke_model(
        modelId="cohere.embed-english-v3",
        body=json.dumps({"texts": ["a", "b c"], "input_type": "search_document"}),
    )
    data = json.loads(cohere["body"].read())
    assert len(data["embeddings"]) == 2 and len(data["embeddings"][0]) == 1024
    headers = cohere["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "3"


def test_list_foundation_models_through_the_control_plane_client(sim):
    summaries = client(sim, "bedrock").list_foundation_models()["modelSummaries"]
    by_id = {s["modelId"]: s for s in summaries}
    assert by_id["amazon.titan-embed-text-v2:0"]["outputModalities"] == ["EMBEDDING"]
    assert by_id[SONNET]["providerName"] == "Anthropic"


def test_a_wrong_secret_fails_signature_verification(sim):
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client(sim, secret="not-the-secret").converse(modelId=SONNET, messages=user("x"))
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
    with pytest.raises(botocore.exceptions.ClientError):
        client(sim, "bedrock", secret="not-the-secret").list_foundation_models()


def test_faults_come_back_as_aws_errors(sim):
    sim.script(SONNET, [{"status": 429}, {"status": 400, "message": "bad input"}])
    runtime = client(sim)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        runtime.converse(modelId=SONNET, messages=user("x"))
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        runtime.converse(modelId=SONNET, messages=user("x"))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["Error"]["Message"] == "bad input"


def test_a_corrupted_frame_is_refused_by_the_parser(sim):
    sim.script(SONNET, [{"malformed_sse": True}])
    response = client(sim).converse_stream(modelId=SONNET, messages=user("x"))
    with pytest.raises(ChecksumMismatch):
        list(response["stream"])


def test_event_frames_round_trip_through_botocores_buffer():
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(event_frame("messageStop", {"stopReason": "end_turn"}))
    [message] = list(buffer)
    assert message.headers[":event-type"] == "messageStop"
    assert json.loads(message.payload) == {"stopReason": "end_turn"}


@pytest.mark.parametrize(
    "messages, extra, problem",
    [
        ([{"role": "assistant", "content": [{"text": "hi"}]}], {}, "start with a user"),
        (user("a") + user("b"), {}, "alternate"),
        (
            [
                *user("a"),
                {
                    "role": "assistant",
                    "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}],
                },
                {
                    "role": "user",
                    "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "r"}]}}],
                },
            ],
            {},
            "toolConfig",
        ),
    ],
)
def test_converse_refuses_what_bedrock_refuses(sim, messages, extra, problem):
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client(sim).converse(modelId=SONNET, messages=messages, **extra)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert problem in caught.value.response["Error"]["Message"]
