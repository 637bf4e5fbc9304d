"""/api/connections/: CRUD through the services, secrets write-only, model permissions."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from connections.models import ChangeEvent, Connection
from gateway.keys import apikey_create

URL = "/api/connections/"
CANARY = "sk-" + "canary-7f3a9e1b2c4d-never-show-me"


def allow(user, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def by_key(cast, user, department) -> APIClient:
    _, raw = apikey_create(owner=user, department=department, purpose="automation")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def private_ok(settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True


NEW = {
    "name": "Local vLLM",
    "slug": "vllm",
    "kind": "openai_compatible",
    "base_url": "http://127.0.0.1:8000/v1",
    "secrets": {"api_key": CANARY},
}


def test_an_admin_creates_a_connection_and_the_secret_is_stored_encrypted_never_returned(
    cast, private_ok
):
    client = session(cast.admin)
    response = client.post(URL, NEW, format="json")
    assert response.status_code == 201, response.content
    assert CANARY not in response.content.decode()
    body = response.json()
    assert "secrets" not in body
    assert body["secrets_set"]["api_key"] is not None
    connection = Connection.objects.get(slug="vllm")
    assert connection.get_secrets() == {"api_key": CANARY}
    assert CANARY not in connection.secrets_ciphertext
    event = ChangeEvent.objects.get(event_type=ChangeEvent.Type.CONNECTION_CREATED)
    assert event.actor == cast.admin
    assert CANARY not in json.dumps(event.details)
    for page in (client.get(URL), client.get(f"{URL}vllm/"), client.options(URL)):
        assert page.status_code == 200
        assert CANARY not in page.content.decode()


def test_replacing_a_secret_moves_its_timestamp_and_bumps_the_version(cast, private_ok):
    client = session(cast.admin)
    before = client.get(f"{URL}sim/").json()
    response = client.patch(f"{URL}sim/", {"secrets": {"api_key": CANARY}}, format="json")
    assert response.status_code == 200, response.content
    assert CANARY not in response.content.decode()
    after = response.json()
    assert after["secrets_set"]["api_key"] != before["secrets_set"]["api_key"]
    assert after["version"] == before["version"] + 1
    assert Connection.objects.get(slug="sim").get_secrets()["api_key"] == CANARY
    assert ChangeEvent.objects.filter(event_type=ChangeEvent.Type.SECRET_REPLACED).exists()


def test_an_empty_secret_value_keeps_the_stored_one(cast, private_ok):
    response = session(cast.admin).patch(
        f"{URL}sim/", {"secrets": {"api_key": ""}, "description": "x"}, format="json"
    )
    assert response.status_code == 200
    assert Connection.objects.get(slug="sim").get_secrets()["api_key"] == "sim-secret-key-not-real"


def test_a_secret_field_the_kind_does_not_take_is_refused_without_echoing_the_value(
    cast, private_ok
):
    response = session(cast.admin).post(
        URL, {**NEW, "secrets": {"aws_secret_access_key": CANARY}}, format="json"
    )
    assert response.status_code == 400
    assert "aws_secret_access_key" in response.content.decode()
    assert CANARY not in response.content.decode()
    assert not Connection.objects.filter(slug="vllm").exists()


@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/v1",
        "ftp://127.0.0.1/v1",
        "http://user:pass@127.0.0.1/v1",
    ],
)
def test_unsafe_base_urls_are_refused_always(cast, private_ok, base_url):
    response = session(cast.admin).post(URL, {**NEW, "base_url": base_url}, format="json")
    assert response.status_code == 400
    assert "base_url" in response.json()


def test_private_base_urls_are_refused_unless_allowed(cast, settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = False
    response = session(cast.admin).post(URL, NEW, format="json")
    assert response.status_code == 400
    assert "base_url" in response.json()
    patch = session(cast.admin).patch(f"{URL}sim/", {"base_url": "http://10.0.0.5/v1"})
    assert patch.status_code == 400


def test_read_only_fields_are_refused_not_ignored(cast, private_ok):
    response = session(cast.admin).patch(
        f"{URL}sim/", {"version": 99, "secrets_ciphertext": "x"}, format="json"
    )
    assert response.status_code == 400
    assert set(response.json()) == {"version", "secrets_ciphertext"}
    assert Connection.objects.get(slug="sim").version == 1


def test_deleting_goes_through_the_service_and_is_recorded(cast):
    response = session(cast.admin).delete(f"{URL}sim/")
    assert response.status_code == 204
    assert not Connection.objects.filter(slug="sim").exists()
    event = ChangeEvent.objects.get(event_type=ChangeEvent.Type.CONNECTION_DELETED)
    assert event.actor == cast.admin


def test_a_user_without_permissions_is_refused_reads_and_writes(cast, private_ok):
    client = session(cast.alice)
    assert client.get(URL).status_code == 403
    assert client.get(f"{URL}sim/").status_code == 403
    assert client.post(URL, NEW, format="json").status_code == 403
    assert client.delete(f"{URL}sim/").status_code == 403
    assert Connection.objects.count() == 1


def test_a_key_acts_with_exactly_its_owners_model_permissions(cast, private_ok):
    allow(cast.alice, "view_connection")
    client = by_key(cast, cast.alice, cast.marketing)
    listing = client.get(URL)
    assert listing.status_code == 200
    assert [row["slug"] for row in listing.json()["results"]] == ["sim"]
    assert client.post(URL, NEW, format="json").status_code == 403
    assert client.patch(f"{URL}sim/", {"enabled": False}, format="json").status_code == 403
    allow(cast.alice, "add_connection")
    created = client.post(URL, NEW, format="json")
    assert created.status_code == 201
    assert ChangeEvent.objects.get(event_type="connection_created").actor == cast.alice


@pytest.fixture
def sim_connection(cast, private_ok, simulator):
    """The cast's "sim" connection pointed at the running simulator."""
    simulator.reset()
    response = session(cast.admin).patch(
        f"{URL}sim/",
        {"base_url": simulator.openai_base, "secrets": {"api_key": simulator.api_key}},
        format="json",
    )
    assert response.status_code == 200, response.content
    return simulator


def test_testing_a_connection_calls_the_provider_and_reports_without_the_secret(
    cast, sim_connection
):
    client = session(cast.admin)
    response = client.post(f"{URL}sim/test/")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    client.patch(f"{URL}sim/", {"secrets": {"api_key": CANARY}}, format="json")
    failed = client.post(f"{URL}sim/test/")
    assert failed.status_code == 200
    assert failed.json()["ok"] is False
    assert CANARY not in failed.content.decode()


def test_discovery_adds_the_providers_new_models_unapproved(cast, sim_connection):
    from connections.models import LLM

    response = session(cast.admin).post(f"{URL}sim/discover/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ok"] is True and body["added"]
    added = LLM.objects.filter(connection__slug="sim", name__in=body["added"])
    assert added.count() == len(body["added"])
    assert not added.filter(approved=True).exists()
    event = ChangeEvent.objects.get(event_type=ChangeEvent.Type.MODELS_DISCOVERED)
    assert event.actor == cast.admin


def test_discovery_from_an_unreachable_provider_is_a_502(cast, private_ok):
    # The cast's connection points at port 9 (discard): nothing answers there.
    response = session(cast.admin).post(f"{URL}sim/discover/")
    assert response.status_code == 502
    assert response.json()["ok"] is False
    assert "sim-secret-key-not-real" not in response.content.decode()


def test_testing_and_discovering_need_the_change_permissions(cast, private_ok):
    allow(cast.alice, "view_connection")
    client = by_key(cast, cast.alice, cast.marketing)
    assert client.post(f"{URL}sim/test/").status_code == 403
    assert client.post(f"{URL}sim/discover/").status_code == 403
    allow(cast.alice, "change_connection")
    assert client.post(f"{URL}sim/discover/").status_code == 403  # adding models: add_llm
    assert not ChangeEvent.objects.filter(event_type="models_discovered").exists()


def test_the_browsable_api_pages_render_without_the_secret(cast, private_ok):
    client = session(cast.admin)
    client.patch(f"{URL}sim/", {"secrets": {"api_key": CANARY}}, format="json")
    for url in (URL, f"{URL}sim/", "/api/llms/", "/api/aliases/", "/api/keys/"):
        response = client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, url
        assert "text/html" in response["Content-Type"]
        assert CANARY not in response.content.decode()
