"""The connection admin's actions against the simulator, through the real SDKs."""

from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import constants
from django.urls import reverse

from connections import services
from connections.models import LLM, Connection


@pytest.fixture
def admin_client(client, cast, settings, simulator):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    simulator.reset()
    services.connection_update(
        connection=cast.connection,
        actor=cast.admin,
        base_url=simulator.openai_base,
        secrets={"api_key": simulator.api_key},  # pointed elsewhere: the secret is typed again
    )
    client.force_login(cast.admin)
    return client


def run_action(client, action, *connections):
    response = client.post(
        reverse("admin:connections_connection_changelist"),
        {"action": action, ACTION_CHECKBOX_NAME: [c.pk for c in connections]},
        follow=True,
    )
    assert response.status_code == 200
    return [(m.level, m.message) for m in response.context["messages"]]


def test_the_discover_action_adds_the_simulators_new_models(admin_client, cast):
    (message,) = run_action(admin_client, "discover_models", cast.connection)
    assert message[0] == constants.SUCCESS
    assert "2 new model(s) added (not approved)" in message[1]
    assert "o4-mini" in message[1]
    assert not LLM.objects.get(mesh_id="sim/o4-mini").approved


def test_the_test_action_reports_ok(admin_client, cast):
    (message,) = run_action(admin_client, "test_connection", cast.connection)
    assert message == (constants.SUCCESS, "Simulator: OK. Connected: the provider lists 5 models.")


def test_a_failing_test_is_an_error_message_without_the_secret(admin_client, cast):
    services.connection_set_secrets(
        connection=cast.connection, actor=cast.admin, secrets={"api_key": "not-the-sim-key-4242"}
    )
    (message,) = run_action(admin_client, "test_connection", cast.connection)
    assert message[0] == constants.ERROR
    assert "credentials" in message[1] and "not-the-sim-key-4242" not in message[1]


def test_azure_deployments_are_discovered_with_their_models_catalog_prices(
    admin_client, cast, simulator
):
    azure = services.connection_create(
        actor=cast.admin,
        name="Azure",
        slug="azure",
        kind=Connection.Kind.AZURE_OPENAI,
        base_url=simulator.url,
        api_version="2024-10-21",
        options={"deployments": [{"name": "prod-chat", "model": "gpt-4o-mini"}, "plain-name"]},
        secrets={"api_key": simulator.api_key},
    )
    (discovered,) = run_action(admin_client, "discover_models", azure)
    assert discovered[0] == constants.SUCCESS, discovered
    chat = LLM.objects.get(mesh_id="azure/prod-chat")
    assert (chat.input_price, chat.output_price) == (Decimal("0.15"), Decimal("0.60"))
    assert not chat.approved
    assert LLM.objects.filter(mesh_id="azure/plain-name").exists()
    (tested,) = run_action(admin_client, "test_connection", azure)
    assert tested[0] == constants.SUCCESS, tested
    assert any(r["path"].startswith("/openai/deployments/prod-chat/") for r in simulator.requests())


def test_the_seed_discovers_openai_models_when_a_key_is_given(db, settings, simulator, monkeypatch):
    from io import StringIO

    from django.core.management import call_command

    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    settings.MESHGATE_DEMO_PASSWORD = "demo-pass-for-tests"
    monkeypatch.setenv("OPENAI_API_KEY", simulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", simulator.openai_base)
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "OpenAI connection created: 5 new model(s)" in out.getvalue()
    openai_models = LLM.objects.filter(connection__slug="openai")
    assert openai_models.count() == 5 and not openai_models.filter(approved=True).exists()
    assert openai_models.get(name="gpt-4o").input_price == Decimal("2.50")
    assert simulator.api_key not in out.getvalue()


@pytest.fixture
def bedrock(cast, simulator):
    key_id, secret = simulator.aws_credentials
    return services.connection_create(
        actor=cast.admin,
        name="Bedrock",
        slug="bedrock",
        kind=Connection.Kind.BEDROCK,
        base_url=simulator.url,
        region="us-east-1",
        secrets={"aws_access_key_id": key_id, "aws_secret_access_key": secret},
    )


def test_bedrock_models_are_discovered_through_the_calls_client_with_catalog_prices(
    admin_client, bedrock, simulator
):
    (message,) = run_action(admin_client, "discover_models", bedrock)
    assert message[0] == constants.SUCCESS, message
    names = set(LLM.objects.filter(connection=bedrock).values_list("name", flat=True))
    assert "anthropic.claude-3-5-sonnet-20241022-v2:0" in names
    assert "stability.sd3-large-v1:0" not in names  # an image model: not routable
    sonnet = LLM.objects.get(mesh_id="bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0")
    assert (sonnet.input_price, sonnet.output_price) == (Decimal("3.00"), Decimal("15.00"))
    assert not sonnet.approved and sonnet.context_window == 200000
    titan = LLM.objects.get(mesh_id="bedrock/amazon.titan-embed-text-v2:0")
    assert titan.kind == "embedding" and titan.input_price == Decimal("0.02")
    (listing,) = [r for r in simulator.requests() if r["path"] == "/foundation-models"]
    assert listing["headers"]["authorization"].startswith("sha256:")  # SigV4-signed, hashed
    assert listing["headers"]["user-agent"] == "meshgate"  # the same client as calls


def test_bedrock_test_action_ok_and_a_wrong_secret_is_a_clean_error(admin_client, bedrock):
    (ok,) = run_action(admin_client, "test_connection", bedrock)
    assert ok[0] == constants.SUCCESS and "foundation models" in ok[1]
    services.connection_set_secrets(
        connection=bedrock, actor=None, secrets={"aws_secret_access_key": "wrong-aws-secret-777777"}
    )
    (failed,) = run_action(admin_client, "test_connection", bedrock)
    assert failed[0] == constants.ERROR and "wrong-aws-secret-777777" not in failed[1]
    assert "AKIA" not in failed[1]
