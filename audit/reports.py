"""Chargeback report files: CSV (one table, a row per breakdown item) and XLSX (a summary sheet
and a sheet per breakdown). Costs keep their full precision, so the rows add up to the total to
the cent; spreadsheet programs round them for display only."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from openpyxl import Workbook
from openpyxl.styles import Font

from .models import ChargebackReport
from .services import BREAKDOWNS

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
COST_FORMAT = "#,##0.00########"


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
                    Decimal(item["cost"]),
                ]
            )
    # A BOM lets Excel open the UTF-8 file with the right accents.
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def render_xlsx(report: ChargebackReport) -> bytes:
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
        ("Total cost (USD)", Decimal(report.total_cost)),
    ):
        summary.append([label, value])
        summary.cell(row=summary.max_row, column=1).font = bold
    summary.cell(row=summary.max_row, column=2).number_format = COST_FORMAT
    summary.column_dimensions["A"].width = 22
    summary.column_dimensions["B"].width = 28

    header = ["Item", "Requests", "Errors", "Prompt tokens", "Completion tokens"]
    header += ["Cached tokens", "Cost (USD)"]
    for name, (_column, title) in BREAKDOWNS.items():
        sheet = workbook.create_sheet(title)
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = bold
        for item in report.breakdowns.get(name, []):
            sheet.append(
                [
                    safe_text(str(item["item"])),
                    *(item[column] for column in NUMBER_COLUMNS),
                    Decimal(item["cost"]),
                ]
            )
            sheet.cell(row=sheet.max_row, column=7).number_format = COST_FORMAT
        sheet.column_dimensions["A"].width = 40
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
