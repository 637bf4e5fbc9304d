"""What the services share: the change-event writer and the editable field lists."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..models import (
    ChangeEvent,
    Connection,
)

USE_LLM = "connections.use_llm"

# Model families a provider lists that are not text models Meshgate can route
# (images, audio, moderation...): discovery leaves them out.
_NOT_ROUTABLE = re.compile(
    r"(dall-e|whisper|tts|audio|realtime|transcribe|moderation|image|sora|davinci|babbage|"
    r"computer-use|search-preview|stability\.|\.sd3|titan-image|nova-canvas|nova-reel|rerank)",
    re.IGNORECASE,
)

CONNECTION_FIELDS = (
    "name",
    "slug",
    "kind",
    "description",
    "base_url",
    "api_version",
    "region",
    "options",
    "proxy_url",
    "ca_certificate",
    "client_certificate",
    "skip_tls_verify",
    "extra_headers",
    "enabled",
    "is_simulator",
    "timeout_seconds",
    "max_retries",
    "payload_policy",
)
LLM_FIELDS = (
    "kind",
    "description",
    "input_price",
    "output_price",
    "cached_input_price",
    "context_window",
    "max_output_tokens",
    "catalog_tokens_per_second",
    "catalog_date",
)


def _record(actor, event_type: str, obj: Any, **details: Any) -> ChangeEvent:
    return ChangeEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        event_type=event_type,
        object_repr=str(obj)[:255],
        details=details,
    )


def change_record(*, actor, event_type: str, obj: Any, **details: Any) -> ChangeEvent:
    """Record a change made outside this app (quotas, ...) in the same change log; call it
    inside the change's transaction."""
    return _record(actor, event_type, obj, **details)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    return str(value)


def _check_fields(fields: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise TypeError(f"unexpected fields: {', '.join(sorted(unknown))}")


def _catalog_name(connection: Connection, name: str) -> str:
    # Azure lists deployments, whose names are the admin's; the deployments option says
    # which model each one runs ([{"name": ..., "model": ...}]), and that names the prices.
    for item in (connection.options or {}).get("deployments") or []:
        if isinstance(item, dict) and item.get("name") == name and item.get("model"):
            return str(item["model"])
    return name
