"""Reading model folders: which task a folder serves and its context length, from its JSON files.

Plain JSON reads, no torch: discovery lists what is on disk without loading anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .options import _NAME, ModelPathError, cache_dirs, model_path

# Architectures (config.json "architectures") by the suffix that names their head.
_CHAT_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_CLASSIFY_SUFFIXES = ("ForSequenceClassification",)
_SEQ2SEQ_SUFFIXES = ("ForConditionalGeneration",)
_LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "max_sequence_length",
    "seq_length",
)


@dataclass(frozen=True)
class Folder:
    name: str
    path: Path
    kind: str | None  # chat, embedding, classification, summarization; None: not servable
    context_window: int | None
    description: str


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_sentence_transformers(path: Path) -> bool:
    return (path / "modules.json").is_file() or (
        path / "config_sentence_transformers.json"
    ).is_file()


def task_of(path: Path, config: dict[str, Any] | None = None) -> tuple[str | None, str]:
    """(Meshgate LLM kind or None, a short description) of the model in `path`."""
    config = _json(path / "config.json") if config is None else config
    architectures = [a for a in config.get("architectures") or () if isinstance(a, str)]
    arch = architectures[0] if architectures else config.get("model_type", "unknown")
    if is_sentence_transformers(path):
        return "embedding", f"sentence embeddings (sentence-transformers, {arch})"
    if any(a.endswith(_CLASSIFY_SUFFIXES) for a in architectures):
        labels = config.get("id2label") or {}
        names = ", ".join(str(v) for v in list(labels.values())[:6])
        return "classification", f"text classification ({arch}; labels: {names})"
    if config.get("is_encoder_decoder") and any(
        a.endswith(_SEQ2SEQ_SUFFIXES) for a in architectures
    ):
        return "summarization", f"summarization, sequence to sequence ({arch})"
    if any(a.endswith(_CHAT_SUFFIXES) for a in architectures):
        return "chat", f"text generation / chat ({arch})"
    if architectures and all(a.endswith("Model") for a in architectures):
        return "embedding", f"feature extraction, mean-pooled ({arch})"
    return None, f"not a task Meshgate serves ({arch})"


def context_window(path: Path, config: dict[str, Any] | None = None) -> int | None:
    config = _json(path / "config.json") if config is None else config
    sbert = _json(path / "sentence_bert_config.json").get("max_seq_length")
    if isinstance(sbert, int) and sbert > 0:
        return sbert
    for key in _LENGTH_KEYS:
        value = config.get(key)
        if isinstance(value, int) and 0 < value < 10_000_000:
            return value
    limit = _json(path / "tokenizer_config.json").get("model_max_length")
    if isinstance(limit, int) and 0 < limit < 10_000_000:
        return limit
    return None


def _describe(name: str, path: Path) -> Folder:
    config = _json(path / "config.json")
    kind, description = task_of(path, config)
    return Folder(name, path, kind, context_window(path, config), description)


def _looks_like_model(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "modules.json").is_file()


def scan(models_dir: str) -> list[Folder]:
    """Every model folder: plain save_pretrained folders (name, org/name) and Hub cache folders."""
    root = Path(models_dir).resolve()
    names: set[str] = set()
    for base in cache_dirs(root):
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if child.name.startswith("models--") and child.is_dir():
                names.add(child.name[len("models--") :].replace("--", "/", 1))
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith((".", "models--")) or child.name == "hub":
            continue
        if _looks_like_model(child):
            names.add(child.name)
            continue
        for grandchild in sorted(child.iterdir()):  # org/name folders
            if grandchild.is_dir() and _looks_like_model(grandchild):
                names.add(f"{child.name}/{grandchild.name}")
    folders = []
    for name in sorted(names):
        if not _NAME.match(name):
            continue
        try:
            path = model_path(str(root), name)
        except ModelPathError:  # a symlink out of the models directory: not listed
            continue
        if _looks_like_model(path):
            folders.append(_describe(name, path))
    return folders
