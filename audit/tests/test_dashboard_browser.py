"""The usage dashboard in a real headless Chromium: Chart.js loads from our static files and
draws the four charts, with no request leaving the server and no console error."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal

import pytest
from django.utils import timezone

from audit import services
from audit.models import CallRecord

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def seeded(transactional_db):
    from conftest import build_cast

    cast = build_cast()
    now = timezone.now()
    for n in range(20):
        CallRecord.objects.create(
            request_id=f"browser-{n}",
            started_at=now - dt.timedelta(days=n % 10, minutes=n),
            endpoint="chat.completions",
            department=(cast.marketing, cast.finance)[n % 2],
            user=(cast.alice, cast.bob)[n % 2],
            llm=(cast.gpt4o, cast.gpt4o_mini, cast.embedding)[n % 3],
            outcome="ok" if n % 4 else "upstream_error",
            prompt_tokens=100 + n,
            completion_tokens=40,
            cost=Decimal("0.0125") * (n + 1),
        )
    services.usage_rollup_range(first=now.date() - dt.timedelta(days=10), last=now.date())
    return cast


def test_the_dashboard_draws_its_charts_in_a_browser(seeded, live_server, client):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install chromium (make browser).")
    from playwright.sync_api import sync_playwright

    client.force_login(seeded.admin)
    session = client.cookies["sessionid"].value
    requested: list[str] = []
    console_errors: list[str] = []
    failed: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context()
            context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on(
                "response",
                lambda response: response.status >= 400 and failed.append(response.url),
            )
            page.on(
                "console",
                lambda message: message.type == "error" and console_errors.append(message.text),
            )
            page.goto(f"{live_server.url}/admin/audit/chargebackreport/dashboard/")
            page.wait_for_function("() => window.Chart && Object.keys(Chart.instances).length == 4")
            drawn = page.evaluate(
                """() => Object.values(Chart.instances).map(chart => ({
                    canvas: chart.canvas.id,
                    points: chart.data.datasets.reduce((n, d) => n + d.data.length, 0),
                    height: chart.height,
                }))"""
            )
        finally:
            browser.close()

    assert {chart["canvas"] for chart in drawn} == {
        "chart-department-month",
        "chart-top-llms",
        "chart-calls",
        "chart-tokens",
    }
    assert all(chart["points"] > 0 and chart["height"] > 50 for chart in drawn)
    assert all(url.startswith(live_server.url) for url in requested), requested
    assert f"{live_server.url}/static/vendor/chart.umd.min.js" in requested
    # The browser asks for /favicon.ico on its own; the admin has none.
    assert [url for url in failed if not url.endswith("/favicon.ico")] == []
    assert [e for e in console_errors if not e.startswith("Failed to load resource")] == []
