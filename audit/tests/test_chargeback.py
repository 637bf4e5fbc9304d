from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.db.models import Sum
from openpyxl import load_workbook

from audit import services
from audit.models import CallRecord, ChargebackReport, UsageRollup
from audit.reports import BREAKDOWNS
from audit.tests.usage_data import (
    FIRST_INSTANT,
    LAST_INSTANT,
    MONTH,
    NEXT_MONTH_FIRST,
    cents,
    generate_month,
)

pytestmark = pytest.mark.django_db


def csv_rows(report: ChargebackReport) -> list[dict]:
    text = bytes(report.csv_file).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def xlsx_sheets(report: ChargebackReport) -> dict[str, list[tuple]]:
    workbook = load_workbook(io.BytesIO(bytes(report.xlsx_file)), read_only=True)
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in workbook}


def month_cost(**filters) -> Decimal:
    records = CallRecord.objects.filter(
        started_at__gte=FIRST_INSTANT, started_at__lt=NEXT_MONTH_FIRST, **filters
    )
    return records.aggregate(cost=Sum("cost"))["cost"] or Decimal("0")


def test_a_month_reconciles_to_the_cent_from_records_to_rollups_to_reports_to_files(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=1500))
    records_total = month_cost()

    services.usage_rollup_range(first=MONTH, last=MONTH.replace(day=31))
    rollup_total = UsageRollup.objects.filter(day__month=10).aggregate(c=Sum("cost"))["c"]
    result = services.chargeback_build(month="2026-10", refresh_rollups=False)
    reports_total = sum(report.total_cost for report in result.reports)

    assert cents(records_total) == cents(rollup_total) == cents(reports_total)
    assert result.unassigned_cost == 0 and result.unassigned_requests == 2
    assert {r.department_name for r in result.reports} == {"Marketing", "Finance", "Research"}
    for report in result.reports:
        assert cents(report.total_cost) == cents(month_cost(department=report.department))
        assert report.cost_center == report.department.cost_center
        assert (
            report.requests
            == CallRecord.objects.filter(
                started_at__gte=FIRST_INSTANT,
                started_at__lt=NEXT_MONTH_FIRST,
                department=report.department,
            ).count()
        )

        rows = csv_rows(report)
        (total_row,) = [row for row in rows if row["breakdown"] == "total"]
        assert cents(total_row["cost_usd"]) == cents(report.total_cost)
        assert total_row["cost_center"] == report.cost_center
        for name in BREAKDOWNS:
            items = [row for row in rows if row["breakdown"] == name]
            assert items, name
            assert cents(sum(Decimal(row["cost_usd"]) for row in items)) == cents(
                report.total_cost
            ), name
            assert sum(int(row["requests"]) for row in items) == report.requests

        sheets = xlsx_sheets(report)
        summary = dict(sheets["Summary"])
        assert cents(Decimal(str(summary["Total cost (USD)"]))) == cents(report.total_cost)
        assert summary["Cost center"] == report.cost_center
        for _name, (_columns, title) in BREAKDOWNS.items():
            header, *items, total = sheets[title]
            assert header[-2:] == ("Cost (USD)", "Cost (USD, exact)")
            assert total[0] == "Total" and Decimal(total[-1]) == report.total_cost
            sheet_cost = sum(Decimal(str(item[-2])) for item in items)
            assert sheet_cost == Decimal(str(total[-2])) == cents(report.total_cost), title


def test_breakdowns_name_llms_users_purposes_and_key_prefixes(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=300))
    result = services.chargeback_build(month="2026-10")

    marketing = next(r for r in result.reports if r.department == cast.marketing)
    items = {name: {row["item"] for row in rows} for name, rows in marketing.breakdowns.items()}
    assert items["user"] == {"alice"}
    assert items["purpose"] == {"campaign copy", "=SUM(A1:A9)"}
    assert items["api_key"] == {"mg-alice01", "mg-alice02"}
    assert items["llm"] <= {"sim/gpt-4o", "sim/gpt-4o-mini", "sim/text-embedding-3-small"}
    finance = next(r for r in result.reports if r.department == cast.finance)
    assert "(no key)" in {row["item"] for row in finance.breakdowns["api_key"]}


def test_report_files_do_not_let_a_purpose_run_as_a_formula(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=300))
    report = next(
        r
        for r in services.chargeback_build(month="2026-10").reports
        if r.department_name == "Marketing"
    )

    purposes = [row["item"] for row in csv_rows(report) if row["breakdown"] == "purpose"]
    assert "'=SUM(A1:A9)" in purposes
    workbook = load_workbook(io.BytesIO(bytes(report.xlsx_file)))
    cells = [row[0] for row in workbook["By purpose"].iter_rows(min_row=2)]
    assert all(cell.data_type == "s" for cell in cells)


def test_regenerating_keeps_the_previous_version_and_marks_the_new_one_current(cast, admin_user):
    CallRecord.objects.bulk_create(generate_month(cast, count=200))
    first = services.chargeback_build(month="2026-10")
    CallRecord.objects.create(
        request_id="late-arrival",
        started_at=FIRST_INSTANT,
        endpoint="chat.completions",
        department=cast.finance,
        user=cast.bob,
        outcome="ok",
        cost=Decimal("3.00"),
    )

    second = services.chargeback_build(month="2026-10", actor=admin_user)

    old = next(r for r in first.reports if r.department == cast.finance)
    new = next(r for r in second.reports if r.department == cast.finance)
    old.refresh_from_db()
    assert (old.version, old.is_current) == (1, False)
    assert (new.version, new.is_current, new.generated_by) == (2, True, admin_user)
    assert new.total_cost - old.total_cost == Decimal("3.00")
    # The earlier file is still there, unchanged.
    assert cents(csv_rows(old)[0]["cost_usd"]) == cents(old.total_cost)
    assert ChargebackReport.objects.filter(month=MONTH, is_current=True).count() == 3


def test_a_department_without_calls_gets_a_zero_statement(cast):
    result = services.chargeback_build(month="2026-10")
    assert {r.department_name: r.total_cost for r in result.reports} == {
        "Marketing": 0,
        "Finance": 0,
        "Research": 0,
    }
    assert all(len(csv_rows(r)) == 1 for r in result.reports)


def test_calls_with_no_department_that_cost_something_show_as_unassigned(cast):
    CallRecord.objects.create(
        request_id="orphan",
        started_at=FIRST_INSTANT,
        endpoint="chat.completions",
        outcome="ok",
        cost=Decimal("0.42"),
    )
    result = services.chargeback_build(month="2026-10")
    assert (result.unassigned_cost, result.unassigned_requests) == (Decimal("0.42"), 1)
    assert sum(r.total_cost for r in result.reports) == 0


def test_a_redelivered_chargeback_task_builds_no_second_version(cast):
    from audit import tasks

    CallRecord.objects.bulk_create(generate_month(cast, count=200))

    first = tasks.build_chargeback.apply(args=["2026-10"], task_id="task-1").get()
    again = tasks.build_chargeback.apply(args=["2026-10"], task_id="task-1").get()
    other = tasks.build_chargeback.apply(args=["2026-10"], task_id="task-2").get()

    assert again["reports"] == first["reports"]
    assert set(other["reports"]).isdisjoint(first["reports"])
    versions = ChargebackReport.objects.filter(month=MONTH).values_list("version", flat=True)
    assert sorted(versions) == [1, 1, 1, 2, 2, 2]


def test_the_monthly_task_reports_the_month_before(cast, monkeypatch):
    import datetime as dt

    from django.utils import timezone

    from audit import tasks

    CallRecord.objects.bulk_create(generate_month(cast, count=50))
    monkeypatch.setattr(timezone, "now", lambda: dt.datetime(2026, 11, 1, 1, 30, tzinfo=dt.UTC))

    result = tasks.build_last_month_chargeback.apply().get()

    assert result["month"] == "2026-10"
    assert cents(sum(r.total_cost for r in ChargebackReport.objects.all())) == cents(month_cost())


def test_the_management_commands_roll_up_and_build_on_demand(cast):
    from django.core.management import call_command

    CallRecord.objects.bulk_create(generate_month(cast, count=100))
    out = io.StringIO()

    call_command("rollup_usage", "2026-10-01", "2026-10-31", stdout=out)
    call_command("build_chargeback", "2026-10", stdout=out)

    assert "Rolled up 31 day(s)" in out.getvalue()
    assert "Finance (FIN-200) v1" in out.getvalue()
    rollup_total = UsageRollup.objects.aggregate(c=Sum("cost"))["c"]
    assert cents(rollup_total) == cents(month_cost())
    with pytest.raises(Exception, match="Not a month"):
        call_command("build_chargeback", "October")


def test_breakdown_items_come_most_expensive_first_and_ties_by_name(cast):
    # A finance reader reads a statement top-down: the biggest spend first, equal spends in
    # the order of their names, in the report, its CSV and its spreadsheet alike.
    from audit.tests.make_records import create, record
    from connections.models import LLM

    # Made last, named first: the ties' order by name is not the order of their ids.
    aardvark = LLM.objects.create(
        connection=cast.connection,
        name="aardvark",
        approved=True,
        input_price=1,
        output_price=1,
        cached_input_price=1,
    )
    spend = [
        (cast.gpt4o, "b-purpose", "2.00"),
        (aardvark, "a-purpose", "2.00"),
        (cast.gpt4o_mini, "c-purpose", "5.00"),
        (cast.gpt4o_mini, "c-purpose", "0.50"),
    ]
    create(
        *(
            record(
                started_at=FIRST_INSTANT,
                user=cast.alice,
                department=cast.marketing,
                llm=llm,
                purpose=purpose,
                cost=Decimal(cost),
            )
            for llm, purpose, cost in spend
        )
    )
    result = services.chargeback_build(month="2026-10")
    report = next(r for r in result.reports if r.department == cast.marketing)

    def order(name: str) -> list[tuple[str, str]]:
        return [(line["item"], line["cost"]) for line in report.breakdowns[name]]

    assert [item for item, _cost in order("llm")] == [
        "sim/gpt-4o-mini",
        "sim/aardvark",
        "sim/gpt-4o",
    ]
    assert [Decimal(cost) for _item, cost in order("llm")] == [
        Decimal("5.50"),
        Decimal("2.00"),
        Decimal("2.00"),
    ]
    assert [item for item, _cost in order("purpose")] == ["c-purpose", "a-purpose", "b-purpose"]
    in_csv = [row["item"] for row in csv_rows(report) if row["breakdown"] == "llm"]
    assert in_csv == ["sim/gpt-4o-mini", "sim/aardvark", "sim/gpt-4o"]
    sheet = [row[0] for row in xlsx_sheets(report)["By purpose"][1:]]
    assert sheet[:3] == ["c-purpose", "a-purpose", "b-purpose"]


def test_a_repeated_generation_reports_the_same_unassigned_spend(cast):
    # A redelivered task returns the reports it built, and the unassigned figures with them.
    # Orphans on the month's first and last days count; one the next month does not.
    for n, (started, cost) in enumerate(
        [(FIRST_INSTANT, "0.40"), (LAST_INSTANT, "0.02"), (NEXT_MONTH_FIRST, "1.00")]
    ):
        CallRecord.objects.create(
            request_id=f"orphan-{n}",
            started_at=started,
            endpoint="chat.completions",
            outcome="ok",
            cost=Decimal(cost),
        )
    services.usage_rollup_range(first=NEXT_MONTH_FIRST.date(), last=NEXT_MONTH_FIRST.date())
    first = services.chargeback_build(month="2026-10", generation_id="g-1")
    again = services.chargeback_build(month="2026-10", generation_id="g-1")
    assert [r.pk for r in again.reports] == [r.pk for r in first.reports]
    assert (again.unassigned_cost, again.unassigned_requests) == (Decimal("0.42"), 2)
    assert (first.unassigned_cost, first.unassigned_requests) == (Decimal("0.42"), 2)


def test_counts_that_are_zero_stay_zero_in_the_statement(cast):
    # A department's sums of 0 (no errors, no cached tokens, no calls at all) are 0, not
    # "missing": `or 0` on each total must never turn a real 0 into anything else.
    from audit.tests.make_records import create, record

    create(
        record(started_at=FIRST_INSTANT, user=cast.alice, llm=cast.gpt4o, cost=Decimal("1.5")),
        record(started_at=LAST_INSTANT, user=cast.alice, llm=cast.gpt4o, cost=Decimal("0.5")),
    )
    reports = {r.department_name: r for r in services.chargeback_build(month="2026-10").reports}
    fields = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens")
    marketing = reports["Marketing"]
    assert [getattr(marketing, f) for f in fields] == [2, 0, 24, 60, 0]
    assert marketing.total_cost == Decimal("2.0")
    for line in marketing.breakdowns["llm"]:
        assert (line["requests"], line["errors"], line["cached_tokens"]) == (2, 0, 0)
    for name in ("Finance", "Research"):
        assert [getattr(reports[name], f) for f in fields] == [0, 0, 0, 0, 0], name
        assert reports[name].total_cost == 0


def test_a_deleted_department_and_a_new_one_of_the_same_name_each_get_their_statement(cast):
    # "Legal" deleted mid-month and a new "Legal" made: two statements, the old one's first
    # (ties of name are ordered by id), each with its own spend.
    from audit.tests.make_records import create, record
    from connections.services import department_create, department_delete

    old = department_create(actor=cast.admin, name="Legal", cost_center="LEG-1")
    create(record(started_at=FIRST_INSTANT, department=old, cost=Decimal("1.25")))
    services.usage_rollup_range(first=MONTH, last=MONTH)
    old_id = old.pk
    department_delete(department=old, actor=cast.admin)
    new = department_create(actor=cast.admin, name="Legal", cost_center="LEG-2")
    create(record(started_at=LAST_INSTANT, department=new, cost=Decimal("0.75")))

    reports = services.chargeback_build(month="2026-10").reports
    legal = [(r.department_id, r.department_name, r.total_cost) for r in reports]
    legal = [line for line in legal if line[1].startswith("Legal")]
    assert legal == [
        (old_id, "Legal (deleted)", Decimal("1.25")),
        (new.pk, "Legal", Decimal("0.75")),
    ]
    # The roll-ups recomputed after the deletion keep the old one's name and cost center.
    snapshots = UsageRollup.objects.values_list("department_id", "department_name", "cost_center")
    assert set(snapshots.filter(department_id__in=[old_id, new.pk])) == {
        (old_id, "Legal", "LEG-1"),
        (new.pk, "Legal", "LEG-2"),
    }
