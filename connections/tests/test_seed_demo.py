import re
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from connections.models import LLM, Alias, ChangeEvent, Connection, Department


@pytest.fixture(autouse=True)
def _demo_settings(settings, monkeypatch):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    settings.MESHGATE_DEMO_PASSWORD = None
    settings.MESHGATE_SIMULATOR_URL = "http://127.0.0.1:8001"
    settings.MESHGATE_DEMO_LOCAL_MODELS = False  # test_seed_demo_local.py seeds them
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def usable(username):
    user = User.objects.get(username=username)
    return set(LLM.objects.usable_by(user).values_list("name", flat=True))


def test_seed_demo_creates_the_cast_departments_models_grants_and_alias(db):
    output = seed()
    assert set(User.objects.values_list("username", flat=True)) == {
        "admin",
        "alice",
        "bob",
        "charlie",
    }
    assert User.objects.get(username="admin").is_superuser
    assert dict(Department.objects.values_list("group__name", "cost_center")) == {
        "Marketing": "MKT-100",
        "Finance": "FIN-200",
        "Research": "RES-300",
    }
    connection = Connection.objects.get(slug="sim")
    assert connection.is_simulator and connection.base_url == "http://127.0.0.1:8001/v1"
    assert connection.get_secrets()["api_key"]
    mini = LLM.objects.get(mesh_id="sim/gpt-4o-mini")
    assert mini.approved and str(mini.input_price) == "0.150000" and mini.catalog_date
    assert LLM.objects.get(mesh_id="sim/llama-3.1-8b-instruct").catalog_tokens_per_second
    assert not LLM.objects.get(mesh_id="sim/o4-mini").approved
    assert usable("alice") == {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"}
    assert usable("bob") == {"gpt-4o-mini", "text-embedding-3-small", "llama-3.1-8b-instruct"}
    assert usable("charlie") == set()
    alias = Alias.objects.get(name="chat-default")
    assert [t.llm.name for t in alias.targets.all()] == ["gpt-4o-mini", "llama-3.1-8b-instruct"]
    assert "Demo data ready." in output


def test_generated_passwords_are_printed_once_and_work(db):
    output = seed()
    passwords = dict(re.findall(r"created (\w+) with password (\S+)", output))
    assert set(passwords) == {"admin", "alice", "bob", "charlie"}
    assert authenticate(username="alice", password=passwords["alice"]) is not None
    again = seed()
    assert "password" not in again
    assert authenticate(username="alice", password=passwords["alice"]) is not None


def test_a_second_run_keeps_the_data_and_what_admins_changed(db):
    seed()
    counts = (User.objects.count(), LLM.objects.count(), ChangeEvent.objects.count())
    LLM.objects.filter(mesh_id="sim/gpt-4o").update(input_price="9.99")
    seed()
    assert (User.objects.count(), LLM.objects.count(), ChangeEvent.objects.count()) == counts
    assert str(LLM.objects.get(mesh_id="sim/gpt-4o").input_price) == "9.990000"


def test_the_demo_password_setting_is_used_and_not_printed(db, settings):
    settings.MESHGATE_DEMO_PASSWORD = "demo-pass-for-tests"
    output = seed()
    assert "demo-pass-for-tests" not in output
    assert authenticate(username="bob", password="demo-pass-for-tests") is not None


def test_without_private_upstreams_the_demo_says_what_to_set(db, settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = False
    with pytest.raises(CommandError) as info:
        seed()
    assert "MESHGATE_ALLOW_PRIVATE_UPSTREAMS" in str(info.value)
