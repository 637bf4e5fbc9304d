"""The playground in a real browser: Debian's headless Chromium driven by Playwright,
against Meshgate served by uvicorn (ASGI) and the provider simulator.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from django.utils import timezone
from playwright.sync_api import expect

from audit.models import CallRecord
from audit.money import usd

from .conftest import log_in
from .markup_upstream import MARKUP_ANSWER, MarkupUpstream

PASSWORD = "correct horse battery staple"
XSS = "<img src=x onerror=alert(1)>"

# Every render of the answer while it streams: its length each time it changes.
WATCH_RENDERS = """
() => {
  window.__renders = [];
  const panes = document.getElementById("panes");
  new MutationObserver(() => {
    const answers = panes.querySelectorAll(".turn-assistant .text");
    if (!answers.length) return;
    const length = answers[answers.length - 1].textContent.length;
    const renders = window.__renders;
    if (renders[renders.length - 1] !== length) renders.push(length);
  }).observe(panes, { childList: true, subtree: true, characterData: true });
}
"""


def pick_model(page, model: str) -> None:
    page.select_option("#model", model)


def send(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#send")


def wait_until_done(page, panes: int = 1) -> None:
    # Locators, not wait_for_function: the page's CSP (rightly) forbids the eval it needs.
    expect(page.locator(".pane[data-done=true]")).to_have_count(panes, timeout=20_000)


def assert_clean(browser) -> None:
    assert browser.errors == []
    assert browser.dialogs == []
    assert browser.csp_violations == []


def test_alice_sees_the_answer_stream_in_and_its_cost(live_site, browser_page):
    page = browser_page.page
    # One token per chunk, 40 ms apart: slow enough that the page renders in between.
    live_site.simulator.script("gpt-4o-mini", [{"chunk_interval_ms": 40}])
    log_in(page, "alice", PASSWORD)
    options = page.eval_on_selector_all("#model option", "els => els.map(e => e.value)")
    assert options == ["chat-default", "sim/gpt-4o", "sim/gpt-4o-mini"]
    pick_model(page, "sim/gpt-4o-mini")
    assert "$0.15 in / $0.60 out per 1M tokens" in page.text_content("#model-info")
    page.select_option("#department", str(live_site.cast.marketing.pk))
    page.fill("#temperature", "0.3")
    page.fill("#max-tokens", "60")
    page.fill("#system", "Answer in one paragraph.")
    page.evaluate(WATCH_RENDERS)

    send(page, "What does the gateway do?")
    page.wait_for_selector("#stop:not([disabled])")
    wait_until_done(page)

    answer = page.text_content(".pane .turn-assistant .text")
    renders = page.evaluate("window.__renders")
    intermediate = [n for n in renders if 0 < n < len(answer)]
    assert len(intermediate) > 1, renders  # it streamed in, not all at once
    assert renders[-1] == len(answer)

    [record] = live_site.wait_for_record(purpose="playground", user=live_site.cast.alice)
    assert record.outcome == "ok"
    assert record.department == live_site.cast.marketing
    assert record.api_key is None
    assert record.request_body["temperature"] == 0.3
    assert record.request_body["messages"][0]["content"] == "Answer in one paragraph."
    cost = page.text_content(".pane .stat-cost dd")
    assert cost.startswith("$")
    assert cost == usd(record.cost)  # the one format of every page (audit.money)
    tokens = page.text_content(".pane .stat-tokens dd")
    assert tokens == f"{record.prompt_tokens} in / {record.completion_tokens} out"
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", page.text_content(".pane .stat-ttft dd"))
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", page.text_content(".pane .stat-latency dd"))
    # The run is in the recent list, and reopening it brings the conversation back.
    page.wait_for_selector(f"button[data-request-id='{record.request_id}']")
    page.click("#clear")
    assert page.locator(".turn").count() == 0
    page.click(f"button[data-request-id='{record.request_id}']")
    page.wait_for_selector(".turn-assistant")
    assert page.text_content(".pane .turn-user .text") == "What does the gateway do?"
    assert page.text_content(".pane .turn-assistant .text") == answer
    assert page.input_value("#system") == "Answer in one paragraph."
    assert_clean(browser_page)


def test_a_second_turn_carries_the_conversation(live_site, browser_page):
    page = browser_page.page
    log_in(page, "alice", PASSWORD)
    pick_model(page, "sim/gpt-4o-mini")
    send(page, "First question")
    wait_until_done(page)
    first_answer = page.text_content(".turn-assistant .text")
    send(page, "And a follow-up")
    expect(page.locator(".turn-assistant")).to_have_count(2)
    wait_until_done(page)
    records = live_site.wait_for_record(purpose="playground", count=2)
    second = max(records, key=lambda r: r.started_at)
    assert [m["role"] for m in second.request_body["messages"]] == ["user", "assistant", "user"]
    assert second.request_body["messages"][1]["content"] == first_answer
    assert_clean(browser_page)


def test_compare_streams_models_side_by_side_each_with_its_figures(live_site, browser_page):
    page = browser_page.page
    live_site.simulator.script("gpt-4o", [{"chunk_interval_ms": 30}])
    live_site.simulator.script("gpt-4o-mini", [{"chunk_interval_ms": 10}])
    log_in(page, "alice", PASSWORD)
    pick_model(page, "sim/gpt-4o-mini")
    page.click("#add-pane")
    second = page.locator(".pane").nth(1)
    second.locator("select.pane-select").select_option("sim/gpt-4o")
    send(page, "Summarise our chargeback policy.")
    # Both answers are in progress at the same time.
    expect(page.locator(".turn-assistant.streaming")).to_have_count(2, timeout=10_000)
    wait_until_done(page, panes=2)

    panes = page.locator(".pane")
    assert panes.nth(0).get_attribute("data-model") == "sim/gpt-4o-mini"
    assert panes.nth(1).get_attribute("data-model") == "sim/gpt-4o"
    records = live_site.wait_for_record(purpose="playground", count=2)
    assert len(records) == 2
    by_model = {r.model_requested: r for r in records}
    for index, model in enumerate(["sim/gpt-4o-mini", "sim/gpt-4o"]):
        pane = panes.nth(index)
        record = by_model[model]
        assert len(pane.locator(".turn-assistant .text").text_content()) > 10
        expected = f"{record.prompt_tokens} in / {record.completion_tokens} out"
        pane.locator(".stat-tokens dd", has_text=expected).wait_for()
        cost = pane.locator(".stat-cost dd").text_content()
        assert cost == usd(record.cost)  # the one format of every page (audit.money)
        assert pane.locator(".stat-ttft dd").text_content() not in {"–", "…"}
        assert pane.locator(".stat-latency dd").text_content() not in {"–", "…"}
    # gpt-4o is priced higher: the same prompt costs more there.
    assert by_model["sim/gpt-4o"].cost > by_model["sim/gpt-4o-mini"].cost
    if os.environ.get("PLAYGROUND_SCREENSHOT"):
        page.screenshot(path=os.environ["PLAYGROUND_SCREENSHOT"], full_page=True)

    # A third model joins mid-conversation with the first pane's turns, then all three answer.
    page.click("#add-pane")
    assert page.is_disabled("#add-pane")  # three at most
    panes.nth(2).locator("select.pane-select").select_option("chat-default")
    assert panes.nth(2).locator(".turn").count() == 2
    send(page, "Now in one sentence.")
    wait_until_done(page, panes=3)
    records = live_site.wait_for_record(purpose="playground", count=5)
    alias_record = next(r for r in records if r.alias_name == "chat-default")
    assert alias_record.llm == live_site.cast.gpt4o
    expect(panes.nth(2).locator(".served-by")).to_have_text("Served by sim/gpt-4o")
    assert panes.nth(0).locator(".served-by").count() == 0
    first_answer = by_model["sim/gpt-4o-mini"].response_body["content"]
    assert alias_record.request_body["messages"] == [
        {"role": "user", "content": "Summarise our chargeback policy."},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": "Now in one sentence."},
    ]
    assert_clean(browser_page)


def test_stop_cancels_the_answer_and_the_call_is_recorded_as_client_disconnected(
    live_site, browser_page
):
    page = browser_page.page
    live_site.simulator.script("gpt-4o-mini", [{"chunk_interval_ms": 300}])
    log_in(page, "alice", PASSWORD)
    pick_model(page, "sim/gpt-4o-mini")
    send(page, "Tell me a long story")
    page.wait_for_selector(".turn-assistant .text:not(:empty)")
    page.click("#stop")
    wait_until_done(page)
    assert page.text_content(".turn-assistant .note") == "Stopped."
    [record] = live_site.wait_for_record(purpose="playground")
    assert record.outcome == "client_disconnected"
    assert page.is_enabled("#send")
    assert_clean(browser_page)


def test_a_failed_call_is_explained_in_its_pane_and_a_stream_cut_by_an_error_keeps_its_text(
    live_site, browser_page
):
    page = browser_page.page
    live_site.simulator.script(
        "gpt-4o-mini",
        [
            {"status": 503, "message": "Upstream is down for maintenance."},
            {"error_after_chunks": 6, "chunk_interval_ms": 20},
        ],
    )
    log_in(page, "alice", PASSWORD)
    pick_model(page, "sim/gpt-4o-mini")
    send(page, "First try")
    wait_until_done(page)
    assert page.locator(".turn-assistant.failed .note.error").count() == 1
    assert page.text_content(".turn-assistant .text") == ""
    assert page.is_enabled("#send")

    send(page, "Second try")
    expect(page.locator(".turn-assistant.failed")).to_have_count(2)
    wait_until_done(page)
    cut = page.locator(".turn-assistant").nth(1)
    assert len(cut.locator(".text").text_content()) > 0  # what arrived before the error stays
    assert cut.locator(".note.error").text_content()
    records = live_site.wait_for_record(purpose="playground", count=2)
    outcomes = sorted(r.outcome for r in records)
    assert outcomes == ["upstream_error", "upstream_error"]
    assert_clean(browser_page)


def test_copy_as_code_gives_a_python_snippet_that_works_with_a_real_key(
    live_site, browser_page, tmp_path
):
    from gateway.keys import apikey_create

    page = browser_page.page
    log_in(page, "alice", PASSWORD)
    pick_model(page, "sim/gpt-4o")
    page.fill("#system", 'Quote "exactly" and don\'t panic.')
    page.fill("#max-tokens", "30")
    page.fill("#prompt", "Which department pays?")
    page.click("#copy-code")
    page.wait_for_selector("#code-dialog[open]")
    page.click("button[data-copy=code-python]")
    snippet = page.evaluate("navigator.clipboard.readText()")
    assert snippet == page.text_content("#code-python")
    assert f'base_url="{live_site.url}/v1"' in snippet
    assert '"YOUR_MESHGATE_KEY"' in snippet and 'model="sim/gpt-4o"' in snippet
    curl = page.text_content("#code-curl")
    assert curl.startswith(f"curl {live_site.url}/v1/chat/completions")
    assert "don'\\''t panic" in curl  # the shell quoting survives an apostrophe

    _, raw_key = apikey_create(
        owner=live_site.cast.alice, department=live_site.cast.marketing, purpose="snippet test"
    )
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace("YOUR_MESHGATE_KEY", raw_key))
    env = {k: v for k, v in os.environ.items() if k != "MESHGATE_API_KEY"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) > 3
    [record] = live_site.wait_for_record(purpose="snippet test")
    assert record.outcome == "ok" and record.api_key_prefix.startswith("mg-")
    assert record.request_body["messages"] == [
        {"role": "system", "content": 'Quote "exactly" and don\'t panic.'},
        {"role": "user", "content": "Which department pays?"},
    ]
    assert record.request_body["max_tokens"] == 30

    # The curl command too, key from the environment as it suggests.
    result = subprocess.run(
        ["bash", "-c", curl.replace("curl ", "curl -sS --fail-with-body ", 1)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "MESHGATE_API_KEY": raw_key},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["choices"][0]["message"]["content"]
    records = live_site.wait_for_record(purpose="snippet test", count=2)
    assert records[0].request_body["messages"] == records[1].request_body["messages"]

    # The Responses and Messages forms of the same conversation, through their doors.
    for number, (name, endpoint) in enumerate(
        (("code-responses", "responses"), ("code-messages", "messages")), start=3
    ):
        form = page.text_content(f"#{name}")
        assert 'model="sim/gpt-4o"' in form
        script.write_text(form.replace("YOUR_MESHGATE_KEY", raw_key))
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
        )
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.split()) > 3
        records = live_site.wait_for_record(purpose="snippet test", count=number)
        latest = max(records, key=lambda r: r.pk)
        assert latest.endpoint == endpoint and latest.outcome == "ok"
        assert latest.request_body["messages"] == records[0].request_body["messages"]
        assert latest.request_body["max_tokens"] == 30
    assert_clean(browser_page)


def test_charlie_sees_an_empty_picker_and_whom_to_ask(live_site, browser_page):
    page = browser_page.page
    log_in(page, "charlie", PASSWORD)
    assert page.eval_on_selector_all("#model option", "els => els.length") == 0
    assert page.is_disabled("#model")
    assert page.is_disabled("#send")
    notice = page.text_content("#no-models")
    assert "There is no model you may use yet." in notice
    assert "Ask your Meshgate administrator for access" in notice
    assert "You are not a member of any department yet." in notice
    assert page.locator(".pane").count() == 0
    assert_clean(browser_page)


def test_markup_in_a_reopened_run_is_shown_as_text_and_runs_nothing(live_site, browser_page):
    page = browser_page.page
    cast = live_site.cast
    # A past run whose recorded answer and prompt carry markup, reopened from the list.
    CallRecord.objects.create(
        request_id="pg-markup",
        started_at=timezone.now(),
        user=cast.alice,
        purpose="playground",
        department=cast.marketing,
        endpoint="chat.completions",
        model_requested="sim/gpt-4o",
        llm=cast.gpt4o,
        outcome="ok",
        request_body={"messages": [{"role": "user", "content": f"Say {XSS}"}]},
        response_body={"role": "assistant", "content": f"Here it is: {XSS}"},
    )
    log_in(page, "alice", PASSWORD)
    page.click("button[data-request-id='pg-markup']")
    page.wait_for_selector(".turn-assistant")
    assert page.text_content(".turn-assistant .text") == f"Here it is: {XSS}"
    assert page.text_content(".turn-user .text") == f"Say {XSS}"
    assert page.locator(".transcript img").count() == 0
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert_clean(browser_page)


def test_a_model_answering_with_markup_streams_in_as_text_and_runs_nothing(live_site, browser_page):
    from guardian.shortcuts import assign_perm

    from connections.models import LLM, Connection

    cast = live_site.cast
    with MarkupUpstream() as upstream:
        connection = Connection(
            name="Markup", slug="markup", kind=Connection.Kind.OPENAI_COMPATIBLE,
            base_url=upstream.url, timeout_seconds=10, max_retries=0,
        )  # fmt: skip
        connection.set_secrets({"api_key": "markup-upstream-key"})
        connection.save()
        llm = LLM.objects.create(connection=connection, name="markup-model", approved=True)
        assign_perm("connections.use_llm", cast.marketing.group, llm)

        page = browser_page.page
        log_in(page, "alice", PASSWORD)
        pick_model(page, "markup/markup-model")
        send(page, "Show me an image tag")
        wait_until_done(page)
        assert page.text_content(".turn-assistant .text") == MARKUP_ANSWER
        page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert page.locator(".transcript img, .transcript script").count() == 0
    [record] = live_site.wait_for_record(purpose="playground")
    assert record.outcome == "ok" and record.llm_id == llm.pk
    assert_clean(browser_page)


def test_the_page_fits_a_phone(live_site, browser_page):
    page = browser_page.page
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, "alice", PASSWORD)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # no sideways scrolling
    page.click("#add-pane")
    boxes = [page.locator(".pane").nth(i).bounding_box() for i in range(2)]
    assert boxes[1]["y"] > boxes[0]["y"]  # compared answers stack on a phone
    # The conversation comes right after the model picker, before settings and past runs.
    model_box = page.locator(".panel-model").bounding_box()
    settings_box = page.locator(".panel-settings").bounding_box()
    assert model_box["y"] < boxes[0]["y"] < settings_box["y"]
    assert_clean(browser_page)
