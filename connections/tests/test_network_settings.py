"""A connection's network settings in the admin and the services: proxy, CA, client
certificate (its key write-only), headers (secret ones write-only), verification off shown
in red; and connection failures logged at most once a minute per upstream."""

from __future__ import annotations

import logging

import pytest
from django.urls import reverse

from connections.models import Connection
from connections.providers import failures
from connections.providers.base import ConnectionConfig
from connections.providers.transport import transport_for
from connections.tests.test_admin import connection_form


def private_key_pem() -> str:
    """A throwaway private key made for the test: no key material is committed."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


@pytest.fixture(autouse=True)
def _local_upstreams_allowed(settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True


@pytest.fixture
def admin_client(client, cast):
    client.force_login(cast.admin)
    return client


def test_network_secrets_are_encrypted_and_never_shown_again(admin_client):
    response = admin_client.post(
        reverse("admin:connections_connection_add"),
        connection_form(
            proxy_url="http://egress@proxy.corp.example:3128",
            extra_headers='{"X-Tenant": "finance"}',
            proxy_password="proxy-pass-not-real",
            secret_headers="X-Gateway-Token: gw-token-not-real",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    connection = Connection.objects.get(slug="vllm")
    secrets = connection.get_secrets()
    assert secrets["proxy_password"] == "proxy-pass-not-real"
    assert secrets["secret_headers"] == "X-Gateway-Token: gw-token-not-real"
    assert "proxy-pass-not-real" not in connection.secrets_ciphertext
    page = admin_client.get(reverse("admin:connections_connection_change", args=[connection.pk]))
    html = page.content.decode()
    assert "proxy-pass-not-real" not in html and "gw-token-not-real" not in html
    assert "via proxy proxy.corp.example:3128 (from this connection)" in html


def test_a_failed_submit_does_not_echo_a_typed_key_or_secret_header(admin_client):
    key = private_key_pem()
    body = key.splitlines()[1]  # a line of the key's own material
    response = admin_client.post(
        reverse("admin:connections_connection_add"),
        connection_form(
            base_url="http://169.254.169.254/v1",
            client_key=key,
            secret_headers="X-Token: gw-token-not-real",
        ),
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert body not in html and "gw-token-not-real" not in html


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("proxy_url", "socks5://proxy:1080", "http://host:port"),
        ("proxy_url", "http://user:pw@proxy:3128", "password"),
        ("ca_certificate", "not a certificate", "PEM"),
        ("extra_headers", '{"Authorization": "x"}', "set by Meshgate"),
        ("extra_headers", '{"X-A": "line\\nbreak"}', "one line"),
        ("secret_headers", "no colon here", "Name: value"),
    ],
)
def test_unusable_network_settings_are_refused_clearly(admin_client, field, value, message):
    response = admin_client.post(
        reverse("admin:connections_connection_add"), connection_form(**{field: value})
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Connection.objects.filter(slug="vllm").exists()


def test_verification_off_is_shown_in_red_and_proxies_from_the_environment(
    admin_client, cast, monkeypatch
):
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy.example:8080")
    monkeypatch.setenv("NO_PROXY", ".internal.example")
    connection = Connection.objects.create(
        name="Internal", slug="internal", kind="openai_compatible",
        base_url="https://vllm.internal.example/v1", skip_tls_verify=True,
    )  # fmt: skip
    html = admin_client.get(
        reverse("admin:connections_connection_change", args=[connection.pk])
    ).content.decode()
    assert 'style="color:#ba2121"' in html and "CERTIFICATE VERIFICATION IS OFF" in html
    assert "direct (NO_PROXY matches)" in html
    html = admin_client.get(
        reverse("admin:connections_connection_change", args=[cast.connection.pk])
    ).content.decode()
    assert "direct (no proxy for http)" in html  # the simulator is plain HTTP
    monkeypatch.setenv("HTTP_PROXY", "http://env-proxy.example:8080")
    html = admin_client.get(
        reverse("admin:connections_connection_change", args=[cast.connection.pk])
    ).content.decode()
    assert "via proxy env-proxy.example:8080 (from the environment)" in html


def test_the_transport_carries_plain_and_secret_headers_and_the_proxy_password():
    config = ConnectionConfig(
        id=1, slug="x", kind="openai_compatible", version=1,
        proxy_url="http://egress@proxy.example:3128", extra_headers={"X-Tenant": "a"},
        secrets={"proxy_password": "pw-not-real", "secret_headers": "X-Token: t-not-real"},
    )  # fmt: skip
    transport = transport_for(config)
    assert transport.headers == {"X-Tenant": "a", "X-Token": "t-not-real"}
    proxy = transport.proxies.for_origin("https", "api.example", 443)
    assert proxy is not None and b"Basic ZWdyZXNzOnB3LW5vdC1yZWFs" in proxy.authorization
    assert "t-not-real" in config.secret_values()  # scrubbed from any text shown


def test_a_failing_upstream_is_logged_once_a_minute(caplog):
    caplog.set_level(logging.WARNING, logger="meshgate.upstream")
    url = "https://vllm.example:8443/v1/chat/completions"
    assert failures.note("conn-a", url, "tls: unknown CA", now=1000.0)
    assert not failures.note("conn-a", url, "tls: unknown CA", now=1030.0)
    assert failures.note("conn-b", url, "dns", now=1030.0)  # another upstream
    assert failures.note("conn-a", url, "tls: unknown CA", now=1061.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "meshgate.upstream"]
    assert len(lines) == 3
    assert "tls: unknown CA" in lines[0] and "https://vllm.example:8443" in lines[0]


def test_an_unusable_proxy_variable_fails_calls_clearly_instead_of_going_around_it(monkeypatch):
    import asyncio

    from connections.providers import ProviderError, build_adapter

    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.example:1080")
    adapter = build_adapter(
        ConnectionConfig(id=1, slug="x", kind="openai", version=1, secrets={"api_key": "k"})
    )
    with pytest.raises(ProviderError) as raised:
        asyncio.run(adapter.chat("gpt-4o-mini", {"messages": []}))
    assert raised.value.code == "invalid_connection"
    assert "http://host:port" in raised.value.message
