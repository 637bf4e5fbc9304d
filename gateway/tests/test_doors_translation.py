"""The doors' pure translations (legacy completions, Messages, Responses) and the Responses store,
each on its own; the end-to-end tests (test_e2e_door_*.py) run them with the real SDKs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from asgiref.sync import async_to_sync

from gateway import doors_completions as completions
from gateway import doors_messages as messages
from gateway import doors_responses as responses
from gateway import responses_output, responses_store, stages
from gateway.call import Call, Principal
from gateway.errors import GatewayError


def events(frames: bytes) -> list[dict]:
    return [orjson.loads(line[6:]) for line in frames.split(b"\n") if line.startswith(b"data: ")]


# --- legacy completions ---------------------------------------------------------------------


def test_a_prompt_becomes_one_user_message_and_the_answer_text():
    chat = completions.to_chat({"model": "m", "prompt": ["Hi"], "max_tokens": 5, "stop": "x"})
    assert chat == {
        "model": "m",
        "max_tokens": 5,
        "stop": "x",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    answer = {
        "id": "chatcmpl-abc",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"content": "there"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    text = completions.from_chat(answer, echo="Hi ")
    assert text["id"] == "cmpl-abc" and text["object"] == "text_completion"
    assert text["choices"] == [
        {"text": "Hi there", "index": 0, "logprobs": None, "finish_reason": "length"}
    ]
    chunk = completions.chunk_from_chat({"id": "chatcmpl-abc", "choices": [{"delta": {}}]})
    assert chunk["choices"][0]["text"] == ""


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"suffix": "s"}, "suffix"), ({"best_of": 2}, "best_of"), ({"prompt": [1, 2]}, "prompt")],
)
def test_what_a_chat_model_cannot_do_is_refused_naming_the_field(extra, param):
    with pytest.raises(GatewayError) as refused:
        completions.to_chat({"model": "m", "prompt": "x", **extra})
    assert (refused.value.status, refused.value.param) == (400, param)


# --- Messages -------------------------------------------------------------------------------


def test_a_messages_request_with_tools_images_and_results_becomes_chat():
    chat = messages.to_chat(
        {
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "Be kind"}],
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u1"},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Calling"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                        {"type": "text", "text": "Thanks"},
                    ],
                },
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be kind"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
            ],
        },
        {
            "role": "assistant",
            "content": "Calling",
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "42"},
        {"role": "user", "content": "Thanks"},
    ]
    assert chat["stop"] == ["END"] and chat["user"] == "u1" and chat["max_tokens"] == 10
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["tools"][0]["function"] == {"name": "f", "parameters": {"type": "object"}}


def test_messages_refusals():
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(GatewayError, match="max_tokens"):
        messages.to_chat(base)
    assert "max_tokens" not in messages.to_chat(base, counting=True)
    with pytest.raises(GatewayError, match="bash_20250124"):
        messages.to_chat({**base, "max_tokens": 1, "tools": [{"type": "bash_20250124"}]})
    with pytest.raises(GatewayError, match="document"):
        messages.to_chat(
            {
                **base,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": [{"type": "document"}]}],
            }
        )


def test_a_chat_answer_becomes_a_message_and_a_stream_its_event_sequence():
    answer = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "content": "Sure",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"x":2}'}}],
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    message = messages.from_chat(answer, "msg_1", "m")
    assert message["content"] == [
        {"type": "text", "text": "Sure"},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 2}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 3 and message["usage"]["output_tokens"] == 4
    stream = messages.MessageEvents("msg_1", "m")
    out = stream.start(5)
    out += b"".join(stream.feed({"choices": [{"delta": {"content": "He"}}]}))
    out += b"".join(stream.feed({"choices": [{"delta": {"content": "llo"}}]}))
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"x"'}}
    out += b"".join(stream.feed({"choices": [{"delta": {"tool_calls": [call]}}]}))
    more = {"index": 0, "function": {"arguments": ":2}"}}
    delta = {"delta": {"tool_calls": [more]}, "finish_reason": "tool_calls"}
    out += b"".join(stream.feed({"choices": [delta]}))
    out += stream.end(3, 4)
    kinds = [event["type"] for event in events(out)]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    found = events(out)
    assert found[5]["content_block"]["type"] == "tool_use" and found[5]["index"] == 1
    assert (
        found[9]["delta"]["stop_reason"] == "tool_use" and found[9]["usage"]["output_tokens"] == 4
    )
    assert b"event: message_start\n" in out


def test_an_error_in_anthropic_shape():
    body = messages.error_body(GatewayError(429, "Slow down", code="rate_limited"), "req_1")
    assert body["type"] == "error"
    assert body["error"] == {"type": "rate_limit_error", "message": "Slow down"}


# --- Responses ------------------------------------------------------------------------------


def test_a_responses_request_becomes_chat_after_its_chain():
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    chat = responses.to_chat(
        {
            "model": "m",
            "instructions": "Be kind",
            "max_output_tokens": 9,
            "temperature": 0.2,
            "metadata": {"k": "v"},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "W", "schema": {}, "strict": True}},
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "c"}]},
                {"type": "function_call", "call_id": "k1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "k2", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "k1", "output": "one"},
                {"type": "reasoning", "summary": []},
            ],
        },
        history,
    )
    assert chat["messages"][:3] == [{"role": "system", "content": "Be kind"}, *history]
    assert chat["messages"][3] == {"role": "user", "content": "c"}
    assert [c["id"] for c in chat["messages"][4]["tool_calls"]] == ["k1", "k2"]
    assert chat["messages"][5] == {"role": "tool", "tool_call_id": "k1", "content": "one"}
    assert chat["max_tokens"] == 9 and chat["temperature"] == 0.2 and "metadata" not in chat
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"]["json_schema"] == {"name": "W", "schema": {}, "strict": True}


@pytest.mark.parametrize("tool", ["web_search_preview", "file_search", "computer_use_preview"])
def test_built_in_tools_are_refused_naming_the_tool(tool):
    with pytest.raises(GatewayError) as refused:
        responses.to_chat({"model": "m", "input": "x", "tools": [{"type": tool}]})
    assert refused.value.status == 400 and tool in refused.value.message


def test_a_response_stream_numbers_its_events_in_order():
    stream = responses_output.ResponseEvents({"model": "m"}, "resp_1", 1, "1")
    out = stream.start()
    out += b"".join(stream.feed({"choices": [{"delta": {"content": "Hi"}}]}))
    call = {"index": 0, "id": "k", "function": {"name": "f", "arguments": "{}"}}
    out += b"".join(stream.feed({"choices": [{"delta": {"tool_calls": [call]}}]}))
    last, response = stream.end(responses_output.usage_of({"prompt_tokens": 1}))
    found = events(out + last)
    assert [e["sequence_number"] for e in found] == list(range(len(found)))
    assert [e["type"] for e in found] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [item["type"] for item in response["output"]] == ["message", "function_call"]
    assert responses_output.assistant_message(response["output"]) == {
        "role": "assistant",
        "content": "Hi",
        "tool_calls": [
            {"id": "k", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }


def test_the_translate_stage_runs_a_door_once_and_leaves_openai_bodies_alone():
    body = {"model": "m", "prompt": "Hi"}
    call = Call("req_t", "chat.completions", body=dict(body), door=completions.CompletionsDoor())
    async_to_sync(stages.translate)(call)
    assert call.door_body == body and call.body["messages"] == [{"role": "user", "content": "Hi"}]
    async_to_sync(stages.translate)(call)  # already translated: nothing more
    assert call.door_body == body
    plain = Call("req_p", "chat.completions", body={"model": "m", "messages": []})
    async_to_sync(stages.translate)(plain)
    assert plain.door_body is None and plain.recorded_endpoint == "chat.completions"
    assert call.recorded_endpoint == "completions"


# --- the store ------------------------------------------------------------------------------


def owner(user_id: int) -> Principal:
    return Principal(user_id, "u", None, None, "", "tests")


@pytest.mark.django_db(transaction=True)
def test_stored_responses_are_their_owners_and_expire_with_the_audit_retention(settings):
    from audit.writer import writer
    from gateway.models import StoredResponse

    settings.MESHGATE_AUDIT_RETENTION_DAYS = 30
    now = int(datetime.now(UTC).timestamp())
    old = int((datetime.now(UTC) - timedelta(days=31)).timestamp())
    responses_store.keep(owner(7), {"id": "resp_new", "created_at": now, "model": "m"}, [])
    responses_store.keep(owner(7), {"id": "resp_old", "created_at": old, "model": "m"}, [])
    writer.drain()
    assert set(StoredResponse.objects.values_list("id", flat=True)) == {"resp_new", "resp_old"}
    responses_store._recent.clear()  # what another worker sees: the database only
    found, _ = async_to_sync(responses_store.find)("resp_new", 7)
    assert found["id"] == "resp_new"
    for response_id, user in (("resp_new", 8), ("resp_old", 7), ("other", 7)):
        with pytest.raises(GatewayError) as missing:
            async_to_sync(responses_store.find)(response_id, user)
        assert missing.value.status == 404
    assert responses_store.purge_expired() == 1
    assert list(StoredResponse.objects.values_list("id", flat=True)) == ["resp_new"]
