"""Ordinary tool and structured-output schemas pass; redirect fields at the top still do not.

Through the real openai SDK against a real Meshgate process and the simulator: a CRM,
HTTP or AWS tool whose parameters are named `organization`, `headers`, `api_key`,
`aws_region`... is data for the model, not a way to point Meshgate elsewhere.
"""

from __future__ import annotations

import openai
import pytest

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401
from gateway.validation import REDIRECT_FIELDS

# Every refused name, plus prefixed ones, as properties of one schema.
NAMES = [*sorted(REDIRECT_FIELDS), "aws_region", "aws_access_key_id", "azure_endpoint"]
SCHEMA = {
    "type": "object",
    "properties": {name: {"type": "string", "description": name} for name in NAMES},
    "required": ["organization"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "crm_lookup", "description": "Find a contact", "parameters": SCHEMA},
    }
]
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "contact", "schema": SCHEMA, "strict": False},
}
MESSAGES = [{"role": "user", "content": "Find the contact at ACME"}]


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(api_key=gw.keys["alice"], base_url=gw.url, max_retries=0, timeout=20)


@pytest.mark.parametrize(
    "model",
    [
        "sim/gpt-4o-mini",
        "kind-azure-openai/chat-deployment",
        "kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0",
    ],
)
def test_tool_schemas_naming_every_refused_field_are_answered(gateway, simulator, model):
    simulator.reset()
    completion = client(gateway).chat.completions.create(
        model=model, messages=MESSAGES, tools=TOOLS, metadata={"organization": "acme"}
    )
    assert completion.choices[0].message is not None
    sent = simulator.requests()[-1]["body"]
    text = str(sent)
    assert all(name in text for name in NAMES)  # the schema reached the provider whole


def test_a_streamed_call_with_a_tool_schema_is_answered(gateway):
    stream = client(gateway).chat.completions.create(
        model="sim/gpt-4o-mini", messages=MESSAGES, tools=TOOLS, stream=True
    )
    chunks = list(stream)
    assert chunks and any(chunk.choices for chunk in chunks)


def test_a_structured_output_schema_naming_every_refused_field_is_answered(gateway, simulator):
    simulator.reset()
    completion = client(gateway).chat.completions.create(
        model="sim/gpt-4o-mini", messages=MESSAGES, response_format=RESPONSE_FORMAT
    )
    assert completion.choices[0].message.content is not None
    assert simulator.requests()[-1]["body"]["response_format"] == RESPONSE_FORMAT


@pytest.mark.parametrize("field", ["organization", "base_url", "headers", "aws_region"])
def test_the_same_names_at_the_top_level_are_still_refused(gateway, simulator, field):
    simulator.reset()
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway).chat.completions.create(
            model="sim/gpt-4o-mini", messages=MESSAGES, tools=TOOLS, extra_body={field: "x"}
        )
    assert raised.value.code == "forbidden_field"
    assert simulator.requests() == []
