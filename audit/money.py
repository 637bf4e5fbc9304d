"""Money: one unit, one rounding rule, one way to show it.

- Amounts are USD as `Decimal`, in steps of UNIT (1e-10 USD, a ten-thousandth of a
  millionth). A call's cost is rounded to UNIT once, half up, where it is computed
  (`audit.cost.call_cost`): a price with up to four decimals per million tokens (all but one
  catalog price) costs whole units, a finer one is rounded there by at most half a unit per
  call. Sums are never rounded.
- A call record keeps its cost as numeric(18, 10). Roll-ups and reports, which hold sums,
  keep theirs as an integer count of UNIT (`MoneyField`): sums of integers are exact on
  SQLite as on PostgreSQL (SQLite keeps a decimal as a 15-digit double, Django reads it back
  to 15 significant digits), up to 922 million USD per value.
- Pages show amounts through `usd()` (the `usd` template filter): cents, or two significant
  digits below a cent (`$0.0027`), never `0.00` for a non-zero amount. Files and the API
  carry exact strings (`money_text`).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import forms
from django.db import models

UNIT = Decimal("0.0000000001")
UNIT_PLACES = 10
UNITS_PER_USD = 10**UNIT_PLACES
CENT = Decimal("0.01")
PRECISION_NOTE = (
    "Amounts in USD, exact to 0.0000000001 (each call's cost rounded half up to that unit, "
    "sums not rounded)."
)


def money_round(value: Decimal | int | str) -> Decimal:
    """The one rounding rule: half up, to UNIT."""
    return Decimal(value).quantize(UNIT, rounding=ROUND_HALF_UP)


def money_text(value: Decimal | int | str | None) -> str:
    """An exact amount as a plain decimal string with ten places ("0.0085981500")."""
    return format(money_round(value or 0), "f")


def cents(value: Decimal | int | str | None) -> Decimal:
    """An amount rounded half up to the cent (spreadsheet numbers)."""
    return Decimal(value or 0).quantize(CENT, rounding=ROUND_HALF_UP)


def usd(value: Decimal | int | float | str | None) -> str:
    """How pages show an amount: "$1,234.57"; below a cent two significant digits
    ("$0.0027", "$0.00002"); "$0.00" only for zero."""
    if value is None or value == "":
        return "–"
    amount = Decimal(str(value))
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount == 0:
        return "$0.00"
    if amount >= CENT:
        return f"{sign}${cents(amount):,.2f}"
    step = Decimal(1).scaleb(max(amount.adjusted() - 1, -UNIT_PLACES))
    shown = format(amount.quantize(step, rounding=ROUND_HALF_UP).normalize(), "f")
    return f"{sign}${shown}"


def to_units(value: Decimal | int | str) -> int:
    return int(money_round(value).scaleb(UNIT_PLACES))


def from_units(units: int | Decimal) -> Decimal:
    return Decimal(int(units)).scaleb(-UNIT_PLACES)


class MoneyField(models.BigIntegerField):
    """A USD amount stored as an integer count of UNIT; Python sees a Decimal."""

    description = "USD amount (integer count of 1e-10 USD)"

    def from_db_value(self, value, expression, connection):
        return None if value is None else from_units(value)

    def to_python(self, value):
        if value is None or isinstance(value, Decimal):
            return value
        return money_round(value)

    def get_prep_value(self, value):
        value = models.Field.get_prep_value(self, value)
        return None if value is None else to_units(value)

    def formfield(self, **kwargs):
        return models.Field.formfield(
            self, **{"form_class": forms.DecimalField, "decimal_places": UNIT_PLACES, **kwargs}
        )


def units_sum(column: str):
    """SUM of a numeric(…, 10) column as an integer count of UNIT, exact on both databases:
    each value becomes whole units before it is added (on SQLite a value read as a double is
    within a fraction of a unit of its decimal, so ROUND restores it)."""
    return models.Sum(
        models.Func(
            models.F(column),
            template=f"CAST(ROUND(%(expressions)s * {UNITS_PER_USD}) AS bigint)",
            output_field=models.BigIntegerField(),
        ),
        output_field=models.BigIntegerField(),
    )
