"""Leave room in call records' pages so a record's completion can update it in place.

A completion that changes no indexed column (the LLM and connection are set when
the record is opened) can be a HOT update on PostgreSQL when its page has room:
no new index entries, less to vacuum. At the default fillfactor (100) the
opening inserts fill each page, and every completion moves its row elsewhere.
"""

from django.db import migrations


def leave_room(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE audit_callrecord SET (fillfactor = 80)")


def fill_up(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE audit_callrecord RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_trail_references_without_constraints")]

    operations = [migrations.RunPython(leave_room, fill_up)]
