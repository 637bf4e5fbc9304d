"""Move the content types of quotas' models from app_label gateway to quotas.

Permissions (auth.Permission) and guardian's object permissions point at content types by id:
relabelling the rows in place keeps every grant made before the move (gateway.view_quota
becomes quotas.view_quota for the same users and groups).
"""

from django.db import migrations

MODELS = ("quota", "quotacounter", "quotaalert", "ratelimit")


def relabel(apps, schema_editor, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model in MODELS:
        moved = ContentType.objects.using(db).filter(app_label=old, model=model).first()
        if moved is None:
            continue
        # A content type already made under the new label (a run of `migrate` that created it
        # before this migration) holds no grants worth keeping over the old one's.
        stale = ContentType.objects.using(db).filter(app_label=new, model=model).first()
        if stale is not None:
            stale.delete()
        moved.app_label = new
        moved.save(update_fields=["app_label"])


def forwards(apps, schema_editor) -> None:
    relabel(apps, schema_editor, "gateway", "quotas")


def backwards(apps, schema_editor) -> None:
    relabel(apps, schema_editor, "quotas", "gateway")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("quotas", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
