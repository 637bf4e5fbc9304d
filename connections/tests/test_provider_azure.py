"""Azure OpenAI: deployment URLs, api-version and api-key, through the adapter and the SDK."""

from __future__ import annotations

import asyncio
import hashlib

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from connections.providers import build_adapter
from connections.providers.azure import AzureOpenAIAdapter
from connections.providers.base import ConnectionConfig, ProviderError
from simulator.text import count_tokens


def split_frames(chunk: bytes) -> list[bytes]:
    """The SSE frames in one chunk of a stream (a chunk holds what one upstream read brought)."""
    return [event + b"\n\n" for event in chunk.split(b"\n\n") if event]


@pytest.fixture
def sim(simulator):
    simulator.reset()
    return simulator


def azure_config(sim, *, key=None, base=None, **options) -> ConnectionConfig:
    return ConnectionConfig(
        id=2,
        slug="azure",
        kind="azure_openai",
        version=1,
        base_url=base or sim.url,
        api_version="2024-10-21",
        options=options,
        secrets={"api_key": key or sim.api_key},
        timeout_seconds=5,
    )


def body(text="Hello Azure"):
    return {"model": "azure/prod-gpt4o", "messages": [{"role": "user", "content": text}]}


def test_the_sdk_reaches_the_simulators_azure_paths(sim):
    client = openai.AzureOpenAI(
        api_key=sim.api_key, azure_endpoint=sim.url, api_version="2024-10-21", max_retries=0
    )
    completion = client.chat.completions.create(model="prod-gpt4o", messages=body()["messages"])
    assert isinstance(completion, ChatCompletion) and completion.model == "prod-gpt4o"
    chunks = list(
        client.chat.completions.create(
            model="prod-gpt4o",
            messages=body()["messages"],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    assert len(client.embeddings.create(model="embed", input="x").data[0].embedding) == 64
    logged = sim.requests()[0]
    assert logged["path"] == "/openai/deployments/prod-gpt4o/chat/completions"
    assert logged["query"] == "api-version=2024-10-21"
    assert (
        logged["headers"]["api-key"] == "sha256:" + hashlib.sha256(sim.api_key.encode()).hexdigest()
    )


def test_the_simulator_wants_an_api_version_and_the_right_key(sim):
    no_version = openai.AzureOpenAI(
        api_key=sim.api_key, azure_endpoint=sim.url, api_version="", max_retries=0
    )
    with pytest.raises(openai.NotFoundError):
        no_version.chat.completions.create(model="d", messages=body()["messages"])
    wrong_key = openai.AzureOpenAI(
        api_key="nope", azure_endpoint=sim.url, api_version="2024-10-21", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        wrong_key.chat.completions.create(model="d", messages=body()["messages"])


def test_the_adapter_posts_to_the_deployment_with_api_key_and_version(sim):
    adapter = build_adapter(azure_config(sim, base=sim.url + "/openai/"))
    assert isinstance(adapter, AzureOpenAIAdapter)
    result = asyncio.run(adapter.chat("prod-gpt4o", body()))
    assert result.parsed["model"] == "prod-gpt4o"
    assert result.usage.prompt_tokens == count_tokens("Hello Azure")
    [logged] = sim.requests()
    assert logged["path"] == "/openai/deployments/prod-gpt4o/chat/completions"
    assert logged["query"] == "api-version=2024-10-21"
    assert "authorization" not in logged["headers"]


def test_the_adapter_streams_and_embeds_through_deployments(sim):
    adapter = build_adapter(azure_config(sim))

    async def go():
        stream = await adapter.open_stream("prod-gpt4o", {**body(), "stream": True})
        frames = [f async for chunk in stream for f in split_frames(chunk)]
        await stream.aclose()
        embedded = await adapter.embed("embed-small", {"input": ["one", "two"]})
        await adapter.aclose()
        return stream, frames, embedded

    stream, frames, embedded = asyncio.run(go())
    assert all(orjson.loads(f[6:])["choices"] for f in frames)  # usage chunk not forwarded
    assert stream.usage.completion_tokens == count_tokens(stream.message["content"])
    assert len(embedded.parsed["data"]) == 2
    assert sim.requests()[-1]["path"] == "/openai/deployments/embed-small/embeddings"


def test_a_wrong_azure_key_is_an_upstream_authentication_failure(sim):
    adapter = build_adapter(azure_config(sim, key="azure-wrong-key"))
    with pytest.raises(ProviderError) as caught:
        asyncio.run(adapter.chat("prod-gpt4o", body()))
    assert (caught.value.status, caught.value.code) == (502, "upstream_auth_failed")
    assert "azure-wrong-key" not in str(caught.value)


def test_azure_throttling_is_retryable_with_retry_after(sim):
    sim.script("prod-gpt4o", [{"status": 429, "retry_after": 4}])
    with pytest.raises(ProviderError) as caught:
        asyncio.run(build_adapter(azure_config(sim)).chat("prod-gpt4o", body()))
    assert caught.value.retryable and caught.value.retry_after == 4


def test_discovery_lists_the_deployments_entered_on_the_connection(sim):
    adapter = build_adapter(
        azure_config(
            sim,
            deployments=[
                "prod-gpt4o",
                {"name": "embedder", "model": "text-embedding-3-large"},
                {"name": "custom", "model": "x", "kind": "chat"},
                {"model": "nameless"},
            ],
        )
    )
    found = [(m.name, m.kind) for m in adapter.list_models()]
    assert found == [("prod-gpt4o", "chat"), ("embedder", "embedding"), ("custom", "chat")]


def test_the_connection_test_makes_a_one_token_call_through_the_sdk(sim):
    adapter = build_adapter(azure_config(sim, deployments=["prod-gpt4o"]))
    assert "prod-gpt4o" in adapter.test()
    logged = sim.requests()[0]
    assert logged["body"]["max_tokens"] == 1 and logged["path"].endswith("/chat/completions")
    with pytest.raises(ProviderError) as caught:
        build_adapter(azure_config(sim)).test()
    assert caught.value.code == "no_deployments"
    bad = build_adapter(azure_config(sim, key="bad-azure-key", deployments=["prod-gpt4o"]))
    with pytest.raises(ProviderError) as caught:
        bad.test()
    assert caught.value.code == "upstream_auth_failed" and "bad-azure-key" not in str(caught.value)
