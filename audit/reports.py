"""Chargeback report files: CSV (one table, a row per breakdown item) and XLSX (a summary sheet
and a sheet per breakdown). The CSV's costs are exact (ten decimals, see audit.money), so each
breakdown's rows add up to the total exactly; the XLSX has them as text beside cents."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from openpyxl import Workbook
from openpyxl.styles import Font

from .models import ChargebackReport
from .money import PRECISION_NOTE, cents, money_text

# A report's sections: name -> (roll-up columns grouped by, title).
BREAKDOWNS = {
    "llm": (("llm_id",), "By LLM"),
    "user": (("user_id",), "By user"),
    "purpose": (("purpose",), "By purpose"),
    "api_key": (("api_key_id", "api_key_prefix"), "By API key"),
}

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CONTENT_TYPES = {"csv": CSV_CONTENT_TYPE, "xlsx": XLSX_CONTENT_TYPE}

NUMBER_COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens")
CSV_HEADER = (
    "month",
    "department",
    "cost_center",
    "version",
    "breakdown",
    "item",
    *NUMBER_COLUMNS,
    "cost_usd",
)
COST_FORMAT = "#,##0.00"


def safe_text(value: str) -> str:
    """Neutralize spreadsheet formulas: purposes and names are typed by users, and a cell
    starting with = + - @ would be evaluated by whoever opens the file."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value


def _total_row(report: ChargebackReport) -> dict:
    return {
        "item": "Total",
        "requests": report.requests,
        "errors": report.errors,
        "prompt_tokens": report.prompt_tokens,
        "completion_tokens": report.completion_tokens,
        "cached_tokens": report.cached_tokens,
        "cost": report.total_cost,
    }


def render_csv(report: ChargebackReport) -> bytes:
    """A row for the total (breakdown "total"), then one per item of each breakdown."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    prefix = [
        f"{report.month:%Y-%m}",
        safe_text(report.department_name),
        safe_text(report.cost_center),
        report.version,
    ]
    sections = [("total", [_total_row(report)])]
    sections += [(name, report.breakdowns.get(name, [])) for name in BREAKDOWNS]
    for name, items in sections:
        for item in items:
            writer.writerow(
                [
                    *prefix,
                    name,
                    safe_text(str(item["item"])),
                    *(item[column] for column in NUMBER_COLUMNS),
                    money_text(item["cost"]),
                ]
            )
    # A BOM lets Excel open the UTF-8 file with the right accents.
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


ROUNDING_ITEM = "Rounding to the cent"
XLSX_PRECISION = (
    f"{PRECISION_NOTE} 'Cost (USD)' numbers are rounded half up to the cent, and each sheet's "
    f"'{ROUNDING_ITEM}' line makes its rows add up to its total; 'exact' columns and the CSV "
    "carry the full amounts."
)


def render_xlsx(report: ChargebackReport) -> bytes:
    """Amounts as cents (numbers a spreadsheet adds up without surprises) beside the exact
    amounts as text: a spreadsheet number is a double, which holds 15 significant digits."""
    workbook = Workbook()
    bold = Font(bold=True)
    summary = workbook.active
    summary.title = "Summary"
    for label, value in (
        ("Month", f"{report.month:%Y-%m}"),
        ("Department", safe_text(report.department_name)),
        ("Cost center", safe_text(report.cost_center)),
        ("Version", report.version),
        ("Generated at (UTC)", f"{report.generated_at:%Y-%m-%d %H:%M:%S}"),
        ("Requests", report.requests),
        ("Errors", report.errors),
        ("Prompt tokens", report.prompt_tokens),
        ("Completion tokens", report.completion_tokens),
        ("Cached tokens", report.cached_tokens),
        ("Total cost (USD)", cents(report.total_cost)),
        ("Total cost (USD, exact)", money_text(report.total_cost)),
        ("Precision", XLSX_PRECISION),
    ):
        summary.append([label, value])
        summary.cell(row=summary.max_row, column=1).font = bold
        if label == "Total cost (USD)":
            summary.cell(row=summary.max_row, column=2).number_format = COST_FORMAT
    summary.column_dimensions["A"].width = 24
    summary.column_dimensions["B"].width = 28

    header = ["Item", "Requests", "Errors", "Prompt tokens", "Completion tokens"]
    header += ["Cached tokens", "Cost (USD)", "Cost (USD, exact)"]
    total = _total_row(report)
    for name, (_columns, title) in BREAKDOWNS.items():
        sheet = workbook.create_sheet(title)
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = bold
        items = report.breakdowns.get(name, [])
        rows = [
            [
                safe_text(str(item["item"])),
                *(item[column] for column in NUMBER_COLUMNS),
                cents(item["cost"]),
                money_text(item["cost"]),
            ]
            for item in items
        ]
        rounding = cents(total["cost"]) - sum((row[6] for row in rows), Decimal(0))
        rows.append([ROUNDING_ITEM, *([None] * len(NUMBER_COLUMNS)), rounding, None])
        rows.append(
            [
                "Total",
                *(total[column] for column in NUMBER_COLUMNS),
                cents(total["cost"]),
                money_text(total["cost"]),
            ]
        )
        for row in rows:
            sheet.append(row)
            sheet.cell(row=sheet.max_row, column=7).number_format = COST_FORMAT
        for cell in sheet[sheet.max_row]:
            cell.font = bold
        sheet.column_dimensions["A"].width = 40
        sheet.column_dimensions["H"].width = 24
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
