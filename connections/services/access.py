"""Who belongs to a department and who may look at it: members, the models granted to it,
and who may view its reports or its audit records (users or groups).

Report and audit viewing are django-guardian object permissions on the Department
(`view_department_reports`, `view_department_audit`); held globally (a user's or a
group's own permissions) the same codename covers ALL departments. Every change is a
ChangeEvent in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import Group, Permission, User
from django.db import transaction
from django.db.models import Q
from guardian.shortcuts import assign_perm, remove_perm

from ..models import (
    LLM,
    ChangeEvent,
    Department,
    DepartmentGroupObjectPermission,
    DepartmentUserObjectPermission,
    LLMGroupObjectPermission,
)
from ._common import _record
from .llms import llm_grant, llm_revoke


@dataclass(frozen=True)
class Access:
    """One kind of access to a department's data, as people read it."""

    key: str
    codename: str
    label: str  # "view Marketing's reports" reads: f"view {name}'s {label}"


ACCESSES = {
    "reports": Access("reports", "view_department_reports", "reports"),
    "audit": Access("audit", "view_department_audit", "audit records"),
}


def _access(key: str) -> Access:
    try:
        return ACCESSES[key]
    except KeyError:
        raise ValueError(f"unknown access {key!r}: one of {', '.join(ACCESSES)}") from None


def department_members(department: Department) -> list[User]:
    return list(department.group.user_set.order_by("username"))


def department_llms(department: Department) -> list[LLM]:
    """The LLMs the department's group holds `use_llm` on."""
    held = LLMGroupObjectPermission.objects.filter(
        group=department.group, permission__codename="use_llm"
    ).values("content_object_id")
    return list(LLM.objects.filter(pk__in=held).order_by("mesh_id"))


def department_access_holders(
    *, department: Department, access: str
) -> tuple[list[User], list[Group]]:
    """The users and the groups granted `access` on this department (not global holders)."""
    codename = _access(access).codename
    users = DepartmentUserObjectPermission.objects.filter(
        content_object=department, permission__codename=codename
    ).values("user_id")
    groups = DepartmentGroupObjectPermission.objects.filter(
        content_object=department, permission__codename=codename
    ).values("group_id")
    return (
        list(User.objects.filter(pk__in=users).order_by("username")),
        list(Group.objects.filter(pk__in=groups).order_by("name")),
    )


def department_access_global_holders(*, access: str) -> tuple[list[User], list[Group]]:
    """Who holds `access` globally, for ALL departments (superusers aside)."""
    codename = _access(access).codename
    permission = Permission.objects.filter(content_type__app_label="connections", codename=codename)
    users = User.objects.filter(
        Q(user_permissions__in=permission) | Q(groups__permissions__in=permission)
    ).distinct()
    groups = Group.objects.filter(permissions__in=permission).distinct()
    return list(users.order_by("username")), list(groups.order_by("name"))


def _who(user: User | None, group: Group | None) -> dict:
    if (user is None) == (group is None):
        raise ValueError("name exactly one of user or group")
    if user is not None:
        return {"user": user.username, "user_id": user.pk}
    return {"group": group.name, "group_id": group.pk}


@transaction.atomic
def department_access_grant(
    *,
    department: Department,
    access: str,
    actor,
    user: User | None = None,
    group: Group | None = None,
) -> bool:
    """Let one user or group view this department's reports or audit records (and no other
    department's). Returns whether it changed."""
    kind = _access(access)
    who = _who(user, group)
    users, groups = department_access_holders(department=department, access=access)
    if (user in users) if user is not None else (group in groups):
        return False
    assign_perm(f"connections.{kind.codename}", user or group, department)
    _record(
        actor,
        ChangeEvent.Type.PERMISSION_GRANTED,
        department,
        department_id=department.pk,
        permission=f"view {department.name}'s {kind.label}",
        **who,
    )
    return True


@transaction.atomic
def department_access_revoke(
    *,
    department: Department,
    access: str,
    actor,
    user: User | None = None,
    group: Group | None = None,
) -> bool:
    """Take `access` on this department away from one user or group (a global grant is not
    touched). Returns whether it changed."""
    kind = _access(access)
    who = _who(user, group)
    users, groups = department_access_holders(department=department, access=access)
    if (user not in users) if user is not None else (group not in groups):
        return False
    remove_perm(f"connections.{kind.codename}", user or group, department)
    _record(
        actor,
        ChangeEvent.Type.PERMISSION_REVOKED,
        department,
        department_id=department.pk,
        permission=f"view {department.name}'s {kind.label}",
        **who,
    )
    return True


@transaction.atomic
def department_member_add(*, department: Department, user: User, actor) -> bool:
    if department.group.user_set.filter(pk=user.pk).exists():
        return False
    user.groups.add(department.group)
    _record(
        actor,
        ChangeEvent.Type.MEMBER_ADDED,
        department,
        department_id=department.pk,
        user=user.username,
        user_id=user.pk,
    )
    return True


@transaction.atomic
def department_member_remove(*, department: Department, user: User, actor) -> bool:
    if not department.group.user_set.filter(pk=user.pk).exists():
        return False
    user.groups.remove(department.group)
    _record(
        actor,
        ChangeEvent.Type.MEMBER_REMOVED,
        department,
        department_id=department.pk,
        user=user.username,
        user_id=user.pk,
    )
    return True


def _diff(current: Iterable, wanted: Iterable) -> tuple[list, list]:
    now = {item.pk: item for item in current}
    then = {item.pk: item for item in wanted}
    return (
        [item for pk, item in then.items() if pk not in now],
        [item for pk, item in now.items() if pk not in then],
    )


@transaction.atomic
def department_access_set(
    *,
    department: Department,
    actor,
    members: Iterable[User] | None = None,
    llms: Iterable[LLM] | None = None,
    viewers: dict[str, tuple[Iterable[User], Iterable[Group]]] | None = None,
) -> int:
    """Make the department's members, granted models and viewers exactly these (None leaves
    that part as it is), one recorded change per difference. Returns the number of changes.

    `viewers` maps an access ("reports", "audit") to (users, groups)."""
    changes = 0
    if members is not None:
        added, removed = _diff(department_members(department), members)
        for user in added:
            changes += department_member_add(department=department, user=user, actor=actor)
        for user in removed:
            changes += department_member_remove(department=department, user=user, actor=actor)
    if llms is not None:
        added, removed = _diff(department_llms(department), llms)
        for llm in added:
            changes += llm_grant(llm=llm, group=department.group, actor=actor)
        for llm in removed:
            changes += llm_revoke(llm=llm, group=department.group, actor=actor)
    for access, (users, groups) in (viewers or {}).items():
        held_users, held_groups = department_access_holders(department=department, access=access)
        for kind, held, wanted in (("user", held_users, users), ("group", held_groups, groups)):
            added, removed = _diff(held, wanted)
            for item in added:
                changes += department_access_grant(
                    department=department, access=access, actor=actor, **{kind: item}
                )
            for item in removed:
                changes += department_access_revoke(
                    department=department, access=access, actor=actor, **{kind: item}
                )
    return changes


# --- global permissions and group membership (the user and group admin pages) ------------------

# Held as a user's or a group's own permission, each of these covers ALL departments.
EVERY_DEPARTMENT = {
    ("connections", "view_department_reports"): "View and download the reports of ALL "
    "departments (for one department: its page's access panel)",
    ("connections", "view_department_audit"): "View the audit records of ALL departments "
    "(for one department: its page's access panel)",
    ("audit", "view_callrecord"): "View the call records of ALL departments",
    ("audit", "view_chargebackreport"): "View the chargeback reports of ALL departments",
}


def permission_label(permission: Permission) -> str:
    """How a global permission reads to people ("app | what it allows")."""
    key = (permission.content_type.app_label, permission.codename)
    if key in EVERY_DEPARTMENT:
        return f"{permission.content_type.app_label} | {EVERY_DEPARTMENT[key]}"
    return str(permission)


@transaction.atomic
def permissions_set(
    *,
    actor,
    permissions: Iterable[Permission],
    user: User | None = None,
    group: Group | None = None,
) -> int:
    """Make exactly these the global permissions a user or a group holds itself (a user's
    groups' are theirs), one recorded grant or revoke per difference. Returns their number."""
    who = _who(user, group)
    holder = user if user is not None else group
    related = user.user_permissions if user is not None else group.permissions
    current = related.select_related("content_type")
    added, removed = _diff(current, Permission.objects.filter(pk__in=[p.pk for p in permissions]))
    for permission, event_type in [
        *((p, ChangeEvent.Type.PERMISSION_GRANTED) for p in added),
        *((p, ChangeEvent.Type.PERMISSION_REVOKED) for p in removed),
    ]:
        if event_type == ChangeEvent.Type.PERMISSION_GRANTED:
            related.add(permission)
        else:
            related.remove(permission)
        _record(
            actor,
            event_type,
            holder,
            permission=permission_label(permission),
            scope="global",
            **who,
        )
    return len(added) + len(removed)


@transaction.atomic
def user_groups_set(*, user: User, groups: Iterable[Group], actor) -> int:
    """Make exactly these the user's groups (departments included), one recorded change per
    group joined or left. Returns their number."""
    added, removed = _diff(user.groups.all(), groups)
    for group, event_type in [
        *((g, ChangeEvent.Type.MEMBER_ADDED) for g in added),
        *((g, ChangeEvent.Type.MEMBER_REMOVED) for g in removed),
    ]:
        if event_type == ChangeEvent.Type.MEMBER_ADDED:
            user.groups.add(group)
        else:
            user.groups.remove(group)
        department = Department.objects.filter(group=group).first()
        _record(
            actor,
            event_type,
            department or group,
            user=user.username,
            user_id=user.pk,
            **({"department_id": department.pk} if department else {"group": group.name}),
        )
    return len(added) + len(removed)


__all__ = [
    "ACCESSES",
    "EVERY_DEPARTMENT",
    "Access",
    "department_access_global_holders",
    "department_access_grant",
    "department_access_holders",
    "department_access_revoke",
    "department_access_set",
    "department_llms",
    "department_member_add",
    "department_member_remove",
    "department_members",
    "permission_label",
    "permissions_set",
    "user_groups_set",
]
