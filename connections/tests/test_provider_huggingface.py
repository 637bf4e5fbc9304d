"""The huggingface_local kind in-process: options, folders, discovery, loading, cancellation,
and what happens without the optional extra. Models are the session's tiny ones."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from connections import services
from connections.models import Connection
from connections.providers import build_adapter
from connections.providers.base import ConnectionConfig, ProviderError
from connections.providers.huggingface.options import ModelPathError, model_path, parse_options

ROOT = Path(__file__).resolve().parents[2]
# Each test's loaded models are its own (and closed after it).
pytestmark = pytest.mark.usefixtures("model_hosts")


@pytest.fixture(autouse=True)
def _process_settings():
    """A ModelHost tunes process-wide settings for serving; the rest of the suite keeps its own."""
    interval = sys.getswitchinterval()
    yield
    sys.setswitchinterval(interval)


def config(models_dir, **options) -> ConnectionConfig:
    return ConnectionConfig(
        id=99,
        slug="local",
        kind="huggingface_local",
        version=1,
        options={"models_dir": str(models_dir), **options},
    )


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "models_dir"),
        ({"models_dir": "relative/models"}, "absolute"),
        ({"models_dir": "/nonexistent/meshgate-models"}, "does not exist"),
        ({"models_dir": "FILE"}, "not a directory"),
        ({"models_dir": "DIR", "device": "tpu"}, "device"),
        ({"models_dir": "DIR", "max_loaded_models": 0}, "max_loaded_models"),
        ({"models_dir": "DIR", "max_concurrent_generations": "2"}, "max_concurrent_generations"),
        ({"models_dir": "DIR", "idle_unload_seconds": -5}, "idle_unload_seconds"),
        ({"models_dir": "DIR", "base_path": "/"}, "Unknown option"),
    ],
)
def test_a_connection_with_bad_options_is_refused_naming_the_problem(
    cast, tmp_path, options, message
):
    (tmp_path / "a-file").write_text("x")
    options = {
        key: (str(tmp_path) if value == "DIR" else str(tmp_path / "a-file"))
        if value in ("DIR", "FILE")
        else value
        for key, value in options.items()
    }
    with pytest.raises(ValidationError) as caught:
        services.connection_create(
            actor=cast.admin, name="Local", slug="local", kind="huggingface_local", options=options
        )
    assert message in str(caught.value.message_dict["options"])


def test_options_have_defaults(tmp_path):
    options = parse_options({"models_dir": str(tmp_path)})
    assert (options.device, options.max_concurrent_generations, options.max_loaded_models) == (
        "cpu",
        2,
        2,
    )
    assert options.idle_unload_seconds == 900


# --- where a model's folder is ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../etc", "/etc", "a/../../b", "a/b/c", ".hidden", "x\x00y", "", "org/.."]
)
def test_a_model_name_cannot_leave_the_models_directory(tmp_path, name):
    with pytest.raises(ModelPathError) as caught:
        model_path(str(tmp_path), name)
    assert caught.value.missing is False


def test_a_symlink_pointing_out_of_the_models_directory_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    models = tmp_path / "models"
    models.mkdir()
    (models / "escape").symlink_to(outside)
    with pytest.raises(ModelPathError, match="outside"):
        model_path(str(models), "escape")
    from connections.providers.huggingface.folders import scan

    assert scan(str(models)) == []


def test_a_model_not_on_disk_is_missing_not_downloaded(tmp_path):
    with pytest.raises(ModelPathError) as caught:
        model_path(str(tmp_path), "meta-llama/Llama-3.2-1B-Instruct")
    assert caught.value.missing is True
    assert "never downloaded" in str(caught.value)


def hub_cache_copy(source: Path, cache: Path, repo: str) -> Path:
    """Lay `source` out as the Hub's cache does: blobs, a snapshot of symlinks, refs/main."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    for index, file in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        blob = folder / "blobs" / f"blob{index}"
        shutil.copy(file, blob)
        target = snapshot / file.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(blob, target.parent))
    return snapshot


@pytest.fixture
def mixed_models_dir(local_models, tmp_path):
    """Hub cache (under hub/), a plain org/name folder, a plain folder, and a vision model."""
    models = tmp_path / "models"
    hub_cache_copy(local_models / "tiny-chat", models / "hub", "acme/tiny-chat")
    shutil.copytree(local_models / "tiny-sentiment", models / "acme" / "sentiment")
    shutil.copytree(local_models / "tiny-summarizer", models / "summarizer")
    (models / "vision").mkdir()
    (models / "vision" / "config.json").write_text(
        json.dumps({"architectures": ["ViTForImageClassificationX"], "model_type": "vit"})
    )
    return models


@pytest.mark.django_db
def test_discovery_reads_hub_cache_and_plain_folders_and_adds_them_unapproved_at_zero_price(
    cast, mixed_models_dir
):
    connection = services.connection_create(
        actor=cast.admin,
        name="Local",
        slug="local",
        kind="huggingface_local",
        options={"models_dir": str(mixed_models_dir)},
    )
    result = services.models_discover(connection=connection, actor=cast.admin)
    assert result.ok, result.message
    assert sorted(result.added) == ["acme/sentiment", "acme/tiny-chat", "summarizer"]
    llms = {llm.name: llm for llm in connection.llms.all()}
    assert {name: llm.kind for name, llm in llms.items()} == {
        "acme/sentiment": "classification",
        "acme/tiny-chat": "chat",
        "summarizer": "summarization",
    }
    for llm in llms.values():
        assert not llm.approved
        assert (llm.input_price, llm.output_price) == (Decimal(0), Decimal(0))
        assert llm.catalog_date is None  # no hosted list price borrowed for a local model
    assert llms["acme/tiny-chat"].context_window == 1024
    assert llms["acme/tiny-chat"].mesh_id == "local/acme/tiny-chat"
    again = services.models_discover(connection=connection, actor=cast.admin)
    assert again.added == [] and len(again.known) == 3
    tested = services.connection_test(connection=connection)
    assert tested.ok
    assert "3 model folder(s) found on device cpu" in tested.message
    assert "Not servable: vision" in tested.message


def test_a_hub_cache_model_is_loaded_from_its_snapshot(mixed_models_dir):
    adapter = build_adapter(config(mixed_models_dir))
    answer = asyncio.run(
        adapter.chat(
            "acme/tiny-chat", {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
        )
    )
    assert answer.usage.completion_tokens == 3
    asyncio.run(adapter.aclose())


# --- loading: once, LRU, idle ----------------------------------------------------------------


def test_adapters_with_the_same_settings_share_one_host_until_the_last_closes(
    local_models, model_hosts
):
    first, second = build_adapter(config(local_models)), build_adapter(config(local_models))
    options = first.options()
    host = first.host()
    assert second.host() is host and model_hosts.users(options) == 2
    asyncio.run(first.aclose())
    assert model_hosts.users(options) == 1 and not host.pool._shutdown
    asyncio.run(second.aclose())
    assert model_hosts.users(options) == 0 and host.pool._shutdown


def test_concurrent_requests_load_a_model_once(local_models):
    from connections.providers.huggingface.runtime import ModelHost

    host = ModelHost(parse_options({"models_dir": str(local_models)}))
    try:
        results = []
        barrier = threading.Barrier(8)

        def get() -> None:
            barrier.wait()
            results.append(host.get("tiny-chat"))

        threads = [threading.Thread(target=get) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert host.loads == 1
        assert len({id(loaded) for loaded in results}) == 1
    finally:
        host.close()


def test_the_least_recently_used_model_is_unloaded_past_the_limit(local_models):
    from connections.providers.huggingface.runtime import ModelHost

    host = ModelHost(parse_options({"models_dir": str(local_models), "max_loaded_models": 2}))
    try:
        host.get("tiny-chat")
        host.get("tiny-sentiment")
        host.get("tiny-chat")  # used again: now the sentiment model is the oldest
        host.get("tiny-summarizer")
        assert host.loaded_names() == ["tiny-chat", "tiny-summarizer"]
        host.get("tiny-sentiment")
        assert host.loaded_names() == ["tiny-summarizer", "tiny-sentiment"]
        assert host.loads == 4
    finally:
        host.close()


def test_idle_models_are_unloaded_by_the_sweeper(local_models):
    from connections.providers.huggingface.runtime import ModelHost

    host = ModelHost(parse_options({"models_dir": str(local_models), "idle_unload_seconds": 1}))
    try:
        host.get("tiny-sentiment")
        assert host.loaded_names() == ["tiny-sentiment"]
        deadline = time.monotonic() + 5
        while host.loaded_names() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host.loaded_names() == []
        host.get("tiny-sentiment")  # and loads again when asked
        assert host.loads == 2
    finally:
        host.close()


# --- streaming and cancellation --------------------------------------------------------------


def test_closing_a_stream_stops_its_generation(local_models):
    adapter = build_adapter(config(local_models, max_concurrent_generations=1))
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 1000}

    async def run() -> dict:
        stream = await adapter.open_stream("tiny-chat", body)
        frames = aiter(stream)
        for _ in range(4):  # the role chunk and three tokens
            await anext(frames)
        await stream.aclose()
        await frames.aclose()
        # The worker thread reports how far it got once it stopped.
        while True:
            kind, value = await asyncio.wait_for(stream._queue.get(), 10)
            if kind == "end":
                return value

    try:
        ended = asyncio.run(run())
        assert 3 <= ended["completion_tokens"] < 1000
        # The single worker is free again at once: the next call is not stuck behind the first.
        started = time.monotonic()
        answer = asyncio.run(adapter.chat("tiny-chat", {**body, "max_tokens": 2}))
        assert answer.usage.completion_tokens == 2 and time.monotonic() - started < 5
    finally:
        asyncio.run(adapter.aclose())


def test_a_request_the_model_cannot_take_fails_before_the_stream_opens(local_models):
    adapter = build_adapter(config(local_models))
    long_prompt = " ".join(["hello"] * 1100)  # the tiny model's context is 1,024 tokens
    with pytest.raises(ProviderError) as caught:
        asyncio.run(
            adapter.open_stream(
                "tiny-chat", {"messages": [{"role": "user", "content": long_prompt}]}
            )
        )
    assert (caught.value.status, caught.value.code) == (400, "context_length_exceeded")
    asyncio.run(adapter.aclose())


# --- other kinds, and the extra missing -------------------------------------------------------


def test_other_providers_refuse_the_task_endpoints(cast):
    adapter = build_adapter(ConnectionConfig.from_connection(cast.connection))
    for method in (adapter.classify, adapter.summarize):
        with pytest.raises(ProviderError) as caught:
            asyncio.run(method("gpt-4o", {"input": "x"}))
        assert (caught.value.status, caught.value.code) == (400, "unsupported_endpoint")


def test_the_admin_form_explains_the_kind_and_whether_the_extra_is_installed(db):
    from connections.forms import ConnectionForm

    help_text = ConnectionForm(instance=Connection()).fields["kind"].help_text
    assert "models_dir" in help_text and "The optional extra is installed here." in help_text


WITHOUT_TORCH = r"""
import sys, json
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'", name="torch")
sys.meta_path.insert(0, NoTorch())
import django
django.setup()
import asyncio
from connections.forms import ConnectionForm
from connections.models import Connection
from connections.providers import build_adapter
from connections.providers.base import ConnectionConfig, ProviderError
adapter = build_adapter(ConnectionConfig(id=1, slug="l", kind="huggingface_local", version=1,
                                         options={"models_dir": sys.argv[1]}))
out = {"help": str(ConnectionForm(instance=Connection()).fields["kind"].help_text)}
for name, call in (("test", adapter.test), ("discover", adapter.list_models),
                   ("chat", lambda: asyncio.run(adapter.chat("m", {"messages": []})))):
    try:
        call()
        out[name] = "no error"
    except ProviderError as exc:
        out[name] = [exc.status, exc.code, exc.message]
print(json.dumps(out))
"""


def test_without_the_extra_the_kind_is_explained_and_test_and_discovery_refuse(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "meshsite.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "make install-local" in out["help"] and "Missing here: torch" in out["help"]
    for name in ("test", "discover", "chat"):
        status, code, message = out[name]
        assert (status, code) == (503, "local_models_unavailable")
        assert "make install-local" in message and "Missing here: torch" in message


def test_a_vanished_models_directory_is_explained_to_the_admin_but_not_to_api_clients(tmp_path):
    models = tmp_path / "models-gone"
    adapter = build_adapter(config(models))
    with pytest.raises(ProviderError) as for_client:
        asyncio.run(adapter.chat("m", {"messages": [{"role": "user", "content": "hi"}]}))
    assert (for_client.value.status, for_client.value.code) == (503, "misconfigured")
    assert str(tmp_path) not in for_client.value.message
    with pytest.raises(ProviderError) as for_admin:
        adapter.test()
    assert str(models) in for_admin.value.message and "does not exist" in for_admin.value.message


@pytest.mark.parametrize(
    ("method", "model"),
    [
        ("chat", "tiny-sentiment"),
        ("embed", "tiny-chat"),
        ("classify", "tiny-summarizer"),
        ("summarize", "tiny-chat"),
    ],
)
def test_a_model_labelled_with_the_wrong_task_is_refused_by_its_folders_task(
    local_models, method, model
):
    # The admin may edit an LLM's kind; the folder says what the model really does.
    adapter = build_adapter(config(local_models))
    body = {"messages": [{"role": "user", "content": "hi"}], "input": "hi"}
    try:
        with pytest.raises(ProviderError) as caught:
            asyncio.run(getattr(adapter, method)(model, body))
        assert (caught.value.status, caught.value.code) == (400, "model_not_supported")
    finally:
        asyncio.run(adapter.aclose())
