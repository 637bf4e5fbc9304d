from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from connections import services
from connections.models import LLM, Alias, ChangeEvent, Connection, Department


@pytest.fixture(autouse=True)
def _local_upstreams_allowed(settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True


@pytest.fixture
def admin_client(client, cast):
    client.force_login(cast.admin)
    return client


def connection_form(**overrides):
    data = {
        "name": "Local vLLM",
        "slug": "vllm",
        "kind": "openai_compatible",
        "description": "",
        "base_url": "http://127.0.0.1:8000/v1",
        "api_version": "",
        "region": "",
        "options": "{}",
        "enabled": "on",
        "timeout_seconds": "30",
        "max_retries": "1",
        "payload_policy": "full",
        "api_key": "",
    }
    data.update(overrides)
    return data


def test_adding_a_connection_encrypts_its_key_and_records_the_admin(admin_client, cast):
    response = admin_client.post(
        reverse("admin:connections_connection_add"), connection_form(api_key="vllm-admin-key-1")
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    connection = Connection.objects.get(slug="vllm")
    assert connection.get_secrets() == {"api_key": "vllm-admin-key-1"}
    assert connection.created_by == cast.admin
    event = ChangeEvent.objects.get(event_type=ChangeEvent.Type.CONNECTION_CREATED)
    assert event.actor == cast.admin


def test_the_change_page_says_when_a_secret_was_set_and_never_shows_it(admin_client, cast):
    page = admin_client.get(
        reverse("admin:connections_connection_change", args=[cast.connection.pk])
    )
    html = page.content.decode()
    assert "Set on " in html and "sim-secret-key-not-real" not in html
    assert 'name="api_key"' in html and "Simulator</strong>" in html
    # Only this kind's secret fields; the add page offers every kind's.
    assert 'name="aws_secret_access_key"' not in html
    add = admin_client.get(reverse("admin:connections_connection_add")).content.decode()
    assert 'name="aws_secret_access_key"' in add and 'name="api_key"' in add


def test_an_empty_secret_field_keeps_the_key_and_a_new_value_replaces_it(admin_client, cast):
    url = reverse("admin:connections_connection_change", args=[cast.connection.pk])
    form = connection_form(
        name="Simulator", slug="sim", base_url=cast.connection.base_url, is_simulator="on"
    )
    assert admin_client.post(url, {**form, "timeout_seconds": "12"}).status_code == 302
    cast.connection.refresh_from_db()
    assert cast.connection.get_secrets()["api_key"] == "sim-secret-key-not-real"
    assert cast.connection.timeout_seconds == 12
    replace = {**form, "timeout_seconds": "12", "api_key": "replaced-key-2"}
    assert admin_client.post(url, replace).status_code == 302
    cast.connection.refresh_from_db()
    assert cast.connection.get_secrets()["api_key"] == "replaced-key-2"
    types = list(ChangeEvent.objects.order_by("id").values_list("event_type", flat=True))
    assert types == [ChangeEvent.Type.CONNECTION_UPDATED, ChangeEvent.Type.SECRET_REPLACED]


def test_a_metadata_base_url_is_refused_with_a_clear_error(admin_client):
    response = admin_client.post(
        reverse("admin:connections_connection_add"),
        connection_form(base_url="http://169.254.169.254/v1", api_key="k-123"),
    )
    assert response.status_code == 200
    assert "metadata addresses are never allowed" in response.content.decode()
    assert not Connection.objects.filter(slug="vllm").exists()


def test_a_failed_submit_does_not_echo_the_typed_secret(admin_client):
    response = admin_client.post(
        reverse("admin:connections_connection_add"),
        connection_form(base_url="ftp://x", api_key="typed-secret-echo-check"),
    )
    assert response.status_code == 200
    assert "typed-secret-echo-check" not in response.content.decode()


def test_the_connection_list_shows_kind_counts_and_the_simulator_label(admin_client, cast):
    html = admin_client.get(reverse("admin:connections_connection_changelist")).content.decode()
    assert "Simulator" in html
    assert '<td class="field-model_count">4</td>' in html
    assert '<td class="field-approved_count">3</td>' in html


def test_the_llm_list_shows_cost_speed_and_groups(admin_client, cast):
    services.llm_update(llm=cast.gpt4o, actor=cast.admin, catalog_tokens_per_second=110)
    html = admin_client.get(reverse("admin:connections_llm_changelist")).content.decode()
    assert "$2.50" in html and "$10.00" in html and "$1.25" in html
    assert "110 tok/s | not measured" in html
    assert "Finance, Marketing" in html


def test_bulk_approve_and_withdraw(admin_client, cast):
    url = reverse("admin:connections_llm_changelist")
    admin_client.post(url, {"action": "approve", ACTION_CHECKBOX_NAME: [cast.unapproved.pk]})
    cast.unapproved.refresh_from_db()
    assert cast.unapproved.approved and cast.unapproved.approved_by == cast.admin
    admin_client.post(
        url, {"action": "withdraw", ACTION_CHECKBOX_NAME: [cast.unapproved.pk, cast.gpt4o.pk]}
    )
    assert not LLM.objects.filter(
        pk__in=[cast.unapproved.pk, cast.gpt4o.pk], approved=True
    ).exists()


def test_grant_to_group_shows_a_page_to_pick_groups_then_grants(admin_client, cast):
    url = reverse("admin:connections_llm_changelist")
    selection = {"action": "grant_to_groups", ACTION_CHECKBOX_NAME: [cast.gpt4o.pk]}
    page = admin_client.post(url, selection)
    assert page.status_code == 200
    assert "Research" in page.content.decode() and "sim/gpt-4o" in page.content.decode()
    done = admin_client.post(
        url, {**selection, "apply": "1", "groups": [cast.research.group.pk, cast.finance.group.pk]}
    )
    assert done.status_code == 302
    assert [g.name for g in services.llm_groups(cast.gpt4o)] == ["Finance", "Marketing", "Research"]
    assert ChangeEvent.objects.filter(event_type=ChangeEvent.Type.GRANT_ADDED).count() == 2


def test_revoke_from_group(admin_client, cast):
    url = reverse("admin:connections_llm_changelist")
    admin_client.post(
        url,
        {
            "action": "revoke_from_groups",
            ACTION_CHECKBOX_NAME: [cast.gpt4o_mini.pk, cast.embedding.pk],
            "apply": "1",
            "groups": [cast.finance.group.pk],
        },
    )
    assert set(LLM.objects.usable_by(cast.bob)) == set()


def test_the_llm_page_edits_prices_and_groups_through_the_services(admin_client, cast):
    url = reverse("admin:connections_llm_change", args=[cast.gpt4o_mini.pk])
    page = admin_client.get(url).content.decode()
    assert "Marketing" in page and "Finance" in page
    data = {
        "kind": "chat",
        "description": "",
        "approved": "on",
        "groups": [cast.research.group.pk],
        "input_price": "0.10",
        "output_price": "0.60",
        "cached_input_price": "0.075",
        "context_window": "128000",
        "max_output_tokens": "",
        "catalog_tokens_per_second": "",
        "catalog_date": "",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    cast.gpt4o_mini.refresh_from_db()
    assert cast.gpt4o_mini.input_price == Decimal("0.10")
    assert [g.name for g in services.llm_groups(cast.gpt4o_mini)] == ["Research"]
    types = set(ChangeEvent.objects.values_list("event_type", flat=True))
    assert types == {
        ChangeEvent.Type.LLM_UPDATED,
        ChangeEvent.Type.GRANT_ADDED,
        ChangeEvent.Type.GRANT_REMOVED,
    }
    assert all(e.actor == cast.admin for e in ChangeEvent.objects.all())


def test_the_alias_inline_sets_the_targets_in_order(admin_client, cast):
    url = reverse("admin:connections_alias_change", args=[cast.alias.pk])
    targets = list(cast.alias.targets.order_by("position"))
    data = {
        "name": "chat-default",
        "description": "Default chat model",
        "targets-TOTAL_FORMS": "3",
        "targets-INITIAL_FORMS": "2",
        "targets-MIN_NUM_FORMS": "0",
        "targets-MAX_NUM_FORMS": "1000",
        "targets-0-id": targets[0].pk,
        "targets-0-alias": cast.alias.pk,
        "targets-0-llm": cast.gpt4o.pk,
        "targets-0-position": "2",
        "targets-1-id": targets[1].pk,
        "targets-1-alias": cast.alias.pk,
        "targets-1-llm": cast.gpt4o_mini.pk,
        "targets-1-position": "1",
        "targets-2-alias": cast.alias.pk,
        "targets-2-llm": cast.unapproved.pk,
        "targets-2-position": "0",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    order = list(cast.alias.targets.order_by("position").values_list("llm__name", flat=True))
    assert order == ["unapproved-model", "gpt-4o-mini", "gpt-4o"]
    assert ChangeEvent.objects.get().actor == cast.admin


def test_adding_an_alias_with_targets(admin_client, cast):
    data = {
        "name": "embed-default",
        "description": "",
        "targets-TOTAL_FORMS": "1",
        "targets-INITIAL_FORMS": "0",
        "targets-MIN_NUM_FORMS": "0",
        "targets-MAX_NUM_FORMS": "1000",
        "targets-0-llm": cast.embedding.pk,
        "targets-0-position": "0",
    }
    response = admin_client.post(reverse("admin:connections_alias_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    alias = Alias.objects.get(name="embed-default")
    assert [t.llm for t in alias.targets.all()] == [cast.embedding]


def test_adding_and_renaming_a_department(admin_client, cast):
    add = reverse("admin:connections_department_add")
    response = admin_client.post(add, {"name": "Legal", "cost_center": "LEG-400", "contacts": ""})
    assert response.status_code == 302, response.content.decode()[:3000]
    legal = Department.objects.get(cost_center="LEG-400")
    change = reverse("admin:connections_department_change", args=[legal.pk])
    admin_client.post(change, {"name": "Legal team", "cost_center": "LEG-400", "contacts": ""})
    legal.refresh_from_db()
    assert legal.group.name == "Legal team"
    duplicate = admin_client.post(add, {"name": "Other", "cost_center": "MKT-100", "contacts": ""})
    assert duplicate.status_code == 200 and not Department.objects.filter(group__name="Other")


def test_the_change_log_is_read_only_even_for_superusers(admin_client, cast):
    services.llm_approve(llm=cast.unapproved, actor=cast.admin)
    event = ChangeEvent.objects.get()
    assert admin_client.get(reverse("admin:connections_changeevent_add")).status_code == 403
    page = admin_client.get(reverse("admin:connections_changeevent_change", args=[event.pk]))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(page.wsgi_request.path, {"event_type": "x"}).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:connections_changeevent_delete", args=[event.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert ChangeEvent.objects.filter(pk=event.pk).exists()


def test_the_change_log_list_summarises_each_change(admin_client, cast):
    services.llm_update(llm=cast.gpt4o, actor=cast.admin, input_price=Decimal("2.00"))
    services.llm_grant(llm=cast.gpt4o, group=cast.research.group, actor=cast.bob)
    html = admin_client.get(reverse("admin:connections_changeevent_changelist")).content.decode()
    assert "changed: input_price: 2.50 → 2.00" in html
    assert "group: Research" in html and "bob" in html


def test_the_department_page_lists_members_and_viewers(admin_client, cast):
    from guardian.shortcuts import assign_perm

    assign_perm("connections.view_department_reports", cast.bob, cast.marketing)
    assign_perm("connections.view_department_audit", cast.finance.group, cast.marketing)
    url = reverse("admin:connections_department_change", args=[cast.marketing.pk])
    page = admin_client.get(url)
    form = page.context["adminform"].form
    assert [u.username for u in form.fields["members"].initial] == ["alice"]
    assert [u.username for u in form.fields["report_users"].initial] == ["bob"]
    assert [g.name for g in form.fields["audit_groups"].initial] == ["Finance"]
    assert "May view Marketing&#x27;s reports: people" in page.content.decode()


def test_adding_an_llm_by_hand_takes_catalog_figures_unless_typed(admin_client, cast):
    data = {
        "connection": cast.connection.pk,
        "name": "gpt-4.1-nano",
        "kind": "chat",
        "description": "",
        "groups": [cast.finance.group.pk],
        "input_price": "0",
        "output_price": "0.50",
        "cached_input_price": "0",
        "context_window": "",
        "max_output_tokens": "",
        "catalog_tokens_per_second": "",
        "catalog_date": "",
    }
    response = admin_client.post(reverse("admin:connections_llm_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    llm = LLM.objects.get(mesh_id="sim/gpt-4.1-nano")
    assert (llm.input_price, llm.output_price) == (Decimal("0.10"), Decimal("0.50"))
    assert llm.context_window == 1047576 and not llm.approved
    assert [g.name for g in services.llm_groups(llm)] == ["Finance"]


@pytest.mark.parametrize("page", ["llm", "connection", "department", "alias", "changeevent"])
def test_changelists_run_a_fixed_number_of_queries_whatever_the_rows(
    admin_client, cast, page, django_assert_max_num_queries
):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    url = reverse(f"admin:connections_{page}_changelist")
    with CaptureQueriesContext(db) as few:
        assert admin_client.get(url).status_code == 200
    for n in range(20):
        llm = services.llm_create(actor=cast.admin, connection=cast.connection, name=f"extra-{n}")
        services.llm_grant(llm=llm, group=cast.marketing.group, actor=cast.admin)
        services.alias_create(actor=cast.admin, name=f"alias-{n}", targets=[llm, cast.gpt4o])
        services.department_create(actor=cast.admin, name=f"Dept {n}", cost_center=f"D-{n}")
    with django_assert_max_num_queries(len(few)):
        assert admin_client.get(url).status_code == 200
