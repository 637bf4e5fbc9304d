"""Bedrock credentials from the host's chain are fetched off the event loop: while a slow
container credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI, served here on
loopback) keeps a Bedrock call waiting, other calls on the same worker keep answering;
and once fetched, they are cached (no fetch per call). Through the real openai SDK."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import orjson
import pytest

from conftest import SIMULATOR_AWS_CREDENTIALS
from gateway.tests.test_e2e_support import make_gateway

BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": "Say hello"}]


class SlowCredentials:
    """The container credentials endpoint, slow: its first answer comes after botocore's
    2 s timeout (botocore waits 1 s and asks again), later ones after `delay`."""

    def __init__(self) -> None:
        self.requests = 0
        self.holding = threading.Event()  # a fetch is under way
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests += 1
                endpoint.holding.set()
                time.sleep(2.5 if endpoint.requests == 1 else 0.5)
                key_id, secret = SIMULATOR_AWS_CREDENTIALS
                expires = datetime.now(UTC) + timedelta(hours=1)
                body = orjson.dumps(
                    {
                        "AccessKeyId": key_id,
                        "SecretAccessKey": secret,
                        "Token": "session-token-not-real",
                        "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                )
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # botocore gave up on this one
                    return
                if endpoint.requests > 1:
                    endpoint.holding.clear()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def credentials():
    endpoint = SlowCredentials()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory, credentials):
    gw = make_gateway(
        simulator,
        tmp_path_factory.mktemp("gw"),
        AWS_CONTAINER_CREDENTIALS_FULL_URI=f"http://127.0.0.1:{credentials.port}/creds",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/credentials",
        AWS_CONFIG_FILE="/nonexistent/config",
        AWS_EC2_METADATA_DISABLED="true",
    )
    gw.run(
        "from django.contrib.auth.models import User\n"
        "from guardian.shortcuts import assign_perm\n"
        "from connections.models import LLM, Connection\n"
        f"c = Connection(name='Chain', slug='chain', kind='bedrock', region='us-east-1', "
        f"base_url={simulator.url!r}, timeout_seconds=20, max_retries=0)\n"
        "c.save()\n"
        f"m = LLM.objects.create(connection=c, name={BEDROCK_MODEL!r}, kind='chat', "
        "approved=True)\n"
        "assign_perm('connections.use_llm', User.objects.get(username='alice').groups.first(), m)\n"
    )
    gw.start()
    yield gw
    gw.stop()


def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(api_key=gw.keys["alice"], base_url=gw.url, max_retries=0, timeout=30)


def test_a_slow_credentials_endpoint_delays_only_the_calls_that_need_it(gateway, credentials):
    outcome: dict = {}

    def bedrock_call() -> None:
        try:
            stream = sdk(gateway).chat.completions.create(
                model=f"chain/{BEDROCK_MODEL}", messages=MESSAGES, stream=True
            )
            outcome["text"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    caller = threading.Thread(target=bedrock_call)
    caller.start()
    assert credentials.holding.wait(15), "the credentials endpoint was never asked"
    answered_meanwhile = 0
    client = sdk(gateway)
    while credentials.holding.is_set() and caller.is_alive():
        client.chat.completions.create(model="sim/gpt-4o-mini", messages=MESSAGES)
        if credentials.holding.is_set():
            answered_meanwhile += 1
    caller.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["text"]
    # The fetch held ~3.5 s (a timed-out first answer, a pause, a retry); calls that needed
    # no AWS credentials went on answering meanwhile. On the loop, none could.
    assert answered_meanwhile >= 3, answered_meanwhile


def test_chain_credentials_are_cached_until_near_expiry(gateway, credentials):
    asked = credentials.requests
    for _ in range(3):
        completion = sdk(gateway).chat.completions.create(
            model=f"chain/{BEDROCK_MODEL}", messages=MESSAGES
        )
        assert completion.choices[0].message.content
    assert credentials.requests == asked
