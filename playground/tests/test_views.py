"""The playground's page and endpoints, in process, through the real gateway and the simulator.

Calls go through `gateway.pipeline.handle` to the provider simulator over HTTP, and the
audit writer commits records from its own thread: hence `transactional_db`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from audit.models import CallRecord
from conftest import Cast

PAGE = "/playground/"
CHAT = "/playground/chat/"


@pytest.fixture
def sim_cast(transactional_db, sim_cast) -> Cast:
    return sim_cast


def logged_in(user, client_class=Client, **kwargs):
    client = client_class(**kwargs)
    client.force_login(user)
    return client


def post_chat(user, payload: dict, **kwargs):
    """POST to the chat endpoint and read the whole (streamed) answer, in one event loop."""

    async def go():
        client = AsyncClient(**kwargs)
        await client.aforce_login(user)
        response = await client.post(CHAT, json.dumps(payload), content_type="application/json")
        if response.streaming:
            body = b"".join([chunk async for chunk in response.streaming_content])
        else:
            body = response.content
        return response, body

    return async_to_sync(go)()


def chat_payload(cast: Cast, model: str = "sim/gpt-4o-mini", **extra) -> dict:
    return {
        "model": model,
        "department": cast.marketing.pk,
        "messages": [
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "What does the gateway do?"},
        ],
        "temperature": 0.2,
        "max_tokens": 40,
        **extra,
    }


def sse_chunks(body: bytes) -> list:
    frames = [f for f in body.decode().split("\n\n") if f.startswith("data: ")]
    return [f[len("data: ") :] for f in frames]


def wait_for_record(request_id: str) -> CallRecord:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        record = CallRecord.objects.filter(request_id=request_id).first()
        if record and record.outcome != CallRecord.Outcome.INTERRUPTED:
            return record
        time.sleep(0.05)
    raise AssertionError(f"no completed record for {request_id}")


# --- the page -------------------------------------------------------------------------------


def test_the_page_asks_for_a_login(db):
    response = Client().get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/playground/")


def test_alice_picks_from_exactly_her_chat_models_and_aliases_with_prices(sim_cast):
    response = logged_in(sim_cast.alice).get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    picker = re.search(r'<select id="model".*?</select>', html, re.S).group(0)
    options = re.findall(r'<option value="([^"]+)"', picker)
    # Aliases first; no embedding model, nothing unapproved.
    assert options == ["chat-default", "sim/gpt-4o", "sim/gpt-4o-mini"]
    assert "$2.50 in / $10.00 out per 1M tokens" in html
    assert "$0.15 in / $0.60 out per 1M tokens" in html
    assert "Marketing (MKT-100)" in html
    data = json.loads(re.search(r'id="playground-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert [m["id"] for m in data["models"]] == options
    alias = data["models"][0]
    assert alias["alias"] and alias["targets"] == ["sim/gpt-4o", "sim/gpt-4o-mini"]
    assert alias["input_price"] == 2.5  # priced like the target that serves it first


def test_the_picker_shows_the_speed_measured_from_real_calls(sim_cast):
    from connections.models import LLM

    LLM.objects.filter(pk=sim_cast.gpt4o.pk).update(
        measured_tokens_per_second=87.4, measured_p50_ms=1850, measured_ttft_ms=420
    )
    html = logged_in(sim_cast.alice).get(PAGE).content.decode()
    assert "87 tokens/s measured, p50 1.9 s" in html
    assert "speed not measured yet" in html  # gpt-4o-mini has no calls yet
    data = json.loads(re.search(r'id="playground-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    alias = next(m for m in data["models"] if m["id"] == "chat-default")
    assert alias["tokens_per_second"] == 87.4  # the alias runs on gpt-4o first


def test_bob_sees_only_what_finance_was_granted(sim_cast):
    html = logged_in(sim_cast.bob).get(PAGE).content.decode()
    picker = re.search(r'<select id="model".*?</select>', html, re.S).group(0)
    assert re.findall(r'<option value="([^"]+)"', picker) == ["chat-default", "sim/gpt-4o-mini"]


def test_charlie_gets_an_empty_picker_and_is_told_whom_to_ask(sim_cast):
    html = logged_in(sim_cast.charlie).get(PAGE).content.decode()
    picker = re.search(r'<select id="model".*?</select>', html, re.S).group(0)
    assert "<option" not in picker and "disabled" in picker
    assert "There is no model you may use yet." in html
    assert "Ask your Meshgate administrator for access" in html
    assert "You are not a member of any department yet." in html


def test_someone_whose_departments_were_granted_nothing_is_told_which_they_are_in(sim_cast):
    sim_cast.charlie.groups.add(sim_cast.research.group)
    html = logged_in(sim_cast.charlie).get(PAGE).content.decode()
    assert "There is no model you may use yet." in html
    assert "Your departments: Research." in html


def test_the_page_allows_only_its_own_scripts_and_styles(sim_cast):
    response = logged_in(sim_cast.alice).get(PAGE)
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "unsafe-inline" not in policy
    html = response.content.decode()
    # Every script is a file, except the JSON data block, which browsers never execute.
    for tag in re.findall(r"<script[^>]*>", html):
        assert 'src="/static/playground/' in tag or 'type="application/json"' in tag
    assert " style=" not in html and "<style" not in html and " on" + "click=" not in html


# --- the chat endpoint ------------------------------------------------------------------------


def test_alice_gets_a_streamed_answer_recorded_as_a_playground_call_of_her_department(sim_cast):
    response, body = post_chat(sim_cast.alice, chat_payload(sim_cast))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    chunks = sse_chunks(body)
    assert chunks[-1] == "[DONE]"
    parsed = [json.loads(c) for c in chunks[:-1]]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in parsed if c["choices"])
    assert len(text.split()) > 3
    usage = parsed[-1]["usage"]

    record = wait_for_record(response["X-Request-Id"])
    assert record.outcome == CallRecord.Outcome.OK
    assert record.purpose == "playground"
    assert record.user == sim_cast.alice
    assert record.department == sim_cast.marketing
    assert record.api_key is None and record.api_key_prefix == ""
    assert record.llm == sim_cast.gpt4o_mini
    assert record.streamed is True
    assert (record.prompt_tokens, record.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert record.cost > 0
    # What the simulator received is exactly the conversation and settings, streamed.
    sent = [r for r in sim_cast_requests(sim_cast) if r["path"] == "/v1/chat/completions"][-1]
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Answer in one line."}
    assert sent["body"]["temperature"] == 0.2 and sent["body"]["max_tokens"] == 40


def test_the_answer_is_relayed_by_an_async_iterator_so_asgi_streams_it(sim_cast):
    async def go():
        client = AsyncClient()
        await client.aforce_login(sim_cast.alice)
        response = await client.post(
            CHAT, json.dumps(chat_payload(sim_cast)), content_type="application/json"
        )
        first = await anext(aiter(response.streaming_content))
        rest = b"".join([chunk async for chunk in response.streaming_content])
        return response, first, rest

    response, first, rest = async_to_sync(go)()
    # Under ASGI, Django drains a sync iterator into a list before sending: nothing would stream.
    assert response.is_async
    assert first.startswith(b"data: {") and rest.endswith(b"data: [DONE]\n\n")


def test_someone_in_two_departments_charges_the_one_they_pick(sim_cast):
    sim_cast.alice.groups.add(sim_cast.research.group)
    payload = chat_payload(sim_cast, department=sim_cast.research.pk)
    response, _ = post_chat(sim_cast.alice, payload)
    assert response.status_code == 200
    assert wait_for_record(response["X-Request-Id"]).department == sim_cast.research
    html = logged_in(sim_cast.alice).get(PAGE).content.decode()
    assert "Marketing (MKT-100)" in html and "Research (RES-300)" in html


def sim_cast_requests(cast: Cast) -> list:
    import httpx

    base = cast.connection.base_url.removesuffix("/v1")
    return httpx.get(base + "/_sim/requests", timeout=5).json()["requests"]


def test_an_alias_is_served_and_charged_like_its_first_target(sim_cast):
    response, body = post_chat(sim_cast.alice, chat_payload(sim_cast, model="chat-default"))
    assert response.status_code == 200 and sse_chunks(body)[-1] == "[DONE]"
    record = wait_for_record(response["X-Request-Id"])
    assert record.alias_name == "chat-default"
    assert record.llm == sim_cast.gpt4o


def test_a_model_the_user_was_not_granted_is_refused_by_the_gateway_and_recorded(sim_cast):
    payload = chat_payload(sim_cast, model="sim/gpt-4o", department=sim_cast.finance.pk)
    response, body = post_chat(sim_cast.bob, payload)
    # The same 404 as a model that does not exist (gateway/tests/test_not_granted.py compares
    # the bodies): a 403 would tell Bob that sim/gpt-4o exists.
    assert response.status_code == 404
    assert json.loads(body)["error"]["code"] == "model_not_found"
    record = wait_for_record(response["X-Request-Id"])
    assert record.purpose == "playground"
    assert record.department == sim_cast.finance
    assert record.outcome == CallRecord.Outcome.NOT_FOUND
    assert not [r for r in sim_cast_requests(sim_cast) if r["path"] == "/v1/chat/completions"]


def test_a_department_over_its_budget_is_refused_in_the_playground_as_on_the_api(sim_cast):
    from quotas import runtime
    from quotas.services import quota_create

    runtime.start()
    try:
        quota_create(
            name="Marketing monthly cap", amount=Decimal("0.000001"), department=sim_cast.marketing
        )
        response, body = post_chat(sim_cast.alice, chat_payload(sim_cast))
    finally:
        runtime.start()
    assert response.status_code == 429
    assert "Marketing monthly cap" in json.loads(body)["error"]["message"]
    record = wait_for_record(response["X-Request-Id"])
    assert record.outcome == CallRecord.Outcome.BUDGET_EXCEEDED
    assert record.purpose == "playground" and record.department == sim_cast.marketing
    assert not [r for r in sim_cast_requests(sim_cast) if r["path"] == "/v1/chat/completions"]


def test_nobody_can_charge_a_department_they_are_not_in(sim_cast):
    payload = chat_payload(sim_cast, department=sim_cast.finance.pk)
    response, body = post_chat(sim_cast.alice, payload)
    assert response.status_code == 403
    assert json.loads(body)["error"]["code"] == "not_your_department"
    assert not CallRecord.objects.exists()


def test_charlie_with_no_department_cannot_call_anything(sim_cast):
    payload = chat_payload(sim_cast, department=sim_cast.marketing.pk)
    response, _ = post_chat(sim_cast.charlie, payload)
    assert response.status_code == 403
    assert not CallRecord.objects.exists()


def test_the_chat_endpoint_needs_the_csrf_token(sim_cast):
    response, _ = post_chat(sim_cast.alice, chat_payload(sim_cast), enforce_csrf_checks=True)
    assert response.status_code == 403
    assert not CallRecord.objects.exists()


def test_a_bad_request_is_explained_and_never_reaches_the_gateway(sim_cast):
    response, body = post_chat(sim_cast.alice, chat_payload(sim_cast, temperature=9))
    assert response.status_code == 400
    assert "between 0 and 2" in json.loads(body)["error"]["message"]
    assert not CallRecord.objects.exists()


def test_a_logged_out_page_script_is_told_to_log_in_again(db):
    async def go():
        return await AsyncClient().post(CHAT, "{}", content_type="application/json")

    response = async_to_sync(go)()
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_logged_in"


# --- recent runs --------------------------------------------------------------------------


def make_record(cast: Cast, user, purpose="playground", request_id=None, **fields) -> CallRecord:
    return CallRecord.objects.create(
        request_id=request_id or f"rec-{CallRecord.objects.count()}-{user.pk}-{purpose}",
        started_at=datetime.now(UTC),
        user=user,
        purpose=purpose,
        department=cast.marketing,
        endpoint="chat.completions",
        model_requested="sim/gpt-4o",
        llm=cast.gpt4o,
        outcome=CallRecord.Outcome.OK,
        prompt_tokens=12,
        completion_tokens=30,
        **fields,
    )


def test_recent_runs_are_the_users_own_playground_calls(sim_cast):
    mine = make_record(sim_cast, sim_cast.alice)
    make_record(sim_cast, sim_cast.alice, purpose="nightly batch")
    make_record(sim_cast, sim_cast.bob)
    runs = logged_in(sim_cast.alice).get("/playground/runs/").json()["runs"]
    assert [r["request_id"] for r in runs] == [mine.request_id]
    assert runs[0]["served_by"] == "sim/gpt-4o"


def test_a_run_reopens_with_its_conversation_settings_and_answer(sim_cast):
    record = make_record(
        sim_cast,
        sim_cast.alice,
        request_body={
            "model": "sim/gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "temperature": 0.4,
            "stream": True,
        },
        response_body={"role": "assistant", "content": "Hello there."},
    )
    run = logged_in(sim_cast.alice).get(f"/playground/runs/{record.request_id}/").json()
    assert run["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert run["answer"] == "Hello there."
    assert run["settings"] == {"temperature": 0.4}
    assert run["bodies_kept"] is True


def test_nobody_reopens_someone_elses_run(sim_cast):
    record = make_record(sim_cast, sim_cast.bob)
    response = logged_in(sim_cast.alice).get(f"/playground/runs/{record.request_id}/")
    assert response.status_code == 404


def test_a_streamed_run_reopens_with_the_answer_the_gateway_recorded(sim_cast):
    response, body = post_chat(sim_cast.alice, chat_payload(sim_cast))
    text = "".join(
        (json.loads(c)["choices"][0]["delta"].get("content") or "")
        for c in sse_chunks(body)[:-1]
        if json.loads(c)["choices"]
    )
    wait_for_record(response["X-Request-Id"])
    run = logged_in(sim_cast.alice).get(f"/playground/runs/{response['X-Request-Id']}/").json()
    assert run["answer"] == text
    assert run["messages"][-1] == {"role": "user", "content": "What does the gateway do?"}
    assert run["outcome"] == "ok" and float(run["cost"]) > 0
