"""The chargeback admin: report list with totals and downloads, Generate now, the usage
roll-up list, and the dashboard with its charts' data and local Chart.js."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from django.contrib.staticfiles import finders
from django.db.models import Sum
from django.utils import timezone
from guardian.shortcuts import assign_perm

from audit import services
from audit.models import CallRecord, ChargebackReport, UsageRollup
from audit.tests.usage_data import generate_month
from audit.usage import dashboard_data

pytestmark = pytest.mark.django_db

REPORTS_PERM = "connections.view_department_reports"


@pytest.fixture
def october(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=300))
    services.chargeback_build(month="2026-10")
    return cast


def test_the_report_changelist_shows_totals_downloads_and_generate_now(client, october):
    client.force_login(october.admin)
    page = client.get("/admin/audit/chargebackreport/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "Generate now" in html and "Usage dashboard" in html
    report = ChargebackReport.objects.get(department=october.finance)
    assert f"/admin/audit/chargebackreport/{report.pk}/download/xlsx/" in html
    total = sum(r.total_cost for r in ChargebackReport.objects.filter(is_current=True))
    assert f"{total:,.2f}" in html
    assert "v1 (current)" in html


def test_the_report_admin_search_filters_and_detail_page(client, october):
    client.force_login(october.admin)
    report = ChargebackReport.objects.get(department=october.marketing)

    assert "MKT-100" in client.get("/admin/audit/chargebackreport/?q=Marketing").content.decode()
    assert client.get("/admin/audit/chargebackreport/?is_current__exact=1").status_code == 200
    detail = client.get(f"/admin/audit/chargebackreport/{report.pk}/change/")
    assert detail.status_code == 200
    assert "By API key" in detail.content.decode() and "mg-alice01" in detail.content.decode()
    assert client.get("/admin/audit/chargebackreport/add/").status_code == 403


def test_generate_now_builds_a_new_current_version_for_the_month_chosen(
    client, october, django_capture_on_commit_callbacks, monkeypatch
):
    from meshsite.celery import app

    # In-process, as without Redis (the worker path has its own test).
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    client.force_login(october.admin)
    form = client.get("/admin/audit/chargebackreport/generate/")
    assert form.status_code == 200

    # The task is enqueued on commit (eager without Redis): run the commit hooks.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post("/admin/audit/chargebackreport/generate/", {"month": "2026-10"})
    assert len(callbacks) == 1

    assert response.status_code == 302
    current = ChargebackReport.objects.filter(month=dt.date(2026, 10, 1), is_current=True)
    assert sorted(current.values_list("version", flat=True)) == [2, 2, 2]
    assert all(r.generated_by == october.admin for r in current)
    assert ChargebackReport.objects.filter(version=1, is_current=False).count() == 3


def test_generate_now_refuses_a_month_that_has_not_started(client, october):
    client.force_login(october.admin)
    next_year = timezone.now().year + 1
    response = client.post("/admin/audit/chargebackreport/generate/", {"month": f"{next_year}-01"})
    assert response.status_code == 200 and "has not started" in response.content.decode()
    bad = client.post("/admin/audit/chargebackreport/generate/", {"month": "soon"})
    assert "YYYY-MM" in bad.content.decode()


def test_a_department_report_viewer_on_staff_sees_only_their_rows_and_cannot_generate(
    client, october
):
    cast = october
    cast.bob.is_staff = True
    cast.bob.save()
    assign_perm(REPORTS_PERM, cast.bob, cast.finance)
    client.force_login(cast.bob)

    html = client.get("/admin/audit/chargebackreport/").content.decode()
    marketing = ChargebackReport.objects.get(department=cast.marketing)

    assert "FIN-200" in html and "MKT-100" not in html and "Generate now" not in html
    assert (
        client.get(f"/admin/audit/chargebackreport/{marketing.pk}/download/csv/").status_code == 404
    )
    assert client.get("/admin/audit/chargebackreport/generate/").status_code == 403
    rollups = client.get("/admin/audit/usagerollup/").content.decode()
    assert "Finance" in rollups and "Marketing" not in rollups


def test_the_usage_rollup_admin_lists_searches_and_is_read_only(client, october):
    client.force_login(october.admin)
    assert client.get("/admin/audit/usagerollup/").status_code == 200
    assert client.get("/admin/audit/usagerollup/?q=alice").status_code == 200
    assert client.get("/admin/audit/usagerollup/add/").status_code == 403
    rollup = UsageRollup.objects.first()
    assert client.post(f"/admin/audit/usagerollup/{rollup.pk}/delete/").status_code == 403


def test_the_dashboard_draws_four_charts_with_chart_js_from_our_static_files(client, cast):
    today = timezone.now().date()
    for n in range(3):
        CallRecord.objects.create(
            request_id=f"dash-{n}",
            started_at=timezone.now() - dt.timedelta(days=n),
            endpoint="chat.completions",
            department=cast.marketing,
            user=cast.alice,
            llm=cast.gpt4o,
            outcome="ok" if n else "upstream_error",
            prompt_tokens=100,
            completion_tokens=50,
            cost=Decimal("0.25"),
        )
    services.usage_rollup_range(first=today - dt.timedelta(days=3), last=today)
    client.force_login(cast.admin)

    page = client.get("/admin/audit/chargebackreport/dashboard/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "/static/vendor/chart.umd.min.js" in html and "cdn" not in html.lower()
    assert html.count("<canvas") == 4
    data = json.loads(re.search(r'id="usage-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert data["top_llms"]["labels"] == ["sim/gpt-4o"]
    assert data["calls"][-3:] == [1, 1, 1]
    assert data["error_rate"][-1] == 100.0
    assert data["prompt_tokens"][-1] == 100
    assert data["cost_per_department"][0]["label"] == "Marketing"
    assert data["cost_per_department"][0]["data"][-1] > 0
    assert finders.find("vendor/chart.umd.min.js") and finders.find("vendor/chart.js-LICENSE.md")
    assert finders.find("audit/dashboard.js")


def test_dashboard_series_cover_every_day_and_month_of_the_window(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=200))
    services.usage_rollup_range(first=dt.date(2026, 10, 1), last=dt.date(2026, 11, 1))

    data = dashboard_data(UsageRollup.objects.all(), today=dt.date(2026, 11, 1), days=32, months=3)

    assert data["months"] == ["2026-09", "2026-10", "2026-11"]
    assert data["days"][0] == "2026-10-01" and len(data["calls"]) == 32
    assert sum(data["calls"]) == UsageRollup.objects.aggregate(n=Sum("requests"))["n"]
    departments = {series["label"] for series in data["cost_per_department"]}
    assert departments == {"Marketing", "Finance", "Research", "(unassigned)"}
    assert data["unassigned_has_cost"] is False
