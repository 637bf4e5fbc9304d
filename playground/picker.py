"""What the picker offers: the user's departments and the chat models they may use.

The models come from the gateway (`gateway.pipeline.list_models`), so the page
lists exactly what an API call by this user would be allowed to reach.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async

from connections.models import Department

# Model kinds a chat conversation can use; embeddings and friends are left out.
CHAT_KINDS = frozenset({"chat", ""})


def departments_of(user) -> list[dict[str, Any]]:
    return [
        {"id": d.pk, "name": d.name, "cost_center": d.cost_center}
        for d in Department.objects.filter(group__user=user).select_related("group")
    ]


adepartments_of = sync_to_async(departments_of)


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def picker_entry(model: dict[str, Any]) -> dict[str, Any] | None:
    """A picker entry from one model object of `list_models`, or None if it cannot chat."""
    meta = model.get("meshgate") if isinstance(model.get("meshgate"), dict) else {}
    if str(meta.get("kind") or "chat") not in CHAT_KINDS:
        return None
    measured = meta.get("measured") if isinstance(meta.get("measured"), dict) else {}
    return {
        "id": model["id"],
        "alias": bool(meta.get("alias")),
        "description": str(meta.get("description") or ""),
        "targets": [str(t) for t in meta.get("targets") or []],
        "input_price": _float(meta.get("input_price_per_million")),
        "output_price": _float(meta.get("output_price_per_million")),
        "tokens_per_second": _float(measured.get("tokens_per_second")),
        "p50_ms": _float(measured.get("p50_ms")),
        "ttft_ms": _float(measured.get("ttft_ms")),
        "catalog_tokens_per_second": _float(meta.get("catalog_tokens_per_second")),
    }


def _with_alias_figures(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An alias costs and runs like the target that serves it: its first usable one."""
    by_id = {e["id"]: e for e in entries if not e["alias"]}
    for entry in entries:
        first = by_id.get(entry["targets"][0]) if entry["alias"] and entry["targets"] else None
        if first is not None:
            for key in ("input_price", "output_price", "tokens_per_second", "p50_ms", "ttft_ms"):
                if entry[key] is None:
                    entry[key] = first[key]
    return entries


def _price(value: float | None) -> str:
    return "?" if value is None else f"${value:,.2f}"


def describe(entry: dict[str, Any]) -> dict[str, str]:
    """Short human figures for the picker: price per million tokens and measured speed."""
    price = f"{_price(entry['input_price'])} in / {_price(entry['output_price'])} out per 1M tokens"
    if entry["alias"] and entry["targets"]:
        price = f"{price} (served by {entry['targets'][0]} first)"
    if entry["tokens_per_second"]:
        speed = f"{entry['tokens_per_second']:.0f} tokens/s measured"
        if entry["p50_ms"]:
            speed += f", p50 {entry['p50_ms'] / 1000:.1f} s"
    elif entry["catalog_tokens_per_second"]:
        speed = f"{entry['catalog_tokens_per_second']:.0f} tokens/s (catalog, not yet measured)"
    else:
        speed = "speed not measured yet"
    return {"price_text": price, "speed_text": speed}


def entries(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The picker's entries from `list_models`: chat models and aliases, described, sorted."""
    found = _with_alias_figures([e for e in map(picker_entry, models) if e is not None])
    described = [{**entry, **describe(entry)} for entry in found]
    # Aliases first (the stable names applications should use), then models by id.
    return sorted(described, key=lambda e: (not e["alias"], e["id"]))
