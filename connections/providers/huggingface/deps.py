"""Whether the optional extra (torch, transformers, sentence-transformers) is installed."""

from __future__ import annotations

import importlib
import importlib.util

EXPLANATION = (
    "Local Hugging Face models need the optional extra, which is not installed on this "
    "server: run `make install-local` (it installs torch==2.13.0, then requirements-local.txt)."
)


def missing() -> str | None:
    """None when the extra can be imported, else the explanation naming what is missing."""
    for module in ("torch", "transformers", "sentence_transformers"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{EXPLANATION} Missing here: {exc.name or module}."
    return None


def available() -> bool:
    return missing() is None


def installed_note() -> str:
    """For pages: whether the extra's packages are present, found without importing them."""
    for module in ("torch", "transformers", "sentence_transformers"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{EXPLANATION} Missing here: {module}."
    return "The optional extra is installed here."
