"""The three doors on a local Hugging Face model (tiny, built by conftest's `local_models`):
the Messages, Responses and legacy completions SDK calls, plain and streamed."""

from __future__ import annotations

import time

import anthropic
import openai

from gateway.tests.test_e2e_local_models import local_gateway  # noqa: F401

MODEL = "local/tiny-chat"


def test_each_door_answers_from_a_local_model_plain_and_streamed(local_gateway):  # noqa: F811
    gw = local_gateway
    sdk = openai.OpenAI(api_key=gw.keys["alice"], base_url=gw.url, max_retries=0, timeout=120)
    # The process's first call imports transformers and loads the model: on a loaded machine
    # the lookups behind it may outwait MESHGATE_AUDIT_WAIT_SECONDS (a 503) until it is done.
    deadline = time.monotonic() + 120
    while True:
        try:
            sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
            break
        except openai.InternalServerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    completion = sdk.completions.create(model=MODEL, prompt="Hello", max_tokens=5)
    assert completion.usage.completion_tokens > 0
    streamed = "".join(
        chunk.choices[0].text
        for chunk in sdk.completions.create(model=MODEL, prompt="Hello", max_tokens=5, stream=True)
        if chunk.choices
    )
    assert streamed == completion.choices[0].text  # greedy decoding: the same tokens
    response = sdk.responses.create(model=MODEL, input="Hello", max_output_tokens=5)
    assert response.usage.output_tokens > 0
    # Cut at max_output_tokens, a stream ends with response.incomplete, as the API's does.
    events = list(
        sdk.responses.create(model=MODEL, input="Hello", max_output_tokens=5, stream=True)
    )
    assert events[-1].type == f"response.{response.status}"
    assert events[-1].response.output_text == response.output_text
    claude = anthropic.Anthropic(
        api_key=gw.keys["alice"], base_url=gw.url.removesuffix("/v1"), max_retries=0, timeout=120
    )
    message = claude.messages.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Hello"}]
    )
    assert message.usage.output_tokens > 0
    with claude.messages.stream(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        assert stream.get_final_message().content[0].text == message.content[0].text
    records = gw.records("model_requested = 'local/tiny-chat' AND outcome = 'ok'")
    assert {"completions", "responses", "messages"} <= {r["endpoint"] for r in records}
