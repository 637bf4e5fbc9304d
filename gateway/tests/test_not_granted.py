"""A model the caller may not use is a 404 identical to a model that does not exist, at every door.

Bob (Finance) is granted sim/gpt-4o-mini and the embedding model, not sim/gpt-4o; Charlie is
granted nothing; sim/unapproved-model is granted to Marketing but not approved. The body of each
refusal, with the model's name taken out, must equal the body for a name that exists nowhere:
a 403, or a 400 saying what kind of model it is, would tell a caller that the model exists.
In process: the real `/v1` ASGI app (through httpx and the `openai` SDK), the playground's view,
the simulator upstream.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from audit.models import CallRecord
from audit.writer import writer
from gateway.asgi import GatewayApp
from gateway.keys import apikey_create

pytestmark = pytest.mark.django_db(transaction=True)

NOWHERE = "sim/no-such-model"


@pytest.fixture
def world(sim_cast):
    cast = sim_cast
    cast.charlie.groups.add(cast.research.group)
    keys = {
        "alice": apikey_create(owner=cast.alice, department=cast.marketing, purpose="t")[1],
        "bob": apikey_create(owner=cast.bob, department=cast.finance, purpose="t")[1],
        "charlie": apikey_create(owner=cast.charlie, department=cast.research, purpose="t")[1],
    }
    return cast, keys


def v1(key: str, method: str, path: str, body: dict | None = None) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=GatewayApp())
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.request(
                method, "/v1" + path, json=body, headers={"Authorization": f"Bearer {key}"}
            )

    response = async_to_sync(go)()
    async_to_sync(writer.flush)()
    return response


def shape(response: httpx.Response, model: str) -> tuple[int, str]:
    """Status and body with the model's name taken out (the body echoes what was asked)."""
    return response.status_code, response.text.replace(json.dumps(model)[1:-1], "<model>")


# (caller, endpoint path, a model the caller may not use)
REFUSED = [
    ("bob", "/chat/completions", "sim/gpt-4o"),
    ("bob", "/embeddings", "sim/gpt-4o"),  # ungranted AND the wrong kind: still 404, not 400
    ("bob", "/classifications", "sim/gpt-4o"),
    ("bob", "/summaries", "sim/gpt-4o"),
    ("alice", "/chat/completions", "sim/unapproved-model"),
    ("charlie", "/chat/completions", "chat-default"),  # an alias with no usable target
    ("charlie", "/embeddings", "sim/text-embedding-3-small"),
]


def body_for(path: str, model: str, **extra) -> dict:
    if path == "/chat/completions":
        return {"model": model, "messages": [{"role": "user", "content": "x"}], **extra}
    return {"model": model, "input": "x"}


@pytest.mark.parametrize(("who", "path", "model"), REFUSED)
def test_an_ungranted_model_is_the_same_404_as_one_that_does_not_exist(world, who, path, model):
    _, keys = world
    refused = v1(keys[who], "POST", path, body_for(path, model))
    unknown = v1(keys[who], "POST", path, body_for(path, NOWHERE))
    assert refused.status_code == 404
    assert shape(refused, model) == shape(unknown, NOWHERE)
    assert refused.json()["error"]["code"] == "model_not_found"
    record = CallRecord.objects.get(request_id=refused.headers["x-request-id"])
    assert record.outcome == CallRecord.Outcome.NOT_FOUND and record.llm_id is None


def test_a_streamed_call_to_an_ungranted_model_is_the_same_404(world):
    _, keys = world
    refused = v1(
        keys["bob"],
        "POST",
        "/chat/completions",
        body_for("/chat/completions", "sim/gpt-4o", stream=True),
    )
    unknown = v1(
        keys["bob"],
        "POST",
        "/chat/completions",
        body_for("/chat/completions", NOWHERE, stream=True),
    )
    assert refused.status_code == 404
    assert shape(refused, "sim/gpt-4o") == shape(unknown, NOWHERE)


@pytest.mark.parametrize(
    ("who", "model"),
    [("bob", "sim/gpt-4o"), ("alice", "sim/unapproved-model"), ("charlie", "chat-default")],
)
def test_retrieving_an_ungranted_model_is_the_same_404(world, who, model):
    _, keys = world
    refused = v1(keys[who], "GET", f"/models/{model}")
    unknown = v1(keys[who], "GET", f"/models/{NOWHERE}")
    assert refused.status_code == 404
    assert shape(refused, model) == shape(unknown, NOWHERE)
    listed = {item["id"] for item in v1(keys[who], "GET", "/models").json()["data"]}
    assert model not in listed


def test_the_sdk_raises_not_found_for_an_ungranted_model_and_serves_a_granted_one(world):
    _, keys = world

    async def go():
        transport = httpx.ASGITransport(app=GatewayApp())
        async with httpx.AsyncClient(transport=transport) as http:
            sdk = openai.AsyncOpenAI(
                api_key=keys["bob"], base_url="http://gw/v1", http_client=http, max_retries=0
            )
            ok = await sdk.chat.completions.create(
                model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )
            with pytest.raises(openai.NotFoundError) as chat:
                await sdk.chat.completions.create(
                    model="sim/gpt-4o", messages=[{"role": "user", "content": "x"}]
                )
            with pytest.raises(openai.NotFoundError) as retrieve:
                await sdk.models.retrieve("sim/gpt-4o")
            return ok, chat.value, retrieve.value

    ok, chat, retrieve = async_to_sync(go)()
    async_to_sync(writer.flush)()
    assert ok.choices[0].message.content
    assert chat.code == retrieve.code == "model_not_found"


def test_the_playground_refuses_an_ungranted_model_with_the_same_404(world):
    cast, _ = world

    async def post(model: str):
        client = AsyncClient()
        await client.aforce_login(cast.bob)
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": "x"}],
            "department": cast.finance.pk,
        }
        response = await client.post(
            "/playground/chat/", json.dumps(payload), content_type="application/json"
        )
        body = (
            b"".join([c async for c in response.streaming_content])
            if response.streaming
            else response.content
        )
        return response.status_code, body.decode()

    refused = async_to_sync(post)("sim/gpt-4o")
    unknown = async_to_sync(post)(NOWHERE)
    assert refused[0] == 404
    assert (refused[0], refused[1].replace("sim/gpt-4o", "<model>")) == (
        unknown[0],
        unknown[1].replace(NOWHERE, "<model>"),
    )
