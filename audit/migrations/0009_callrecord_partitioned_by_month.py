"""On PostgreSQL, the call table becomes partitioned by UTC month on `started_at`, rows kept.

A partitioned table enforces only keys that hold its partition key: the request id's unique
constraint takes the start time in (on every database, so the model says one thing), and
the conversion (audit.partitions.partition_table) gives the table the primary key
(id, started_at). SQLite keeps its plain table: the conversion does nothing there.

The conversion copies every row under an exclusive lock: on a large table, plan a
maintenance window (bench/audit_partitions.py times it). `migrate` then creates the
partitions ahead (audit.apps, post_migrate), as the daily task does.
"""

from django.db import migrations, models


def partition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        from django.conf import settings

        from audit.partitions import partition_table

        partition_table(ahead=settings.MESHGATE_AUDIT_PARTITIONS_AHEAD)


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        from audit.partitions import unpartition_table

        unpartition_table()


class Migration(migrations.Migration):
    dependencies = [("audit", "0008_money_in_units")]

    operations = [
        migrations.RemoveConstraint(model_name="callrecord", name="call_request_id_unique"),
        migrations.AddConstraint(
            model_name="callrecord",
            constraint=models.UniqueConstraint(
                fields=("request_id", "started_at"), name="call_request_started_unique"
            ),
        ),
        migrations.RunPython(partition, unpartition),
    ]
