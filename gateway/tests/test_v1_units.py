"""The hot path's pure parts: request checks, error mapping, backoff."""

from __future__ import annotations

import orjson
import pytest

from connections.providers.base import ProviderError
from gateway.errors import from_provider, scrub, unauthorized
from gateway.router import backoff
from gateway.validation import check_request, find_redirect_field


@pytest.mark.parametrize(
    "body, path",
    [
        ({"api_base": "x"}, "api_base"),
        ({"AWS_SECRET_ACCESS_KEY": "x"}, "AWS_SECRET_ACCESS_KEY"),
        ({"messages": [{"role": "user", "extra_body": {}}]}, "messages[0].extra_body"),
        ({"stream_options": {"azure_deployment": "x"}}, "stream_options.azure_deployment"),
    ],
)
def test_redirect_fields_are_found_where_they_can_redirect(body, path):
    assert find_redirect_field(body) == path


def test_keys_inside_schemas_content_and_metadata_are_data_not_routing():
    schema = {"type": "object", "properties": {"organization": {}, "aws_region": {}}}
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "base_url"}]}],
        "tools": [{"type": "function", "function": {"name": "crm", "parameters": schema}}],
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
        "metadata": {"headers": "x", "api_key": "y"},
        "extra": {"a": {"b": [{"c": {"AWS_SECRET_ACCESS_KEY": "x"}}]}},
    }
    assert find_redirect_field(body) is None


def test_ordinary_requests_have_no_redirect_field():
    body = {"model": "m", "messages": [{"role": "user", "content": "base_url api_key"}]}
    assert find_redirect_field(body) is None


def test_a_pathologically_deep_body_is_not_walked():
    body: dict = {}
    node = body
    for _ in range(10_000):
        node["x"] = {}
        node = node["x"]
    assert find_redirect_field(body) is None


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user"}], "temperature": True},
        {"model": "m", "messages": [{"role": "user"}], "top_p": 2},
        {"model": "m", "messages": [{"role": "user"}], "max_completion_tokens": 0},
        {"model": "m", "messages": [{"role": "user"}], "stop": [1]},
        {"model": "m", "messages": [{"role": "user"}], "tools": "x"},
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
    ],
)
def test_malformed_chat_requests_are_400(body):
    with pytest.raises(Exception) as raised:
        check_request("chat.completions", body)
    assert raised.value.status == 400


@pytest.mark.parametrize("value", ["", [], [True], [["a"]], 3])
def test_malformed_embedding_inputs_are_400(value):
    with pytest.raises(Exception) as raised:
        check_request("embeddings", {"model": "m", "input": value})
    assert raised.value.status == 400


def test_valid_embedding_inputs_pass():
    for value in ("x", ["a", "b"], [1, 2], [[1, 2], [3]]):
        check_request("embeddings", {"model": "m", "input": value})


def test_provider_errors_are_scrubbed_of_secrets_urls_and_hosts():
    error = from_provider(
        ProviderError(
            "failed calling https://internal.corp:8443/v1 with sk-SECRET-123 at 10.1.2.3:9000",
            status=502,
            retryable=True,
        ),
        ["sk-SECRET-123"],
    )
    assert error.status == 502
    assert "sk-SECRET" not in error.message
    assert "internal.corp" not in error.message and "10.1.2.3" not in error.message
    body = orjson.loads(error.body())
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_a_provider_refusing_our_credentials_is_not_the_callers_401():
    error = from_provider(ProviderError("no", status=401))
    assert error.status == 502 and error.code == "upstream_auth_failed"


def test_a_provider_rate_limit_keeps_its_status_and_retry_after():
    error = from_provider(
        ProviderError("slow down", status=429, code="rate_limited", retry_after=3.0)
    )
    assert error.status == 429 and error.outcome == "rate_limited" and error.retry_after == 3.0


def test_the_401_never_varies():
    assert unauthorized().body() == unauthorized().body()


def test_scrub_shortens_long_messages():
    assert len(scrub("x" * 5000)) == 500


def test_backoff_honours_retry_after_within_the_budget_and_jitters_otherwise():
    assert backoff(0, 1.5, 10.0) == 1.5
    assert backoff(0, 3600, 10.0) is None  # not worth waiting: the next target, or the 429
    assert backoff(0, 5, 4.0) is None
    delays = {backoff(2, None, 10.0) for _ in range(50)}
    assert all(0 <= delay <= 1.0 for delay in delays) and len(delays) > 1
    assert backoff(2, None, 0.0) == 0.0
