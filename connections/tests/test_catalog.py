import json
from datetime import date
from decimal import Decimal

import pytest

from connections import catalog


@pytest.mark.parametrize("provider", ["openai", "azure_openai", "bedrock", "openai_compatible"])
def test_every_provider_file_loads_with_prices_a_date_and_a_source(provider):
    data = json.loads((catalog.CATALOG_DIR / f"{provider}.json").read_text())
    assert data["source"]
    entries = catalog.entries(provider)
    assert len(entries) >= 8
    for entry in entries:
        assert entry.input_price >= 0 and entry.output_price >= 0
        assert entry.cached_input_price <= entry.input_price
        assert entry.as_of >= date(2025, 1, 1)
        assert entry.kind in {"chat", "embedding"}
        assert entry.context_window
        if entry.kind == "chat":
            assert entry.tokens_per_second and entry.output_price > 0


def test_openai_list_prices():
    entry = catalog.lookup("openai", "gpt-4o-mini")
    assert (entry.input_price, entry.output_price, entry.cached_input_price) == (
        Decimal("0.15"),
        Decimal("0.60"),
        Decimal("0.075"),
    )


def test_a_dated_snapshot_matches_its_model():
    assert catalog.lookup("openai", "gpt-4o-2024-08-06").name == "gpt-4o"


def test_open_models_match_by_hugging_face_and_ollama_names():
    assert catalog.lookup("openai_compatible", "meta-llama/Llama-3.1-8B-Instruct").name == (
        "llama-3.1-8b-instruct"
    )
    assert catalog.lookup("openai_compatible", "llama3.1:8b").name == "llama-3.1-8b-instruct"
    assert catalog.lookup("openai_compatible", "Qwen/Qwen2.5-72B-Instruct").provider == (
        "openai_compatible"
    )


def test_an_openai_compatible_server_serving_openai_names_gets_openai_prices():
    assert catalog.lookup("openai_compatible", "gpt-4o").provider == "openai"


def test_bedrock_inference_profiles_match_their_model():
    entry = catalog.lookup("bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0")
    assert entry.name == "anthropic.claude-3-5-haiku-20241022-v1:0"


def test_an_unknown_model_is_not_in_the_catalog():
    assert catalog.lookup("openai", "my-fine-tune") is None
    assert catalog.lookup("bedrock", "gpt-4o") is None
