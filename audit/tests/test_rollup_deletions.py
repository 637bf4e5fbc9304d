"""Deleting a user, an LLM, a key or a department breaks no month: roll-ups and reports keep
their ids and names, show "name (deleted)", and reconcile exactly with the call records."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from django.urls import reverse

from audit import services
from audit.models import CallRecord, UsageRollup
from audit.reports import BREAKDOWNS
from audit.tests.make_records import create, record
from connections.models import LLM
from connections.services import department_create, department_delete, llm_delete
from gateway.keys import apikey_create

pytestmark = pytest.mark.django_db

MONTH = dt.date(2026, 10, 1)
COSTS = [
    Decimal("0.0085981500"),
    Decimal("1234.5678901234"),
    Decimal("0.0000000001"),
    Decimal("17.0000000009"),
    Decimal("0.3333333333"),
]


def at(day: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(2026, 10, day, hour, tzinfo=dt.UTC)


def sums(queryset, column: str, key: str = "department_id") -> dict:
    rows = queryset.order_by().values(key).annotate(total=Sum(column))
    return {row[key]: row["total"] for row in rows}


def test_deletions_keep_every_cent_where_it_was_in_rollups_and_reports(cast, client):
    legal = department_create(actor=cast.admin, name="Legal", cost_center="LEG-400")
    dave = User.objects.create_user("dave", password="x")
    dave.groups.add(legal.group)
    gpt4o = LLM.objects.get(mesh_id="sim/gpt-4o")
    dave_key, _ = apikey_create(owner=dave, department=legal, purpose="contracts")
    bob_key, _ = apikey_create(owner=cast.bob, department=cast.finance, purpose="ledger")
    dave_prefix, bob_prefix = dave_key.prefix, bob_key.prefix
    ids = {"legal": legal.pk, "dave": dave.pk, "gpt4o": gpt4o.pk, "bob_key": bob_key.pk}

    records = []
    for n, cost in enumerate(COSTS * 4):
        day = 1 + n % 20
        who = n % 3
        if who == 0:
            fields = {"user": dave, "department": legal, "api_key": dave_key, "llm": gpt4o}
            fields["api_key_prefix"], fields["purpose"] = dave_prefix, "contracts"
        elif who == 1:
            fields = {"user": cast.bob, "department": cast.finance, "api_key": bob_key}
            fields |= {"llm": gpt4o, "api_key_prefix": bob_prefix, "purpose": "ledger"}
        else:
            fields = {"user": cast.alice, "department": cast.marketing, "llm": cast.gpt4o_mini}
        records.append(record(started_at=at(day), cost=cost, **fields))
    create(*records)
    # Roll-ups made before the deletions must keep their ids and spend too.
    services.usage_rollup_range(first=MONTH, last=MONTH + dt.timedelta(days=9))

    bob_key.delete()
    llm_delete(llm=gpt4o, actor=cast.admin)
    dave_key.delete()
    User.objects.filter(pk=dave.pk).delete()
    department_delete(department=legal, actor=cast.admin)

    # Later records of the deleted things, rolled up only after the deletions.
    services.usage_rollup_range(first=MONTH, last=dt.date(2026, 10, 31))
    result = services.chargeback_build(month="2026-10")

    month_records = CallRecord.objects.filter(started_at__gte=at(1, 0), started_at__lt=at(31, 23))
    month_rollups = UsageRollup.objects.filter(day__gte=MONTH, day__lte=dt.date(2026, 10, 31))
    by_record = sums(month_records, "cost")
    by_rollup = sums(month_rollups, "cost")
    assert None not in by_rollup, "no spend moved to (unassigned)"
    assert by_record == by_rollup
    assert set(by_record) == {cast.marketing.pk, cast.finance.pk, ids["legal"]}

    reports = {report.department_id: report for report in result.reports}
    assert set(reports) == {cast.marketing.pk, cast.finance.pk, cast.research.pk, ids["legal"]}
    legal_report = reports[ids["legal"]]
    assert legal_report.department_name == "Legal (deleted)"
    assert legal_report.cost_center == "LEG-400"
    for department_id, report in reports.items():
        assert report.total_cost == by_record.get(department_id, Decimal(0))
        for name in BREAKDOWNS:
            lines = report.breakdowns.get(name, [])
            assert sum(Decimal(line["cost"]) for line in lines) == report.total_cost, name

    labels = {line["item"] for line in legal_report.breakdowns["user"]}
    assert labels == {"dave (deleted)"}
    assert {line["item"] for line in legal_report.breakdowns["llm"]} == {"sim/gpt-4o (deleted)"}
    finance_keys = {line["item"] for line in reports[cast.finance.pk].breakdowns["api_key"]}
    assert finance_keys == {f"{bob_prefix} (deleted)"}
    assert "(deleted)" in bytes(legal_report.csv_file).decode("utf-8-sig")

    # The readers: /api/usage, the roll-up admin list and the dashboard.
    client.force_login(cast.admin)
    usage = client.get(
        reverse("api-usage"), {"period": "2026-10", "group_by": "department,user,llm"}
    ).json()
    legal_rows = [row for row in usage["results"] if row["department"]["id"] == ids["legal"]]
    assert {row["department"]["name"] for row in legal_rows} == {"Legal (deleted)"}
    assert {row["user"]["username"] for row in legal_rows} == {"dave (deleted)"}
    assert {row["llm"]["mesh_id"] for row in legal_rows} == {"sim/gpt-4o (deleted)"}
    assert sum(Decimal(row["cost"]) for row in legal_rows) == by_record[ids["legal"]]
    assert Decimal(usage["totals"]["cost"]) == sum(by_record.values())
    page = client.get(reverse("admin:audit_usagerollup_changelist"), {"day__month": "10"})
    assert page.status_code == 200 and b"Legal (deleted)" in page.content
    assert client.get(reverse("admin:audit_chargebackreport_changelist")).status_code == 200
