"""Meshgate in an enterprise network, end to end with the real openai SDK as the client:
TLS upstreams behind a private CA (openssl-made at test time) trusted through
MESHGATE_CA_BUNDLE or the connection's own CA and refused without either, mutual TLS, an
HTTP CONNECT egress proxy from the environment (and NO_PROXY past it) or the connection's
own proxy with credentials, failures named by cause in the answer and the record, and
Test connection agreeing with calls."""

from __future__ import annotations

import json

import openai
import pytest

from gateway.tests.test_e2e_support import make_gateway
from meshsite.tests.network import PKI, Proxy, TLSUpstream, make_pki
from simulator import create_app

SIM_KEY = "sim-secret-key-not-real"
PROXY_PASSWORD = "egress-pass-not-real"
MESSAGES = [{"role": "user", "content": "Say hello"}]

ADD = r"""
import json, sys
from django.contrib.auth.models import User
from guardian.shortcuts import assign_perm
from connections.models import LLM, Connection
spec = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def upstreams(pki):
    plain = TLSUpstream(create_app(api_key=SIM_KEY), pki.path("server.pem"), pki.path("server.key"))
    mutual = TLSUpstream(
        create_app(api_key=SIM_KEY),
        pki.path("server.pem"),
        pki.path("server.key"),
        client_ca=pki.path("client-ca.pem"),
    )
    yield plain, mutual
    plain.stop()
    mutual.stop()


@pytest.fixture(scope="module")
def proxies():
    open_proxy, locked = Proxy(), Proxy(credentials=f"egress:{PROXY_PASSWORD}")
    yield open_proxy, locked
    open_proxy.stop()
    locked.stop()


def _connection(slug, url, *, secrets=None, **fields) -> str:
    return (
        f"c = Connection(name={slug!r}, slug={slug!r}, kind='openai_compatible', "
        f"base_url={url!r}, timeout_seconds=10, max_retries=0, **{fields!r})\n"
        f"c.set_secrets({{'api_key': {SIM_KEY!r}, **{(secrets or {})!r}}})\n"
        "c.full_clean()\nc.save()\n"
        "m = LLM.objects.create(connection=c, name='gpt-4o-mini', kind='chat', approved=True)\n"
        "assign_perm('connections.use_llm', User.objects.get(username='alice').groups.first(), m)\n"
    )


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory, pki, upstreams, proxies):
    plain, mutual = upstreams
    _, locked = proxies
    gw = make_gateway(simulator, tmp_path_factory.mktemp("gw"))
    ca = pki.text("ca.pem")
    code = ADD + "".join(
        [
            _connection("bare", plain.url()),
            _connection("own-ca", plain.url(), ca_certificate=ca, proxy_url="none"),
            _connection(
                "mtls",
                mutual.url(),
                ca_certificate=ca,
                client_certificate=pki.text("client.pem"),
                proxy_url="none",
                secrets={"client_key": pki.text("client.key")},
            ),
            _connection("mtls-no-cert", mutual.url(), ca_certificate=ca, proxy_url="none"),
            _connection(
                "locked-proxy",
                plain.url(),
                ca_certificate=ca,
                proxy_url=f"http://egress@127.0.0.1:{locked.port}",
                secrets={"proxy_password": PROXY_PASSWORD},
            ),
            _connection(
                "locked-no-pass",
                plain.url(),
                ca_certificate=ca,
                proxy_url=f"http://egress@127.0.0.1:{locked.port}",
            ),
            _connection("unverified", plain.url(), skip_tls_verify=True, proxy_url="none"),
            _connection(
                "headers",
                plain.url(),
                ca_certificate=ca,
                proxy_url="none",
                extra_headers={"X-Tenant": "finance"},
                secrets={"secret_headers": "X-Gateway-Token: gw-token-not-real"},
            ),
        ]
    )
    gw.run(code)
    gw.start()  # no CA bundle, no proxy variables
    yield gw
    gw.stop()


def sdk(gw, port=None) -> openai.OpenAI:
    url = gw.url if port is None else f"http://127.0.0.1:{port}/v1"
    return openai.OpenAI(api_key=gw.keys["alice"], base_url=url, max_retries=0, timeout=30)


def chat_and_stream(client, model) -> None:
    completion = client.chat.completions.create(model=model, messages=MESSAGES)
    assert completion.choices[0].message.content
    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def failed_call(gw, model, port=None) -> tuple[openai.APIStatusError, dict]:
    with pytest.raises(openai.APIStatusError) as raised:
        sdk(gw, port).chat.completions.create(model=model, messages=MESSAGES)
    record = gw.record(raised.value.response.headers["x-request-id"], outcome_not="interrupted")
    return raised.value, record


def test_a_private_ca_is_refused_without_trust_and_the_cause_is_named(gateway):
    error, record = failed_call(gateway, "bare/gpt-4o-mini")
    assert error.status_code == 502
    assert "tls: unknown CA" in error.message
    assert "tls: unknown CA" in record["error_message"]
    assert json.loads(record["attempts"])[0]["cause"] == "tls: unknown CA"


def test_the_connections_own_ca_makes_calls_and_streams_work(gateway):
    chat_and_stream(sdk(gateway), "own-ca/gpt-4o-mini")


def test_meshgate_ca_bundle_makes_the_private_ca_trusted(gateway, pki):
    process, port = gateway.start(extra_env={"MESHGATE_CA_BUNDLE": pki.path("ca.pem")})
    try:
        chat_and_stream(sdk(gateway, port), "bare/gpt-4o-mini")
    finally:
        process.terminate()
        process.wait(10)


def test_a_connection_that_skips_verification_says_so_in_every_record(gateway):
    response = sdk(gateway).chat.completions.with_raw_response.create(
        model="unverified/gpt-4o-mini", messages=MESSAGES
    )
    record = gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert record["outcome"] == "ok"
    assert json.loads(record["attempts"])[0]["tls_verified"] is False
    trusted = sdk(gateway).chat.completions.with_raw_response.create(
        model="own-ca/gpt-4o-mini", messages=MESSAGES
    )
    record = gateway.record(trusted.headers["x-request-id"], outcome_not="interrupted")
    assert "tls_verified" not in json.loads(record["attempts"])[0]


def test_mutual_tls_with_the_client_certificate_and_without(gateway):
    chat_and_stream(sdk(gateway), "mtls/gpt-4o-mini")
    error, record = failed_call(gateway, "mtls-no-cert/gpt-4o-mini")
    assert error.status_code == 502 and record["outcome"] == "upstream_error"


def test_the_environments_proxy_carries_calls_and_no_proxy_bypasses_it(gateway, pki, proxies):
    open_proxy, _ = proxies
    env = {"MESHGATE_CA_BUNDLE": pki.path("ca.pem"), "HTTPS_PROXY": open_proxy.url}
    process, port = gateway.start(extra_env=env)
    try:
        before = len(open_proxy.connects)
        chat_and_stream(sdk(gateway, port), "bare/gpt-4o-mini")
        assert len(open_proxy.connects) > before  # the proxy saw the calls
        assert all(target.startswith("localhost:") for target in open_proxy.connects)
    finally:
        process.terminate()
        process.wait(10)
    process, port = gateway.start(extra_env={**env, "no_proxy": "localhost,10.0.0.0/8"})
    try:
        before = len(open_proxy.connects)
        chat_and_stream(sdk(gateway, port), "bare/gpt-4o-mini")
        assert len(open_proxy.connects) == before  # NO_PROXY: straight to the upstream
    finally:
        process.terminate()
        process.wait(10)


def test_a_proxy_that_requires_credentials(gateway, proxies):
    _, locked = proxies
    chat_and_stream(sdk(gateway), "locked-proxy/gpt-4o-mini")
    assert locked.connects
    error, record = failed_call(gateway, "locked-no-pass/gpt-4o-mini")
    assert "proxy refused (407)" in error.message
    assert json.loads(record["attempts"])[0]["cause"] == "proxy refused (407)"
    assert PROXY_PASSWORD not in json.dumps(record)


def test_extra_headers_reach_the_provider_and_secret_ones_stay_out_of_the_record(
    gateway, upstreams
):
    plain, _ = upstreams
    plain_requests = plain.server.config.app
    response = sdk(gateway).chat.completions.with_raw_response.create(
        model="headers/gpt-4o-mini", messages=MESSAGES
    )
    sent = [r for r in plain_requests.requests() if r["path"].endswith("/chat/completions")][-1]
    assert sent["headers"]["x-tenant"] == "finance"
    assert sent["headers"]["x-gateway-token"] == "gw-token-not-real"
    record = gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert "gw-token-not-real" not in json.dumps(record)


TEST = r"""
from connections.models import Connection
from connections.services import connection_test, models_discover
from django.contrib.auth.models import User
admin = User.objects.filter(is_superuser=True).first()
for slug in ("bare", "own-ca"):
    c = Connection.objects.get(slug=slug)
    r = connection_test(connection=c)
    print(json.dumps({"slug": slug, "ok": r.ok, "message": r.message}))
"""


def test_test_connection_agrees_with_calls_and_shows_the_certificate(gateway):
    lines = gateway.run(ADD + TEST).strip().splitlines()
    results = {r["slug"]: r for r in map(json.loads, lines)}
    bare, own = results["bare"], results["own-ca"]
    assert not bare["ok"]
    assert "tls: unknown CA" in bare["message"]
    assert "CN=localhost" in bare["message"] and "Meshgate Test Private CA" in bare["message"]
    assert own["ok"], own["message"]
    assert "lists" in own["message"]
