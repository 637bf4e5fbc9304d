"""Every ModelAdmin in the project, whoever wrote it: changelist, search, add, change, actions."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from audit.services import chargeback_build, usage_rollup_day
from audit.tests import make_records
from connections.services import department_create
from gateway.keys import apikey_create
from quotas import runtime
from quotas.models import QuotaAlert
from quotas.services import quota_create, ratelimit_create

# Read when the module is imported, after Django set up: every app's admin is in it.
REGISTRY = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)
IDS = [model._meta.label for model, _ in REGISTRY]


def rows_for_every_admin(cast) -> None:
    """At least one row behind every registered admin (the cast covers users, groups,
    departments, the connection, LLMs and the alias), so each change page and action runs."""
    api_key, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="smoke")
    department_create(actor=cast.admin, name="Legal", cost_center="LG-100")  # a ChangeEvent
    yesterday = timezone.localdate() - dt.timedelta(days=1)
    started = timezone.make_aware(dt.datetime.combine(yesterday, dt.time(12)))
    make_records.create(
        make_records.record(
            user=cast.alice, llm=cast.gpt4o_mini, api_key_id=api_key.pk, started_at=started
        ),
        make_records.record(user=cast.bob, llm=cast.gpt4o_mini, started_at=started),
    )
    usage_rollup_day(day=yesterday)
    chargeback_build(month=yesterday.replace(day=1), actor=cast.admin, refresh_rollups=False)
    quota = quota_create(name="Marketing monthly", amount=Decimal("10"), department=cast.marketing)
    QuotaAlert.objects.create(quota=quota, period_start=started, threshold=80, spent=Decimal("8.5"))
    ratelimit_create(name="Key RPM", scope="api_key", requests_per_minute=60)


@pytest.fixture
def admin_client(client, cast, settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    rows_for_every_admin(cast)
    client.force_login(cast.admin)
    yield client
    # The quota created above is cached by the admission code: later tests must not see it.
    runtime.start()


def url(model, name, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{name}", args=args)


def admin_request(user):
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


@pytest.mark.parametrize(("model", "model_admin"), REGISTRY, ids=IDS)
def test_changelist_search_add_and_change_pages(admin_client, cast, model, model_admin):
    assert admin_client.get(url(model, "changelist")).status_code == 200
    if model_admin.get_search_fields(admin_request(cast.admin)):
        assert admin_client.get(url(model, "changelist"), {"q": "a"}).status_code == 200
    add = admin_client.get(url(model, "add"))
    if model_admin.has_add_permission(admin_request(cast.admin)):
        assert add.status_code == 200
    else:
        assert add.status_code == 403
    first = model_admin.get_queryset(admin_request(cast.admin)).first()
    assert first is not None, f"add a {model._meta.label} row to rows_for_every_admin()"
    assert admin_client.get(url(model, "change", first.pk)).status_code == 200
    assert admin_client.get(url(model, "history", first.pk)).status_code == 200


@pytest.mark.parametrize(("model", "model_admin"), REGISTRY, ids=IDS)
def test_each_action_runs_on_the_existing_rows(admin_client, cast, model, model_admin):
    request = admin_request(cast.admin)
    actions = model_admin.get_actions(request)
    pks = list(model_admin.get_queryset(request).values_list("pk", flat=True)[:5])
    assert pks, f"add a {model._meta.label} row to rows_for_every_admin()"
    for name in actions:
        response = admin_client.post(
            url(model, "changelist"), {"action": name, ACTION_CHECKBOX_NAME: pks, "index": 0}
        )
        assert response.status_code in (200, 302), f"{model._meta.label}: action {name}"
        if response.status_code == 302:
            page = admin_client.get(response["Location"])
            assert page.status_code == 200
