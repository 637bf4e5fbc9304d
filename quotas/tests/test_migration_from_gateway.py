"""Quotas left gateway for an app of their own: grants made before the move still hold after it.

The schema the test database starts with is the final one, so the test records every migration
as applied, walks quotas back out (its content types return to app_label "gateway", the state
of gateway 0002), grants there as a deployment of the old code would have, and migrates forward
again with Django's MigrationExecutor, on whichever database the suite runs on.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from guardian.core import ObjectPermissionChecker
from guardian.models import GroupObjectPermission, UserObjectPermission

from quotas.models import Quota

pytestmark = pytest.mark.django_db(transaction=True)

MOVED = ("quota", "quotacounter", "quotaalert", "ratelimit")


def executor() -> MigrationExecutor:
    return MigrationExecutor(connection)


@pytest.fixture
def real_migrations(settings):
    settings.MIGRATION_MODULES = {}  # the suite runs with --nomigrations
    recorder = executor().recorder
    recorder.ensure_schema()
    applied_before = set(recorder.applied_migrations())
    for key in executor().loader.graph.nodes:
        recorder.record_applied(*key)
    ContentType.objects.clear_cache()
    yield
    ContentType.objects.clear_cache()
    for key in set(recorder.applied_migrations()) - applied_before:
        recorder.record_unapplied(*key)


def test_permissions_granted_under_gateway_hold_under_quotas(real_migrations):
    quota = Quota.objects.create(name="Marketing monthly", amount=Decimal("1"))
    back = executor()
    back.migrate([("quotas", None)])
    labels = dict(ContentType.objects.filter(model__in=MOVED).values_list("model", "app_label"))
    assert labels == dict.fromkeys(MOVED, "gateway")

    # Granted the way the old code would have: through gateway's content type.
    old_type = ContentType.objects.get(app_label="gateway", model="quota")
    view = Permission.objects.get(content_type=old_type, codename="view_quota")
    change = Permission.objects.get(content_type=old_type, codename="change_quota")
    reader = User.objects.create_user("reader", password="x", is_staff=True)
    reader.user_permissions.add(view)
    editor = User.objects.create_user("editor", password="x")
    # bulk_create: guardian's save() resolves the object through today's models.
    UserObjectPermission.objects.bulk_create(
        [
            UserObjectPermission(
                user=editor, permission=change, content_type=old_type, object_pk=str(quota.pk)
            )
        ]
    )
    team = Group.objects.create(name="Finance")
    team_member = User.objects.create_user("member", password="x")
    team_member.groups.add(team)
    GroupObjectPermission.objects.bulk_create(
        [
            GroupObjectPermission(
                group=team, permission=change, content_type=old_type, object_pk=str(quota.pk)
            )
        ]
    )

    forward = executor()
    forward.migrate(forward.loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()

    labels = dict(ContentType.objects.filter(model__in=MOVED).values_list("model", "app_label"))
    assert labels == dict.fromkeys(MOVED, "quotas")
    assert ContentType.objects.get_for_model(Quota).pk == old_type.pk

    reader = User.objects.get(pk=reader.pk)
    assert reader.has_perm("quotas.view_quota")
    assert not reader.has_perm("gateway.view_quota")
    client = Client()
    client.force_login(reader)
    assert client.get("/api/quotas/").status_code == 200

    editor = User.objects.get(pk=editor.pk)
    assert ObjectPermissionChecker(editor).has_perm("change_quota", quota)
    assert editor.has_perm("quotas.change_quota", quota)
    member = User.objects.get(pk=team_member.pk)
    assert member.has_perm("quotas.change_quota", quota)
    other = Quota.objects.create(name="Other", amount=Decimal("1"))
    assert not editor.has_perm("quotas.change_quota", other)


def test_the_tables_keep_their_names():
    assert Quota._meta.db_table == "gateway_quota"
    assert {m._meta.db_table for m in Quota._meta.apps.get_app_config("quotas").get_models()} == {
        "gateway_quota",
        "gateway_quotacounter",
        "gateway_quotaalert",
        "gateway_ratelimit",
    }
