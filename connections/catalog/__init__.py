"""The model catalog: well-known models with list prices, limits and speed, shipped as data.

One JSON file per provider kind sits beside this module. Each file says when its
figures were taken (`as_of`) and where from (`source`); a model may override
`as_of`. Prices are USD per million tokens. Discovery merges these figures into
new LLMs; admins then edit any of them per LLM.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path

CATALOG_DIR = Path(__file__).resolve().parent

# Which catalog files to look in for a connection kind, most specific first. Local
# and OpenAI-compatible servers often serve OpenAI-named models (the simulator
# does), so they fall back to the OpenAI file. Local models have no list price: they start at
# zero, and admins set an internal price per million tokens for chargeback.
SEARCH_ORDER: dict[str, tuple[str, ...]] = {
    "openai": ("openai",),
    "azure_openai": ("azure_openai", "openai"),
    "bedrock": ("bedrock",),
    "openai_compatible": ("openai_compatible", "openai"),
    "huggingface_local": (),
}

# Snapshot suffixes (`gpt-4o-2024-08-06`), Bedrock cross-region inference profile
# prefixes (`us.anthropic...`) and Ollama's `:latest` name the same catalog model.
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_REGION_PREFIX = re.compile(r"^(us|eu|apac|us-gov|global)\.")


@dataclass(frozen=True)
class CatalogEntry:
    provider: str
    name: str
    kind: str
    input_price: Decimal
    output_price: Decimal
    cached_input_price: Decimal
    context_window: int | None
    max_output_tokens: int | None
    tokens_per_second: float | None
    as_of: date
    description: str
    aliases: tuple[str, ...] = ()


def _entry(provider: str, as_of: str, raw: dict) -> CatalogEntry:
    try:
        return CatalogEntry(
            provider=provider,
            name=raw["name"],
            kind=raw.get("kind", "chat"),
            input_price=Decimal(str(raw["input"])),
            output_price=Decimal(str(raw["output"])),
            cached_input_price=Decimal(str(raw.get("cached_input", raw["input"]))),
            context_window=raw.get("context_window"),
            max_output_tokens=raw.get("max_output_tokens"),
            tokens_per_second=raw.get("tokens_per_second"),
            as_of=date.fromisoformat(raw.get("as_of", as_of)),
            description=raw.get("description", ""),
            aliases=tuple(raw.get("aliases", ())),
        )
    except (KeyError, ValueError, ArithmeticError) as exc:
        # A broken data file should fail loudly, naming the model, not later as a wrong price.
        raise ValueError(f"catalog {provider}: bad entry {raw.get('name')!r}: {exc}") from exc


@cache
def entries(provider: str) -> tuple[CatalogEntry, ...]:
    """Every model in one provider file (empty when there is no file for it)."""
    path = CATALOG_DIR / f"{provider}.json"
    if not path.exists():
        return ()
    data = json.loads(path.read_text())
    return tuple(_entry(provider, data["as_of"], raw) for raw in data["models"])


@cache
def _index(provider: str) -> dict[str, CatalogEntry]:
    index: dict[str, CatalogEntry] = {}
    for entry in entries(provider):
        for name in (entry.name, *entry.aliases):
            index.setdefault(name.lower(), entry)
    return index


def _candidates(name: str) -> list[str]:
    lowered = name.strip().lower()
    names = [lowered]
    for variant in (
        _REGION_PREFIX.sub("", lowered),
        lowered.removesuffix(":latest"),
        _DATE_SUFFIX.sub("", lowered),
        lowered.rsplit("/", 1)[-1],
    ):
        if variant not in names:
            names.append(variant)
    return names


def lookup(kind: str, name: str) -> CatalogEntry | None:
    """The catalog entry for a model a connection of `kind` offers under `name`, if known."""
    for provider in SEARCH_ORDER.get(kind, (kind,)):
        index = _index(provider)
        for candidate in _candidates(name):
            if candidate in index:
                return index[candidate]
    return None


def providers() -> list[str]:
    return sorted(path.stem for path in CATALOG_DIR.glob("*.json"))
