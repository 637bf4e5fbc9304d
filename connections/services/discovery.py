"""Talking to the provider: discovery and connection tests.

Both call the provider *outside* any transaction: on SQLite (IMMEDIATE transactions)
an open transaction holds the write lock, and a slow provider would stall the
gateway's audit writes. Their messages never hold a secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from .. import catalog, crypto
from ..models import (
    LLM,
    ChangeEvent,
    Connection,
)
from ..providers import build_adapter
from ..providers.base import ConnectionConfig, DiscoveredModel, ProviderError
from ._common import (
    _NOT_ROUTABLE,
    _catalog_name,
    _record,
)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret value (and the head and tail providers echo back) from a text."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
        if len(secret) >= 16:
            # "Incorrect API key provided: sk-proj-ab**********wxyz" shows both ends.
            text = text.replace(secret[:8], "[redacted]").replace(secret[-4:], "[redacted]")
    return text


def _safe_message(exc: Exception, config: ConnectionConfig) -> str:
    if isinstance(exc, ProviderError):
        return scrub(exc.message, config.secret_values())[:500]
    # Not our contract's error (an adapter bug, an SDK exception): its text may echo
    # request headers, so it is scrubbed like everything else before anyone sees it.
    return scrub(f"{type(exc).__name__}: {exc}", config.secret_values())[:500]


@dataclass
class TestResult:
    ok: bool
    message: str


UNREADABLE = (
    "The stored secrets cannot be decrypted with the configured MESHGATE_ENCRYPTION_KEYS: "
    "restore the key they were written with, or type the secrets again."
)


def connection_test(*, connection: Connection) -> TestResult:
    """A cheap real call to the provider. The message never holds a secret."""
    try:
        config = ConnectionConfig.from_connection(connection)
    except crypto.SecretDecryptionError:
        return TestResult(ok=False, message=UNREADABLE)
    try:
        message = build_adapter(config).test()
    except Exception as exc:
        return TestResult(ok=False, message=_safe_message(exc, config))
    return TestResult(ok=True, message=scrub(str(message), config.secret_values())[:500])


@dataclass
class DiscoveryResult:
    ok: bool
    message: str = ""
    added: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _catalog_figures(connection: Connection, found: DiscoveredModel) -> dict[str, Any]:
    entry = catalog.lookup(connection.kind, _catalog_name(connection, found.name))
    figures: dict[str, Any] = {
        "kind": found.kind or LLM.Kind.CHAT,
        "context_window": found.context_window,
        "description": found.description,
    }
    if entry is not None:
        figures.update(
            kind=entry.kind,
            input_price=entry.input_price,
            output_price=entry.output_price,
            cached_input_price=entry.cached_input_price,
            context_window=entry.context_window or found.context_window,
            max_output_tokens=entry.max_output_tokens,
            catalog_tokens_per_second=entry.tokens_per_second,
            catalog_date=entry.as_of,
            description=found.description or entry.description,
        )
    return figures


def models_discover(
    *, connection: Connection, actor, only_catalog: bool = False
) -> DiscoveryResult:
    """Ask the provider what it offers and add the new models, not approved.

    New models get the catalog's prices, context window, speed and date. Models
    already known keep their (admin-edited) figures; only blanks are filled in.
    With `only_catalog`, models the catalog does not know are left out.
    """
    try:
        config = ConnectionConfig.from_connection(connection)
    except crypto.SecretDecryptionError:
        return DiscoveryResult(ok=False, message=UNREADABLE)
    try:
        found = build_adapter(config).list_models()
    except Exception as exc:
        return DiscoveryResult(ok=False, message=_safe_message(exc, config))
    return _discovery_save(
        connection=connection, actor=actor, found=found, only_catalog=only_catalog
    )


@transaction.atomic
def _discovery_save(
    *, connection: Connection, actor, found: list[DiscoveredModel], only_catalog: bool
) -> DiscoveryResult:
    result = DiscoveryResult(ok=True)
    existing = {llm.name: llm for llm in connection.llms.all()}
    for model in found:
        if _NOT_ROUTABLE.search(model.name):
            result.skipped.append(model.name)
            continue
        figures = _catalog_figures(connection, model)
        if model.name in existing:
            llm = existing[model.name]
            blanks = {k: v for k, v in figures.items() if getattr(llm, k) in (None, "") and v}
            if blanks:
                for name, value in blanks.items():
                    setattr(llm, name, value)
                llm.save(update_fields=list(blanks))
            result.known.append(model.name)
            continue
        if only_catalog and "catalog_date" not in figures:
            result.skipped.append(model.name)
            continue
        clean = {k: v for k, v in figures.items() if v is not None}
        LLM.objects.create(connection=connection, name=model.name, approved=False, **clean)
        existing[model.name] = None  # a provider listing a name twice adds it once
        result.added.append(model.name)
    result.message = (
        f"{len(result.added)} new model(s) added (not approved), "
        f"{len(result.known)} already known, {len(result.skipped)} skipped."
    )
    _record(
        actor,
        ChangeEvent.Type.MODELS_DISCOVERED,
        connection,
        connection_id=connection.pk,
        added=result.added,
        known=len(result.known),
        skipped=result.skipped,
    )
    return result
