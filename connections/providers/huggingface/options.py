"""Settings of a `huggingface_local` connection, and where a model's folder is.

Both are plain Python (no torch): the admin validates options with them even on
a server without the optional extra, and the adapter refuses a model name that
would leave the models directory (`..`, absolute paths, symlinks pointing out).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEVICES = ("cpu", "cuda", "auto")
DEFAULTS: dict[str, Any] = {
    "device": "cpu",
    "max_concurrent_generations": 2,
    "max_loaded_models": 2,
    "idle_unload_seconds": 900,
}
KNOWN = {"models_dir", *DEFAULTS}
# One folder name, or "org/name" (the Hub's names, and the cache's models--org--name folders).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}(/[A-Za-z0-9][A-Za-z0-9._-]{0,199})?$")


@dataclass(frozen=True)
class LocalOptions:
    models_dir: str
    device: str = "cpu"
    max_concurrent_generations: int = 2
    max_loaded_models: int = 2
    idle_unload_seconds: float = 900.0


def _positive_int(options: dict[str, Any], name: str, high: int) -> int:
    value = options.get(name, DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"'{name}' must be a whole number from 1 to {high}.")
    return value


def parse_options(options: dict[str, Any] | None, *, check_dir: bool = True) -> LocalOptions:
    """The connection's options as LocalOptions; ValueError with an admin-facing message."""
    options = options or {}
    if not isinstance(options, dict):
        raise ValueError("Options must be a JSON object.")
    unknown = sorted(set(options) - KNOWN)
    if unknown:
        raise ValueError(
            f"Unknown option(s) {', '.join(unknown)}; a local Hugging Face connection takes "
            f"{', '.join(sorted(KNOWN))}."
        )
    models_dir = options.get("models_dir")
    if not isinstance(models_dir, str) or not models_dir.strip():
        raise ValueError(
            'The option "models_dir" is required: the folder that holds the models, '
            'e.g. {"models_dir": "/srv/models"}.'
        )
    if "\x00" in models_dir or not os.path.isabs(models_dir):
        raise ValueError('"models_dir" must be an absolute path.')
    if check_dir:
        path = Path(models_dir)
        if not path.exists():
            raise ValueError(f'"models_dir" {models_dir} does not exist.')
        if not path.is_dir():
            raise ValueError(f'"models_dir" {models_dir} is not a directory.')
        if not os.access(path, os.R_OK | os.X_OK):
            raise ValueError(f'"models_dir" {models_dir} cannot be read by this server.')
    device = options.get("device", DEFAULTS["device"])
    if device not in DEVICES:
        raise ValueError(f"'device' must be one of {', '.join(DEVICES)}.")
    idle = options.get("idle_unload_seconds", DEFAULTS["idle_unload_seconds"])
    if isinstance(idle, bool) or not isinstance(idle, int | float) or not 1 <= idle <= 7 * 86400:
        raise ValueError("'idle_unload_seconds' must be a number of seconds from 1 to 604800.")
    return LocalOptions(
        models_dir=str(Path(models_dir).resolve()),
        device=device,
        max_concurrent_generations=_positive_int(options, "max_concurrent_generations", 64),
        max_loaded_models=_positive_int(options, "max_loaded_models", 64),
        idle_unload_seconds=float(idle),
    )


class ModelPathError(Exception):
    """The model name is not a folder inside the models directory (`missing` says which)."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


def _inside(root: Path, path: Path) -> bool:
    try:
        return os.path.commonpath([root, path.resolve()]) == str(root)
    except ValueError:
        return False


def _cache_snapshot(repo: Path) -> Path | None:
    """The snapshot a Hub cache folder (models--org--name) points at: refs/main, else the newest."""
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if re.fullmatch(r"[0-9a-f]{6,64}", commit) and (snapshots / commit).is_dir():
            return snapshots / commit
    found = [child for child in snapshots.iterdir() if child.is_dir()]
    return max(found, key=lambda child: child.stat().st_mtime) if found else None


def cache_dirs(root: Path) -> list[Path]:
    """Where Hub cache folders may sit: the models directory itself, or its hub/ (HF_HOME)."""
    return [root, root / "hub"]


def model_path(models_dir: str, name: str) -> Path:
    """The folder of model `name`, guaranteed inside `models_dir`; else ModelPathError."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name.split("/"):
        raise ModelPathError(f"'{name[:100]}' is not a valid local model name.", missing=False)
    root = Path(models_dir).resolve()
    candidates: list[Path] = []
    for base in cache_dirs(root):
        snapshot = _cache_snapshot(base / ("models--" + name.replace("/", "--")))
        if snapshot is not None:
            candidates.append(snapshot)
    candidates.append(root / name)
    for candidate in candidates:
        if candidate.is_dir():
            if not _inside(root, candidate):
                raise ModelPathError(
                    f"The folder of '{name}' lies outside the models directory.", missing=False
                )
            return candidate
    raise ModelPathError(
        f"The model '{name}' is not on disk in this connection's models directory "
        "(local models are never downloaded).",
        missing=True,
    )
