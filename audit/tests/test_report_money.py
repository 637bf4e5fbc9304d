"""Money has one unit (1e-10 USD) and one rounding rule: sums are exact on SQLite and
PostgreSQL, the XLSX agrees with the CSV to the cent and adds up, pages show one format."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.urls import reverse
from openpyxl import load_workbook

from audit import services
from audit.cost import call_cost
from audit.models import ChargebackReport, UsageRollup
from audit.money import cents, usd
from audit.reports import BREAKDOWNS, ROUNDING_ITEM
from audit.tests.make_records import create, record

pytestmark = pytest.mark.django_db

MONTH = dt.date(2026, 10, 1)
LAST_DAY = dt.date(2026, 10, 31)


def at(day: int) -> dt.datetime:
    return dt.datetime(2026, 10, day, 12, tzinfo=dt.UTC)


def csv_rows(report: ChargebackReport) -> list[dict]:
    return list(csv.DictReader(io.StringIO(bytes(report.csv_file).decode("utf-8-sig"))))


def build(cast, costs: dict[str, list[str]]) -> ChargebackReport:
    """Marketing's report for October, from calls by purpose."""
    records = [
        record(
            started_at=at(1 + n % 28),
            user=cast.alice,
            department=cast.marketing,
            llm=cast.gpt4o_mini,
            purpose=purpose,
            cost=Decimal(cost),
        )
        for purpose, amounts in costs.items()
        for n, cost in enumerate(amounts)
    ]
    create(*records)
    result = services.chargeback_build(month="2026-10")
    return next(r for r in result.reports if r.department_id == cast.marketing.pk)


def test_sums_are_exact_to_the_unit_from_records_to_rollups_to_reports(cast, client):
    # 15 significant digits each, as a record holds them; their sums need 16 and more.
    costs = {"large": ["99999.9999999999"] * 5, "tiny": ["0.0000000001"] * 7}
    report = build(cast, costs)
    exact = sum(Decimal(cost) for amounts in costs.values() for cost in amounts)
    assert exact == Decimal("500000.0000000002")

    rollups = UsageRollup.objects.filter(day__gte=MONTH, day__lte=LAST_DAY)
    assert rollups.aggregate(total=Sum("cost"))["total"] == exact
    assert report.total_cost == exact
    assert ChargebackReport.objects.get(pk=report.pk).total_cost == exact
    for name in BREAKDOWNS:
        lines = [row for row in csv_rows(report) if row["breakdown"] == name]
        assert sum(Decimal(row["cost_usd"]) for row in lines) == exact, name
    client.force_login(cast.admin)
    usage = client.get(reverse("api-usage"), {"period": "2026-10", "group_by": "purpose"}).json()
    assert Decimal(usage["totals"]["cost"]) == exact
    assert {row["purpose"]: row["cost"] for row in usage["results"]} == {
        "large": "499999.9999999995",
        "tiny": "0.0000000007",
    }
    assert "0.0000000001" in usage["precision"]


def test_the_xlsx_agrees_with_the_csv_to_the_cent_and_its_rows_add_up_to_its_total(cast):
    report = build(
        cast,
        {
            # Three amounts under half a cent: each shows 0.00, together they make a cent.
            "a": ["0.0040000000"],
            "b": ["0.0040000000"],
            "c": ["0.0040000000"],
            "large": ["99999.9999999999", "88888.8888888888"],
            "tiny": ["0.0085981500"] * 3,
        },
    )
    rows = csv_rows(report)
    (csv_total,) = [Decimal(row["cost_usd"]) for row in rows if row["breakdown"] == "total"]
    workbook = load_workbook(io.BytesIO(bytes(report.xlsx_file)))

    summary = {row[0]: row[1] for row in workbook["Summary"].iter_rows(values_only=True)}
    assert Decimal(summary["Total cost (USD, exact)"]) == csv_total
    assert Decimal(str(summary["Total cost (USD)"])) == cents(csv_total)
    assert "0.0000000001" in summary["Precision"]

    for name, (_columns, title) in BREAKDOWNS.items():
        expected = {row["item"]: row["cost_usd"] for row in rows if row["breakdown"] == name}
        header, *lines = workbook[title].iter_rows(values_only=True)
        assert header[6:] == ("Cost (USD)", "Cost (USD, exact)")
        *items, rounding, total = lines
        assert {item[0] for item in items} == set(expected)
        for item in items:
            number = item[6]
            # A number with at most two decimals, as written: no double artefacts.
            assert len(repr(number).partition(".")[2]) <= 2, number
            assert Decimal(str(number)) == cents(expected[item[0]]), (title, item[0])
            assert item[7] == expected[item[0]]
        assert rounding[0] == ROUNDING_ITEM
        assert total[0] == "Total" and Decimal(total[7]) == csv_total
        assert Decimal(str(total[6])) == cents(csv_total)
        cells = [Decimal(str(item[6])) for item in [*items, rounding]]
        assert sum(cells) == Decimal(str(total[6])), title
        # As Excel adds them: doubles, compared to the cent.
        assert round(sum(float(item[6]) for item in [*items, rounding]), 2) == total[6]
    purposes = workbook[BREAKDOWNS["purpose"][1]]
    by_item = {row[0]: row for row in purposes.iter_rows(values_only=True)}
    assert by_item["a"][6] == 0 and by_item[ROUNDING_ITEM][6] == 0.01


def test_a_calls_cost_is_rounded_once_half_up_to_the_unit():
    # 1 cached token at $0.00875 per million (Amazon Nova Micro) costs 8.75e-9 USD.
    cost = call_cost(
        prompt_tokens=1,
        completion_tokens=0,
        cached_tokens=1,
        input_price=Decimal("0.035"),
        output_price=Decimal("0.14"),
        cached_input_price=Decimal("0.00875"),
    )
    assert cost == Decimal("0.0000000088") and cost.as_tuple().exponent == -10


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("0", "$0.00"),
        ("0.0027", "$0.0027"),
        ("0.0085981500", "$0.0086"),
        ("0.0000000001", "$0.0000000001"),
        ("12.345", "$12.35"),
        ("1234567.891", "$1,234,567.89"),
        ("-0.5", "-$0.50"),
    ],
)
def test_pages_show_amounts_in_one_format(amount, shown):
    assert usd(Decimal(amount)) == shown


def test_a_report_of_a_fraction_of_a_cent_is_not_shown_as_zero(cast, client):
    report = build(cast, {"small": ["0.0027"]})
    assert report.total_cost == Decimal("0.0027")
    client.force_login(cast.admin)
    page = client.get(reverse("reports:list")).content.decode()
    assert "$0.0027" in page and ">0.00<" not in page
    listing = client.get(reverse("admin:audit_chargebackreport_changelist")).content.decode()
    assert "$0.0027" in listing
    change = client.get(reverse("admin:audit_chargebackreport_change", args=[report.pk]))
    assert "$0.0027" in change.content.decode()
    rollups = client.get(reverse("admin:audit_usagerollup_changelist")).content.decode()
    assert "$0.0027" in rollups
