"""The demo's local connection: the bundled MiniLM, seeded only where the extra is installed."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from connections.models import LLM, Connection


@pytest.fixture(autouse=True)
def _demo_settings(settings, tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="the local-models extra is not installed")
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    settings.MESHGATE_DEMO_PASSWORD = None
    settings.MESHGATE_DEMO_LOCAL_MODELS = True
    settings.MESHGATE_DEMO_MODELS_DIR = str(tmp_path / "models")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_the_demo_seeds_a_local_connection_with_minilm_granted_like_the_other_demo_models(
    db, tmp_path
):
    output = seed()
    connection = Connection.objects.get(slug="local")
    assert connection.kind == "huggingface_local"
    assert connection.options["models_dir"] == str((tmp_path / "models").resolve())
    assert (tmp_path / "models" / "all-MiniLM-L6-v2" / "model.safetensors").is_file()
    llm = LLM.objects.get(mesh_id="local/all-MiniLM-L6-v2")
    assert llm.approved and llm.kind == "embedding" and llm.context_window == 256
    assert llm.input_price == 0
    for username in ("alice", "bob"):
        user = User.objects.get(username=username)
        assert LLM.objects.usable_by(user).filter(pk=llm.pk).exists()
    assert "Local models connection created: 1 new model(s) added" in output


def test_seeding_again_changes_nothing(db):
    seed()
    llm = LLM.objects.get(mesh_id="local/all-MiniLM-L6-v2")
    second = seed()
    assert Connection.objects.filter(kind="huggingface_local").count() == 1
    assert LLM.objects.filter(connection__slug="local").count() == 1
    assert LLM.objects.get(pk=llm.pk).approved
    assert "Local models" not in second


def test_the_demo_can_leave_local_models_out(db, settings):
    settings.MESHGATE_DEMO_LOCAL_MODELS = False
    seed()
    assert not Connection.objects.filter(slug="local").exists()
