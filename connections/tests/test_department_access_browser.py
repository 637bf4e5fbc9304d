"""In a real headless Chromium: the admin grants alice "view Marketing's reports" on the
Marketing department's admin page, and alice then sees Marketing's report and not Finance's."""

from __future__ import annotations

import os

import pytest

from audit import services as audit_services
from audit.models import CallRecord, ChargebackReport
from audit.tests.usage_data import generate_month
from connections.models import ChangeEvent

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


@pytest.fixture
def october(transactional_db):
    from conftest import build_cast

    cast = build_cast()
    CallRecord.objects.bulk_create(generate_month(cast, count=60))
    audit_services.chargeback_build(month="2026-10")
    return cast


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install chromium (make browser).")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread, which Django takes for an
    # async context; this test's ORM calls are plain synchronous code all the same.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            yield chromium
            chromium.close()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


def log_in(browser, base: str, login_path: str, username: str, password: str):
    context = browser.new_context(base_url=base)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(login_path)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("[type=submit]")
    page.wait_for_load_state()
    return page


def test_the_admin_grants_alice_marketings_reports_and_she_sees_only_those(
    october, live_server, browser
):
    cast = october
    base = live_server.url
    marketing = ChargebackReport.objects.get(department=cast.marketing, is_current=True)
    finance = ChargebackReport.objects.get(department=cast.finance, is_current=True)

    alice = log_in(browser, base, "/accounts/login/?next=/reports/", "alice", cast.PASSWORD)
    alice.goto("/reports/")
    assert "No reports to show" in alice.text_content("body")

    admin = log_in(browser, base, "/admin/login/?next=/admin/", "admin", cast.PASSWORD)
    admin.goto(f"/admin/connections/department/{cast.marketing.pk}/change/")
    admin.get_by_text("May view Marketing's reports: people").wait_for()
    admin.select_option("#id_report_users_from", label="alice")
    admin.click("#id_report_users_add")
    chosen = admin.eval_on_selector_all("#id_report_users_to option", "os => os.map(o => o.text)")
    assert chosen == ["alice"]
    admin.click("input[name=_save]")
    admin.wait_for_url("**/admin/connections/department/")
    assert "was changed successfully" in admin.text_content("body")

    alice.goto("/reports/")
    table = alice.text_content("table")
    assert "MKT-100" in table and "Marketing" in table
    assert "FIN-200" not in table and "RES-300" not in table
    with alice.expect_download() as download:
        alice.click(f"a[href='/reports/{marketing.pk}/csv/']")
    assert download.value.suggested_filename.endswith(".csv")
    refused = alice.request.get(f"/reports/{finance.pk}/csv/")
    assert refused.status == 404

    [event] = ChangeEvent.objects.filter(event_type=ChangeEvent.Type.PERMISSION_GRANTED)
    assert event.actor == cast.admin and event.details["user"] == "alice"
    assert event.details["permission"] == "view Marketing's reports"
