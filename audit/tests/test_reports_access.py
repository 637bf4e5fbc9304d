"""Who sees which reports and usage: the Reports page, its downloads, /api/reports/ and
/api/usage/, scoped by django-guardian's per-department `view_department_reports`."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db.models import Sum
from guardian.shortcuts import assign_perm
from openpyxl import load_workbook
from rest_framework.test import APIClient

from audit import services
from audit.models import CallRecord, ChargebackReport
from audit.tests.usage_data import FIRST_INSTANT, NEXT_MONTH_FIRST, cents, generate_month
from gateway.keys import apikey_create

pytestmark = pytest.mark.django_db

REPORTS_PERM = "connections.view_department_reports"


@pytest.fixture
def october(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=300))
    services.chargeback_build(month="2026-10")
    return cast


def report_of(department) -> ChargebackReport:
    return ChargebackReport.objects.get(department=department, is_current=True)


def login(client, user):
    client.force_login(user)
    return client


def test_a_user_sees_only_the_reports_of_departments_they_were_granted(client, october):
    cast = october
    assign_perm(REPORTS_PERM, cast.alice, cast.marketing)

    page = login(client, cast.alice).get("/reports/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "MKT-100" in html
    assert "FIN-200" not in html and "RES-300" not in html
    assert f"/reports/{report_of(cast.marketing).pk}/csv/" in html


def test_a_group_grant_makes_every_member_a_report_viewer(client, october):
    cast = october
    assign_perm(REPORTS_PERM, cast.finance.group, cast.finance)

    html = login(client, cast.bob).get("/reports/").content.decode()

    assert "FIN-200" in html and "MKT-100" not in html


def test_a_user_without_the_role_sees_no_reports(client, october):
    html = login(client, october.charlie).get("/reports/").content.decode()
    assert "No reports to show" in html


def test_the_reports_page_needs_a_login(client, october):
    response = client.get("/reports/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    pk = report_of(october.marketing).pk
    assert client.get(f"/reports/{pk}/csv/").status_code == 302


def test_downloads_are_attachments_with_the_right_type_and_content(client, october):
    cast = october
    assign_perm(REPORTS_PERM, cast.alice, cast.marketing)
    report = report_of(cast.marketing)
    login(client, cast.alice)

    csv_response = client.get(f"/reports/{report.pk}/csv/")
    xlsx_response = client.get(f"/reports/{report.pk}/xlsx/")

    assert csv_response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment;" in csv_response["Content-Disposition"]
    assert "chargeback-2026-10-MKT-100-v1.csv" in csv_response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_response.content.decode("utf-8-sig"))))
    assert cents(rows[0]["cost_usd"]) == cents(report.total_cost)
    assert xlsx_response["Content-Type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml"
    )
    workbook = load_workbook(io.BytesIO(xlsx_response.content))
    assert workbook.sheetnames == ["Summary", "By LLM", "By user", "By purpose", "By API key"]


def test_another_departments_file_by_url_is_404(client, october):
    cast = october
    assign_perm(REPORTS_PERM, cast.alice, cast.marketing)
    login(client, cast.alice)
    finance = report_of(cast.finance)

    assert client.get(f"/reports/{finance.pk}/csv/").status_code == 404
    assert client.get(f"/reports/{finance.pk}/xlsx/").status_code == 404
    assert client.get(f"/reports/{report_of(cast.marketing).pk}/pdf/").status_code == 404
    api = APIClient()
    api.force_authenticate(cast.alice)
    assert api.get(f"/api/reports/{finance.pk}/").status_code == 404
    assert api.get(f"/api/reports/{finance.pk}/csv/").status_code == 404


def test_previous_versions_stay_listed_and_downloadable(client, october):
    cast = october
    services.chargeback_build(month="2026-10")
    assign_perm(REPORTS_PERM, cast.alice, cast.marketing)
    login(client, cast.alice)

    html = client.get("/reports/").content.decode()
    old = ChargebackReport.objects.get(department=cast.marketing, version=1)

    assert "v2 (current)" in html and "v1 (superseded)" in html
    assert client.get(f"/reports/{old.pk}/csv/").status_code == 200


def test_api_reports_lists_current_reports_in_scope_with_download_links(october):
    cast = october
    assign_perm(REPORTS_PERM, cast.bob, cast.finance)
    services.chargeback_build(month="2026-10")
    api = APIClient()
    api.force_authenticate(cast.bob)

    listing = api.get("/api/reports/", {"month": "2026-10"}).json()
    every_version = api.get("/api/reports/", {"all_versions": "true"}).json()

    assert [r["cost_center"] for r in listing["results"]] == ["FIN-200"]
    assert listing["results"][0]["version"] == 2
    assert listing["results"][0]["downloads"]["xlsx"].endswith(
        f"/api/reports/{listing['results'][0]['id']}/xlsx/"
    )
    assert [r["version"] for r in every_version["results"]] == [2, 1]
    detail = api.get(f"/api/reports/{listing['results'][0]['id']}/").json()
    assert set(detail["breakdowns"]) == {"llm", "user", "purpose", "api_key"}


def test_api_reports_answer_a_meshgate_key_and_refuse_anonymous_callers(october):
    cast = october
    assign_perm(REPORTS_PERM, cast.bob, cast.finance)
    _key, secret = apikey_create(owner=cast.bob, department=cast.finance, purpose="reporting")
    api = APIClient()

    assert api.get("/api/reports/").status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = api.get("/api/reports/")
    assert response.status_code == 200
    assert [r["cost_center"] for r in response.json()["results"]] == ["FIN-200"]


def test_api_usage_groups_and_filters_within_the_callers_departments(october):
    cast = october
    assign_perm(REPORTS_PERM, cast.alice, cast.marketing)
    api = APIClient()
    api.force_authenticate(cast.alice)

    by_llm = api.get("/api/usage/", {"period": "2026-10", "group_by": "department,llm"}).json()
    gpt4o = api.get(
        "/api/usage/", {"period": "2026-10", "llm": "sim/gpt-4o", "group_by": "user"}
    ).json()

    assert {row["department"]["cost_center"] for row in by_llm["results"]} == {"MKT-100"}
    expected = CallRecord.objects.filter(
        department=cast.marketing, started_at__gte=FIRST_INSTANT, started_at__lt=NEXT_MONTH_FIRST
    ).aggregate(c=Sum("cost"))["c"]
    assert Decimal(by_llm["totals"]["cost"]) == expected.quantize(Decimal("1e-10"))
    assert sum(Decimal(row["cost"]) for row in by_llm["results"]) == Decimal(
        by_llm["totals"]["cost"]
    )
    assert [row["user"]["username"] for row in gpt4o["results"]] == ["alice"]
    assert (
        gpt4o["totals"]["requests"]
        == CallRecord.objects.filter(
            department=cast.marketing,
            llm=cast.gpt4o,
            started_at__gte=FIRST_INSTANT,
            started_at__lt=NEXT_MONTH_FIRST,
        ).count()
    )
    # Asking for another department's usage finds nothing rather than leaking it.
    finance = api.get("/api/usage/", {"department": "FIN-200", "period": "2026-10"}).json()
    assert finance["results"] == [] and finance["totals"]["requests"] == 0


def test_api_usage_by_day_and_month_and_its_errors(october):
    cast = october
    api = APIClient()
    api.force_authenticate(cast.admin)

    by_day = api.get("/api/usage/", {"period": "2026-10-01..2026-10-31", "group_by": "day"})
    by_month = api.get("/api/usage/", {"group_by": "month,purpose", "purpose": "invoice triage"})

    assert by_day.status_code == 200
    assert len(by_day.json()["results"]) <= 31
    assert [row["month"] for row in by_month.json()["results"]] == ["2026-10"]
    assert api.get("/api/usage/", {"group_by": "colour"}).status_code == 400
    assert api.get("/api/usage/", {"period": "last tuesday"}).status_code == 400


def test_a_model_wide_grant_sees_every_department(client, october):
    cast = october
    cast.charlie.user_permissions.add(
        Permission.objects.get(codename="view_chargebackreport", content_type__app_label="audit")
    )
    html = login(client, cast.charlie).get("/reports/").content.decode()
    assert all(code in html for code in ("MKT-100", "FIN-200", "RES-300"))
