"""Roll-up and report amounts become integer counts of 1e-10 USD (audit.money.MoneyField):
their sums are then exact on SQLite as on PostgreSQL. Values are copied, not recomputed."""

from decimal import Decimal

from django.db import migrations
from django.db.models import BigIntegerField, F, Func

import audit.money

UNITS = 10**10


def to_units(column: str) -> Func:
    return Func(
        F(column),
        template=f"CAST(ROUND(%(expressions)s * {UNITS}) AS bigint)",
        output_field=BigIntegerField(),
    )


def copy_amounts(apps, schema_editor) -> None:
    apps.get_model("audit", "UsageRollup").objects.update(cost_units=to_units("cost"))
    apps.get_model("audit", "ChargebackReport").objects.update(
        total_cost_units=to_units("total_cost")
    )


def money_field() -> audit.money.MoneyField:
    return audit.money.MoneyField(default=Decimal("0"))


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_rollup_trail_references")]

    operations = [
        migrations.AddField("usagerollup", "cost_units", money_field()),
        migrations.AddField("chargebackreport", "total_cost_units", money_field()),
        migrations.RunPython(copy_amounts, migrations.RunPython.noop, elidable=True),
        migrations.RemoveField("usagerollup", "cost"),
        migrations.RemoveField("chargebackreport", "total_cost"),
        migrations.RenameField("usagerollup", "cost_units", "cost"),
        migrations.RenameField("chargebackreport", "total_cost_units", "total_cost"),
    ]
