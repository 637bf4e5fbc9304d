"""The playground accepts a conversation and three settings; nothing else reaches the gateway."""

import json

import pytest

from playground.payload import PayloadError, parse_chat_request


def raw(**fields):
    base = {
        "model": "sim/gpt-4o-mini",
        "department": "7",
        "messages": [{"role": "user", "content": "Hello"}],
    }
    base.update(fields)
    return json.dumps(base).encode()


def test_a_conversation_becomes_a_streamed_body_with_usage():
    request = parse_chat_request(
        raw(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Again"},
            ],
            temperature="0.3",
            max_tokens=64,
            top_p=0.9,
        )
    )
    assert request.department_id == 7
    assert request.gateway_body() == {
        "model": "sim/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Again"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "max_tokens": 64,
        "top_p": 0.9,
    }


def test_fields_the_playground_does_not_offer_never_reach_the_gateway():
    request = parse_chat_request(raw(tools=[{"type": "function"}], n=5, logit_bias={"1": 100}))
    body = request.gateway_body()
    assert not {"tools", "n", "logit_bias"} & body.keys()


def test_an_empty_system_prompt_is_left_out_and_unset_settings_are_not_sent():
    request = parse_chat_request(
        raw(
            messages=[{"role": "system", "content": "  "}, {"role": "user", "content": "Hi"}],
            temperature=None,
            max_tokens="",
        )
    )
    body = request.gateway_body()
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert "temperature" not in body and "max_tokens" not in body and "top_p" not in body


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": ""}, "Pick a model"),
        ({"department": None}, "department"),
        ({"messages": []}, "empty"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": ["not", "text"]}]}, "role"),
        ({"messages": [{"role": "assistant", "content": "I end it"}]}, "end with your message"),
        ({"temperature": 3}, "between 0 and 2"),
        ({"top_p": -0.1}, "between 0 and 1"),
        ({"max_tokens": 0}, "between 1"),
        ({"temperature": "warm"}, "must be a number"),
        ({"temperature": True}, "must be a number"),
    ],
)
def test_it_refuses_what_the_page_would_never_send(fields, message):
    with pytest.raises(PayloadError, match=message):
        parse_chat_request(raw(**fields))


def test_it_refuses_a_body_that_is_not_a_json_object():
    with pytest.raises(PayloadError, match="not JSON"):
        parse_chat_request(b"{nope")
    with pytest.raises(PayloadError, match="JSON object"):
        parse_chat_request(b"[1, 2]")
