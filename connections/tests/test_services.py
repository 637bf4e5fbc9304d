from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from connections import services
from connections.models import LLM, ChangeEvent, Connection


@pytest.fixture(autouse=True)
def _local_upstreams_allowed(settings):
    # The cast's connection points at a loopback simulator, as the demo does.
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True


def events(event_type):
    return list(ChangeEvent.objects.filter(event_type=event_type))


def test_connection_create_encrypts_secrets_and_records_the_actor(cast):
    connection = services.connection_create(
        actor=cast.admin,
        name="Local vLLM",
        slug="vllm",
        kind=Connection.Kind.OPENAI_COMPATIBLE,
        base_url="http://127.0.0.1:8000/v1",
        secrets={"api_key": "vllm-key-123"},
    )
    stored = Connection.objects.get(pk=connection.pk)
    assert "vllm-key-123" not in stored.secrets_ciphertext
    assert stored.get_secrets() == {"api_key": "vllm-key-123"}
    assert set(stored.secrets_set_at) == {"api_key"}
    (event,) = events(ChangeEvent.Type.CONNECTION_CREATED)
    assert event.actor == cast.admin
    assert event.details["secrets_set"] == ["api_key"]
    assert "vllm-key-123" not in str(event.details)


def test_connection_create_refuses_a_metadata_base_url(cast):
    with pytest.raises(ValidationError) as info:
        services.connection_create(
            actor=cast.admin,
            name="Evil",
            slug="evil",
            kind=Connection.Kind.OPENAI_COMPATIBLE,
            base_url="http://169.254.169.254/latest",
        )
    assert "base_url" in info.value.message_dict
    assert not Connection.objects.filter(slug="evil").exists()
    assert not ChangeEvent.objects.exists()


def test_connection_update_bumps_the_version_and_lists_what_changed(cast):
    version = cast.connection.version
    services.connection_update(
        connection=cast.connection, actor=cast.admin, timeout_seconds=5, description="x"
    )
    cast.connection.refresh_from_db()
    assert cast.connection.version == version + 1
    assert cast.connection.updated_by == cast.admin
    (event,) = events(ChangeEvent.Type.CONNECTION_UPDATED)
    assert event.details["changed"]["timeout_seconds"] == {"from": 10.0, "to": 5}
    assert set(event.details["changed"]) == {"timeout_seconds", "description"}


def test_connection_update_without_changes_records_nothing(cast):
    version = cast.connection.version
    services.connection_update(connection=cast.connection, actor=cast.admin, name="Simulator")
    assert cast.connection.version == version
    assert not ChangeEvent.objects.exists()


def test_set_secrets_records_the_field_not_the_value(cast):
    version = cast.connection.version
    changed = services.connection_set_secrets(
        connection=cast.connection, actor=cast.alice, secrets={"api_key": "brand-new-value-xyz"}
    )
    assert changed == ["api_key"]
    cast.connection.refresh_from_db()
    assert cast.connection.get_secrets()["api_key"] == "brand-new-value-xyz"
    assert cast.connection.version == version + 1
    (event,) = events(ChangeEvent.Type.SECRET_REPLACED)
    assert event.actor == cast.alice
    assert event.details["replaced"] == ["api_key"]
    assert "brand-new-value-xyz" not in str(event.details) + event.object_repr


def test_an_empty_secret_value_keeps_the_stored_one(cast):
    changed = services.connection_set_secrets(
        connection=cast.connection, actor=cast.admin, secrets={"api_key": ""}
    )
    assert changed == []
    assert cast.connection.get_secrets()["api_key"] == "sim-secret-key-not-real"
    assert not ChangeEvent.objects.exists()


def test_a_secret_can_be_cleared(cast):
    services.connection_set_secrets(
        connection=cast.connection, actor=cast.admin, secrets={}, clear=["api_key"]
    )
    cast.connection.refresh_from_db()
    assert cast.connection.get_secrets() == {}
    assert cast.connection.secrets_set_at == {}
    (event,) = events(ChangeEvent.Type.SECRET_REPLACED)
    assert event.details["cleared"] == ["api_key"]


def test_a_secret_field_of_another_kind_is_refused(cast):
    with pytest.raises(ValueError):
        services.connection_set_secrets(
            connection=cast.connection, actor=cast.admin, secrets={"aws_secret_access_key": "x"}
        )


def test_connection_delete_records_the_event_and_removes_the_models(cast):
    services.connection_delete(connection=cast.connection, actor=cast.admin)
    assert not LLM.objects.exists()
    (event,) = events(ChangeEvent.Type.CONNECTION_DELETED)
    assert event.object_repr == "Simulator"
    assert "gpt-4o" in event.details["models"]


def test_approve_and_withdraw_record_who_and_when(cast):
    assert services.llm_approve(llm=cast.unapproved, actor=cast.admin) is True
    cast.unapproved.refresh_from_db()
    assert cast.unapproved.approved and cast.unapproved.approved_by == cast.admin
    assert cast.unapproved.approved_at is not None
    assert "sim/unapproved-model" in set(
        LLM.objects.usable_by(cast.alice).values_list("mesh_id", flat=True)
    )
    assert services.llm_approve(llm=cast.unapproved, actor=cast.admin) is False
    assert services.llm_withdraw(llm=cast.unapproved, actor=cast.bob) is True
    cast.unapproved.refresh_from_db()
    assert not cast.unapproved.approved and cast.unapproved.approved_by is None
    assert [e.event_type for e in ChangeEvent.objects.order_by("id")] == [
        ChangeEvent.Type.LLM_APPROVED,
        ChangeEvent.Type.LLM_WITHDRAWN,
    ]


def test_grant_and_revoke_change_what_a_department_can_use(cast):
    usable = lambda user: set(LLM.objects.usable_by(user).values_list("mesh_id", flat=True))  # noqa: E731
    assert "sim/gpt-4o" not in usable(cast.bob)
    assert services.llm_grant(llm=cast.gpt4o, group=cast.finance.group, actor=cast.admin)
    assert "sim/gpt-4o" in usable(cast.bob)
    assert not services.llm_grant(llm=cast.gpt4o, group=cast.finance.group, actor=cast.admin)
    assert services.llm_revoke(llm=cast.gpt4o, group=cast.finance.group, actor=cast.admin)
    assert "sim/gpt-4o" not in usable(cast.bob)
    kinds = list(ChangeEvent.objects.order_by("id").values_list("event_type", "details__group"))
    assert kinds == [
        (ChangeEvent.Type.GRANT_ADDED, "Finance"),
        (ChangeEvent.Type.GRANT_REMOVED, "Finance"),
    ]


def test_llm_set_groups_grants_and_revokes_the_difference(cast):
    granted, revoked = services.llm_set_groups(
        llm=cast.gpt4o_mini, groups=[cast.finance.group, cast.research.group], actor=cast.admin
    )
    assert (granted, revoked) == (1, 1)
    assert [g.name for g in services.llm_groups(cast.gpt4o_mini)] == ["Finance", "Research"]


def test_llm_update_changes_prices_and_records_old_and_new(cast):
    services.llm_update(llm=cast.gpt4o, actor=cast.admin, input_price=Decimal("2.00"))
    cast.gpt4o.refresh_from_db()
    assert cast.gpt4o.input_price == Decimal("2.00")
    (event,) = events(ChangeEvent.Type.LLM_UPDATED)
    change = event.details["changed"]["input_price"]
    assert (Decimal(change["from"]), Decimal(change["to"])) == (Decimal("2.5"), Decimal("2"))


def test_llm_create_takes_the_catalog_figures(cast):
    llm = services.llm_create(actor=cast.admin, connection=cast.connection, name="gpt-4.1-mini")
    assert llm.mesh_id == "sim/gpt-4.1-mini"
    assert not llm.approved
    assert (llm.input_price, llm.output_price) == (Decimal("0.40"), Decimal("1.60"))
    assert llm.catalog_date is not None and llm.context_window == 1047576


def test_alias_set_targets_keeps_the_order_given(cast):
    services.alias_set_targets(
        alias=cast.alias, llms=[cast.gpt4o_mini, cast.gpt4o, cast.gpt4o_mini], actor=cast.admin
    )
    targets = list(cast.alias.targets.order_by("position").values_list("llm__mesh_id", flat=True))
    assert targets == ["sim/gpt-4o-mini", "sim/gpt-4o"]
    (event,) = events(ChangeEvent.Type.ALIAS_CHANGED)
    assert event.details["targets"]["from"] == ["sim/gpt-4o", "sim/gpt-4o-mini"]


def test_alias_names_cannot_hold_a_slash(cast):
    with pytest.raises(ValidationError):
        services.alias_create(actor=cast.admin, name="a/b")


def test_department_create_and_update(cast):
    legal = services.department_create(actor=cast.admin, name="Legal", cost_center="LEG-400")
    assert legal.group.name == "Legal"
    services.department_update(department=legal, actor=cast.admin, name="Legal & Compliance")
    legal.refresh_from_db()
    assert legal.group.name == "Legal & Compliance"
    assert ChangeEvent.objects.filter(event_type=ChangeEvent.Type.DEPARTMENT_CHANGED).count() == 2


def test_a_duplicate_cost_center_is_refused(cast):
    with pytest.raises(ValidationError):
        services.department_create(actor=cast.admin, name="Legal", cost_center="MKT-100")


def test_scrub_removes_whole_secrets_and_the_ends_providers_echo():
    secret = "sk-" + "proj-abcdefghijklmnopqrstuvwxyz"
    text = f"Incorrect API key provided: {secret[:8]}******{secret[-4:]} and {secret}"
    scrubbed = services.scrub(text, [secret])
    assert secret not in scrubbed and secret[:8] not in scrubbed and secret[-4:] not in scrubbed


def test_changing_the_kind_drops_secrets_the_new_kind_does_not_take(cast):
    services.connection_update(
        connection=cast.connection,
        actor=cast.admin,
        kind=Connection.Kind.BEDROCK,
        region="us-east-1",
        base_url="",
        secrets={"aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "example-secret"},
    )
    cast.connection.refresh_from_db()
    assert set(cast.connection.get_secrets()) == {"aws_access_key_id", "aws_secret_access_key"}
    assert set(cast.connection.secrets_set_at) == {"aws_access_key_id", "aws_secret_access_key"}


# --- discovery and tests against the simulator, through the real openai SDK -------------------


@pytest.fixture
def live(cast, simulator):
    """The cast's connection pointed at the running simulator."""
    simulator.reset()
    services.connection_update(
        connection=cast.connection,
        actor=cast.admin,
        base_url=simulator.openai_base,
        secrets={"api_key": simulator.api_key},  # pointed elsewhere: the secret is typed again
    )
    return cast


def test_discovery_adds_new_models_unapproved_with_catalog_figures(live, simulator):
    live.gpt4o.input_price = Decimal("3.00")  # an admin's own figure
    live.gpt4o.save()
    result = services.models_discover(connection=live.connection, actor=live.admin)
    assert result.ok, result.message
    assert sorted(result.added) == ["o4-mini", "text-embedding-3-large"]
    assert sorted(result.known) == ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    o4 = LLM.objects.get(mesh_id="sim/o4-mini")
    assert not o4.approved and o4.approved_by is None
    assert (o4.input_price, o4.output_price, o4.cached_input_price) == (
        Decimal("1.10"),
        Decimal("4.40"),
        Decimal("0.275"),
    )
    assert o4.context_window == 200000 and o4.catalog_tokens_per_second and o4.catalog_date
    large = LLM.objects.get(mesh_id="sim/text-embedding-3-large")
    assert large.kind == "embedding" and large.input_price == Decimal("0.13")
    live.gpt4o.refresh_from_db()
    assert live.gpt4o.input_price == Decimal("3.00")
    assert live.gpt4o.catalog_tokens_per_second == 110  # a blank filled in from the catalog
    (event,) = events(ChangeEvent.Type.MODELS_DISCOVERED)
    assert event.actor == live.admin and sorted(event.details["added"]) == sorted(result.added)
    (request,) = [r for r in simulator.requests() if r["path"] == "/v1/models"]
    assert request["method"] == "GET" and request["headers"]["user-agent"] == "meshgate"


def test_discovery_twice_adds_nothing_the_second_time(live):
    services.models_discover(connection=live.connection, actor=live.admin)
    again = services.models_discover(connection=live.connection, actor=live.admin)
    assert again.ok and again.added == [] and len(again.known) == 5


def test_discovery_with_a_wrong_key_reports_a_clear_error_without_the_key(live):
    services.connection_set_secrets(
        connection=live.connection, actor=live.admin, secrets={"api_key": "wrong-key-0123456789abc"}
    )
    result = services.models_discover(connection=live.connection, actor=live.admin)
    assert not result.ok
    assert "credentials" in result.message
    assert "wrong-key-0123456789abc" not in result.message
    assert LLM.objects.count() == 4
    assert not events(ChangeEvent.Type.MODELS_DISCOVERED)


def test_connection_test_is_ok_against_the_simulator(live):
    result = services.connection_test(connection=live.connection)
    assert result.ok, result.message
    assert "5 models" in result.message


def test_connection_test_reports_an_unreachable_server(cast, unused_port):
    services.connection_update(
        connection=cast.connection, actor=cast.admin, base_url=f"http://127.0.0.1:{unused_port}/v1"
    )
    result = services.connection_test(connection=cast.connection)
    assert not result.ok and result.message
    assert "sim-secret-key-not-real" not in result.message


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
