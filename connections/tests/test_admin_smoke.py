"""Every ModelAdmin in the project, whoever wrote it: changelist, search, add, change, actions."""

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import RequestFactory
from django.urls import reverse

from gateway.services import apikey_create

# Read when the module is imported, after Django set up: every app's admin is in it.
REGISTRY = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)
IDS = [model._meta.label for model, _ in REGISTRY]


@pytest.fixture
def admin_client(client, cast, settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    # A row for the gateway's admin too, so its actions have something to act on.
    apikey_create(owner=cast.alice, department=cast.marketing, purpose="smoke")
    client.force_login(cast.admin)
    return client


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
    if first is not None:
        assert admin_client.get(url(model, "change", first.pk)).status_code == 200
        assert admin_client.get(url(model, "history", first.pk)).status_code == 200


@pytest.mark.parametrize(("model", "model_admin"), REGISTRY, ids=IDS)
def test_each_action_runs_on_the_existing_rows(admin_client, cast, model, model_admin):
    request = admin_request(cast.admin)
    actions = model_admin.get_actions(request)
    pks = list(model_admin.get_queryset(request).values_list("pk", flat=True)[:5])
    for name in actions:
        response = admin_client.post(
            url(model, "changelist"), {"action": name, ACTION_CHECKBOX_NAME: pks, "index": 0}
        )
        assert response.status_code in (200, 302), f"{model._meta.label}: action {name}"
        if response.status_code == 302:
            page = admin_client.get(response["Location"])
            assert page.status_code == 200
