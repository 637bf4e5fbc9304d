"""Departments: Django groups with a cost-center code."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction

from ..models import (
    ChangeEvent,
    Department,
)
from ._common import (
    _record,
)


@transaction.atomic
def department_create(*, actor, name: str, cost_center: str, contacts: str = "") -> Department:
    """A department is a Django group with a cost-center code; reuses a group of that name."""
    group, _ = Group.objects.get_or_create(name=name)
    department = Department(group=group, cost_center=cost_center, contacts=contacts)
    department.full_clean()
    department.save()
    _record(
        actor,
        ChangeEvent.Type.DEPARTMENT_CHANGED,
        department,
        department_id=department.pk,
        action="created",
        cost_center=cost_center,
    )
    return department


@transaction.atomic
def department_update(
    *,
    department: Department,
    actor,
    name: str | None = None,
    cost_center: str | None = None,
    contacts: str | None = None,
) -> Department:
    changed: dict[str, Any] = {}
    if name is not None and name != department.group.name:
        changed["name"] = {"from": department.group.name, "to": name}
        department.group.name = name
        department.group.full_clean()
        department.group.save()
    for field_name, value in (("cost_center", cost_center), ("contacts", contacts)):
        if value is not None and value != getattr(department, field_name):
            changed[field_name] = {"from": getattr(department, field_name), "to": value}
            setattr(department, field_name, value)
    if changed:
        department.full_clean()
        department.save()
        _record(
            actor,
            ChangeEvent.Type.DEPARTMENT_CHANGED,
            department,
            department_id=department.pk,
            action="updated",
            changed=changed,
        )
    return department


@transaction.atomic
def department_delete(*, department: Department, actor) -> None:
    """Delete the department and its group (refused while API keys charge it)."""
    _record(
        actor,
        ChangeEvent.Type.DEPARTMENT_CHANGED,
        department,
        department_id=department.pk,
        action="deleted",
        cost_center=department.cost_center,
    )
    group = department.group
    department.delete()
    group.delete()
