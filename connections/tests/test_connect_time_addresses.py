"""Provider addresses are checked when each connection is opened, for every kind and client:
our pooled client on the hot path, the openai SDK and boto3 off it. Nothing is sent to a
refused address; the simulator (on loopback) counts what reached it."""

from __future__ import annotations

import asyncio

import pytest
from django.core.exceptions import ValidationError

from connections.models import Connection
from connections.providers import build_adapter
from connections.providers.base import ConnectionConfig, ProviderError

REFUSED = "upstream_address_refused"


@pytest.fixture
def sim(simulator, settings):
    simulator.reset()
    # The connections below were saved while private upstreams were allowed; this worker
    # runs with them refused (a stricter setting, or a name that now resolves elsewhere).
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = False
    return simulator


def config(kind: str, base_url: str, **fields) -> ConnectionConfig:
    secrets = {
        "bedrock": {"aws_access_key_id": "AKIA" + "X" * 16, "aws_secret_access_key": "s" * 40}
    }.get(kind, {"api_key": "old-secret-must-not-leave"})
    return ConnectionConfig(
        id=9,
        slug="c",
        kind=kind,
        version=1,
        base_url=base_url,
        secrets=secrets,
        timeout_seconds=5,
        **fields,
    )


def refused(call) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        result = call()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert caught.value.code == REFUSED, caught.value.message
    return caught.value


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "kind, path, extra",
    [
        ("openai", "/v1", {}),
        ("openai_compatible", "/v1", {}),
        ("azure_openai", "", {"options": {"deployments": ["d"]}}),
        ("bedrock", "", {"region": "us-east-1"}),
    ],
)
def test_a_loopback_upstream_saved_earlier_is_refused_when_connecting(sim, kind, path, extra):
    adapter = build_adapter(config(kind, sim.url + path, **extra))
    error = refused(lambda: adapter.chat("d", CHAT))
    assert "MESHGATE_ALLOW_PRIVATE_UPSTREAMS" in error.message
    assert "127.0.0.1" not in error.message
    refused(adapter.test)  # the SDK (openai, Azure) or botocore client: the same check
    if kind != "azure_openai":  # Azure's discovery reads the options, not the network
        refused(adapter.list_models)
    assert sim.requests() == []  # nothing was sent: no secret, no body


def test_bedrocks_control_endpoint_is_checked_like_the_base_url(sim):
    adapter = build_adapter(
        config(
            "bedrock",
            "https://bedrock-runtime.us-east-1.amazonaws.com",
            region="us-east-1",
            options={"control_endpoint_url": sim.url},
        )
    )
    refused(adapter.test)
    assert sim.requests() == []


def test_a_host_name_that_resolves_to_loopback_is_refused_at_connect_time(sim):
    # `localhost` stands for a name that resolved to a public address when it was saved.
    adapter = build_adapter(config("openai_compatible", f"http://localhost:{sim.port}/v1"))
    refused(lambda: adapter.chat("gpt-4o", CHAT))
    refused(adapter.test)
    assert sim.requests() == []


def test_metadata_addresses_are_refused_at_connect_time_even_when_private_is_allowed(settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    adapter = build_adapter(config("openai_compatible", "http://169.254.169.254/v1"))
    error = refused(lambda: adapter.chat("m", CHAT))
    assert "metadata" in error.message


def test_allowed_loopback_still_works_and_kept_alive_connections_are_reused(simulator, settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    simulator.reset()
    allowed = config("openai_compatible", simulator.openai_base)
    adapter = build_adapter(
        ConnectionConfig(**{**allowed.__dict__, "secrets": {"api_key": simulator.api_key}})
    )

    async def two_calls():
        first = await adapter.chat("gpt-4o", CHAT)
        second = await adapter.chat("gpt-4o", CHAT)
        client = adapter._pool.get()
        opened = sum(pool.count for pool in client._pools.values())
        await adapter.aclose()
        return first, second, opened

    first, second, opened = asyncio.run(two_calls())
    assert first.usage.completion_tokens and second.usage.completion_tokens
    assert opened == 1


@pytest.mark.parametrize(
    "region",
    ["x@127.0.0.1:8200/#", "us-east-1.evil.com", "US-EAST-1", "us-east-1/", "127.0.0.1", "east"],
)
def test_a_bedrock_region_must_be_an_aws_region(db, region):
    connection = Connection(name="b", slug="b", kind="bedrock", region=region)
    with pytest.raises(ValidationError) as caught:
        connection.full_clean()
    assert "region" in caught.value.message_dict


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-2", "us-gov-west-1", "us-isob-east-1"])
def test_aws_regions_are_accepted(db, region):
    Connection(name="b", slug="b", kind="bedrock", region=region).full_clean()


def test_a_bedrock_call_with_a_region_saved_before_validation_goes_nowhere(sim):
    adapter = build_adapter(config("bedrock", "", region="x@127.0.0.1:8200/#"))
    with pytest.raises(ProviderError) as caught:
        asyncio.run(adapter.chat("m", CHAT))
    assert caught.value.code == "invalid_connection"


@pytest.mark.parametrize(
    "url, allow_private",
    [
        ("http://169.254.169.254/latest", True),
        ("http://127.0.0.1:8200", False),
        ("file:///etc/passwd", True),
    ],
)
def test_url_like_options_are_validated_like_the_base_url(db, settings, url, allow_private):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = allow_private
    connection = Connection(
        name="b",
        slug="b",
        kind="bedrock",
        region="us-east-1",
        options={"control_endpoint_url": url},
    )
    with pytest.raises(ValidationError) as caught:
        connection.full_clean()
    assert "control_endpoint_url" in str(caught.value.message_dict["options"])
