"""The upstream HTTP client in an enterprise network, both implementations (lean, aiohttp):
a private CA, mutual TLS, an HTTP CONNECT proxy (with and without credentials), NO_PROXY,
and failures named by their cause. Real servers on loopback; the CA is made by openssl."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from meshsite.lib import http
from meshsite.lib.http import Proxies
from meshsite.tests.network import PKI, Proxy, TLSUpstream, make_pki
from simulator import create_app

KEY = "sim-secret-key-not-real"
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
HEADERS = http.encode_headers(
    {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
)

pytestmark = pytest.mark.parametrize("implementation", http.IMPLEMENTATIONS)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def upstream(pki):
    server = TLSUpstream(create_app(api_key=KEY), pki.path("server.pem"), pki.path("server.key"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_upstream(pki):
    server = TLSUpstream(
        create_app(api_key=KEY),
        pki.path("server.pem"),
        pki.path("server.key"),
        client_ca=pki.path("client-ca.pem"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def wrong_name_upstream(pki):
    server = TLSUpstream(create_app(api_key=KEY), pki.path("other.pem"), pki.path("other.key"))
    yield server
    server.stop()


@pytest.fixture()
def proxy():
    server = Proxy()
    yield server
    server.stop()


@pytest.fixture()
def locked_proxy():
    server = Proxy(credentials="egress:not-a-real-password")
    yield server
    server.stop()


async def _post(implementation, url, *, stream=False, **options):
    client = http.client(implementation=implementation, connect_timeout=5, timeout=10, **options)
    try:
        response = await client.request(
            "POST", url + "/chat/completions", content=BODY, headers=HEADERS, stream=stream
        )
        if stream:
            body = await response.aread()
            await response.aclose()
            return response.status_code, body
        return response.status_code, response.content
    finally:
        await client.aclose()


def post(implementation, url, **options):
    return asyncio.run(_post(implementation, url, **options))


def failure(implementation, url, **options) -> http.TransportError:
    with pytest.raises(http.TransportError) as raised:
        post(implementation, url, **options)
    return raised.value


def test_a_private_ca_is_refused_by_default_and_named(implementation, upstream):
    error = failure(implementation, upstream.url())
    assert error.cause == "tls: unknown CA"


def test_a_ca_bundle_file_makes_the_private_ca_trusted(implementation, upstream, pki):
    context = http.tls_context(ca_bundles=(pki.path("ca.pem"),))
    status, body = post(implementation, upstream.url(), ssl_context=context)
    assert status == 200 and b"chat.completion" in body


def test_a_ca_in_pem_makes_the_private_ca_trusted(implementation, upstream, pki):
    context = http.tls_context(ca_pem=pki.text("ca.pem"))
    assert post(implementation, upstream.url(), ssl_context=context)[0] == 200


def test_a_certificate_for_another_name_is_a_hostname_mismatch(
    implementation, wrong_name_upstream, pki
):
    context = http.tls_context(ca_pem=pki.text("ca.pem"))
    error = failure(implementation, wrong_name_upstream.url(), ssl_context=context)
    assert error.cause == "tls: hostname mismatch"


def test_mutual_tls_needs_the_client_certificate(implementation, mtls_upstream, pki):
    with_cert = http.tls_context(
        ca_pem=pki.text("ca.pem"),
        client_cert_pem=pki.text("client.pem"),
        client_key_pem=pki.text("client.key"),
    )
    assert post(implementation, mtls_upstream.url(), ssl_context=with_cert)[0] == 200
    without = http.tls_context(ca_pem=pki.text("ca.pem"))
    with pytest.raises(http.TransportError):
        post(implementation, mtls_upstream.url(), ssl_context=without)


def test_a_tls_upstream_goes_through_the_proxy_in_a_connect_tunnel(
    implementation, upstream, pki, proxy
):
    context = http.tls_context(ca_pem=pki.text("ca.pem"))
    status, body = post(
        implementation,
        upstream.url(),
        ssl_context=context,
        proxies=Proxies.fixed(proxy.url),
        stream=True,
    )
    assert status == 200 and body
    assert proxy.connects == [f"localhost:{upstream.port}"]


def test_a_plain_http_upstream_goes_through_the_proxy_in_absolute_form(
    implementation, simulator, proxy
):
    status, _ = post(implementation, simulator.openai_base, proxies=Proxies.fixed(proxy.url))
    assert status == 200
    assert proxy.forwarded == [simulator.openai_base + "/chat/completions"]


@pytest.mark.parametrize("no_proxy", ["localhost", ".localhost", "127.0.0.0/8,x.invalid", "*"])
def test_the_environments_proxy_is_used_unless_no_proxy_matches(
    implementation, upstream, pki, proxy, no_proxy
):
    context = http.tls_context(ca_pem=pki.text("ca.pem"))
    env = {"https_proxy": proxy.url, "HTTP_PROXY": proxy.url}
    assert (
        post(
            implementation,
            upstream.url(),
            ssl_context=context,
            proxies=Proxies.from_environment(env),
        )[0]
        == 200
    )
    assert len(proxy.connects) == 1
    bypass = Proxies.from_environment({**env, "NO_PROXY": no_proxy})
    host = "127.0.0.1" if "/" in no_proxy else "localhost"
    assert post(implementation, upstream.url(host), ssl_context=context, proxies=bypass)[0] == 200
    assert len(proxy.connects) == 1  # bypassed


def test_all_proxy_serves_when_nothing_more_specific_is_set(implementation, simulator, proxy):
    proxies = Proxies.from_environment({"ALL_PROXY": proxy.url})
    assert post(implementation, simulator.openai_base, proxies=proxies)[0] == 200
    assert len(proxy.forwarded) == 1


def test_a_proxy_that_wants_credentials_refuses_without_them(
    implementation, upstream, pki, locked_proxy
):
    context = http.tls_context(ca_pem=pki.text("ca.pem"))
    error = failure(
        implementation,
        upstream.url(),
        ssl_context=context,
        proxies=Proxies.fixed(locked_proxy.url),
    )
    assert error.cause == "proxy refused (407)"
    assert locked_proxy.connects == []
    proxies = Proxies.fixed(
        locked_proxy.url.replace("//", "//egress@"), password="not-a-real-password"
    )
    assert post(implementation, upstream.url(), ssl_context=context, proxies=proxies)[0] == 200
    assert locked_proxy.connects == [f"localhost:{upstream.port}"]


def test_the_address_rules_apply_to_the_upstream_not_the_proxy(
    implementation, upstream, pki, proxy
):
    def refuse_all(infos):
        raise http.AddressRefused("refused by the test's rule")

    context = http.tls_context(ca_pem=pki.text("ca.pem"))
    proxies = Proxies.fixed(proxy.url)  # the proxy is on loopback, the rule refuses loopback
    error = failure(
        implementation,
        upstream.url(),
        ssl_context=context,
        proxies=proxies,
        address_check=refuse_all,
    )
    assert isinstance(error, http.AddressRefused)
    assert proxy.connects == []
    # A name only the proxy can resolve: this host cannot check it; the proxy is asked.
    error = failure(
        implementation,
        "https://upstream.invalid/v1",
        ssl_context=context,
        proxies=proxies,
        address_check=refuse_all,
    )
    assert proxy.connects == ["upstream.invalid:443"]
    assert error.cause == "proxy refused (502)"


def test_connection_failures_name_their_cause(implementation):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    assert failure(implementation, f"http://127.0.0.1:{port}/v1").cause == "connect refused"
    assert failure(implementation, "http://name.invalid/v1").cause == "dns"
    proxies = Proxies.fixed(f"http://127.0.0.1:{port}")
    error = failure(implementation, "https://localhost:1/v1", proxies=proxies)
    assert error.cause == "proxy: connect refused"


def test_ssl_cert_file_is_honoured_as_the_system_trust_store(
    implementation, upstream, pki, monkeypatch
):
    from meshsite.lib.http import trust

    monkeypatch.setenv("SSL_CERT_FILE", pki.path("ca.pem"))
    trust._base_context.cache_clear()
    try:
        assert post(implementation, upstream.url())[0] == 200
    finally:
        monkeypatch.delenv("SSL_CERT_FILE")
        trust._base_context.cache_clear()
