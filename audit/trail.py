"""Names of what the trail refers to, deleted or not.

Call records, roll-ups and reports keep plain ids. A name comes from the live row when it still
exists, else from `DeletedName` (written here, by a pre_delete signal, in the deleting
transaction), and is shown as "name (deleted)"; the spend stays with its id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.db.models.signals import pre_delete
from django.utils import timezone

DELETED = " (deleted)"
NONE_LABELS = {
    "department": "(unassigned)",
    "user": "(no user)",
    "llm": "(no model)",
    "api_key": "(no key)",
}
KINDS = tuple(NONE_LABELS)


@dataclass(frozen=True)
class TrailName:
    name: str
    code: str = ""  # a department's cost center
    deleted: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}{DELETED}" if self.deleted else self.name


def _model(kind: str):
    return {
        "department": lambda: apps.get_model("connections", "Department"),
        "user": lambda: apps.get_model(settings.AUTH_USER_MODEL),
        "llm": lambda: apps.get_model("connections", "LLM"),
        "api_key": lambda: apps.get_model("gateway", "ApiKey"),
    }[kind]()


def _name_of(kind: str, obj) -> tuple[str, str]:
    if kind == "department":
        return obj.group.name, obj.cost_center
    if kind == "user":
        return obj.get_username(), ""
    if kind == "llm":
        return obj.mesh_id, ""
    return obj.prefix, ""


def _live(kind: str, ids: set[int]) -> dict[int, tuple[str, str]]:
    queryset = _model(kind).objects.filter(pk__in=ids)
    if kind == "department":
        queryset = queryset.select_related("group")
    return {obj.pk: _name_of(kind, obj) for obj in queryset}


def trail_names(
    kind: str, ids: Iterable[int | None], fallback: dict[int, tuple[str, str]] | None = None
) -> dict[int | None, TrailName]:
    """{id: TrailName} for each id: the live name, else the name it had when deleted (from
    DeletedName, else from `fallback`, e.g. a roll-up's snapshot), else "#id"."""
    from .models import DeletedName

    wanted = set(ids)
    known = {pk for pk in wanted if pk is not None}
    names: dict[int | None, TrailName] = {}
    if None in wanted:
        names[None] = TrailName(NONE_LABELS[kind])
    live = _live(kind, known) if known else {}
    for pk, (name, code) in live.items():
        names[pk] = TrailName(name, code)
    gone = known - set(live)
    if gone:
        rows = DeletedName.objects.filter(kind=kind, ref_id__in=gone)
        stored = {pk: (name, code) for pk, name, code in rows.values_list("ref_id", "name", "code")}
        for pk in gone:
            name, code = stored.get(pk) or (fallback or {}).get(pk) or (f"#{pk}", "")
            names[pk] = TrailName(name or f"#{pk}", code, deleted=True)
    return names


def _remember(kind: str):
    def receiver(sender, instance, **kwargs) -> None:
        from .models import DeletedName

        name, code = _name_of(kind, instance)
        DeletedName.objects.update_or_create(
            kind=kind,
            ref_id=instance.pk,
            defaults={"name": name[:255], "code": code, "deleted_at": timezone.now()},
        )

    receiver.__name__ = f"remember_deleted_{kind}"
    return receiver


_RECEIVERS = {kind: _remember(kind) for kind in KINDS}


def connect_signals() -> None:
    """Called from AuditConfig.ready(): the models are referenced lazily (audit does not
    import the gateway)."""
    for kind, receiver in _RECEIVERS.items():
        pre_delete.connect(receiver, sender=_model(kind), dispatch_uid=f"audit-trail-{kind}")
