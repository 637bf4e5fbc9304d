"""`/api/departments/`: each department's access, as its admin page shows it: members, the
models granted to it, and who may view its reports and its audit records (users or groups,
this department only).

Reading needs `connections.view_department`; changing (PATCH, grant, revoke) also
`connections.change_department`, the right to manage a department's access. Changes go
through the services, one ChangeEvent per difference, in the change's transaction.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from meshsite.lib.drf import ModelPermissions, require

from . import services
from .models import LLM, Department

ACCESS_CHOICES = sorted(services.ACCESSES)
CAN_CHANGE = require("connections.view_department", "connections.change_department")


class _Viewers(serializers.Serializer):
    users = serializers.SlugRelatedField(
        many=True, slug_field="username", queryset=User.objects.all(), required=False
    )
    groups = serializers.SlugRelatedField(
        many=True, slug_field="name", queryset=Group.objects.all(), required=False
    )


class _AccessSerializer(serializers.Serializer):
    reports = _Viewers(required=False)
    audit = _Viewers(required=False)


class DepartmentSerializer(serializers.Serializer):
    """A department and its access panel; on PATCH each list given replaces the current one."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=150, required=False)
    cost_center = serializers.CharField(max_length=32, required=False)
    contacts = serializers.CharField(required=False, allow_blank=True)
    members = serializers.SlugRelatedField(
        many=True, slug_field="username", queryset=User.objects.all(), required=False
    )
    llms = serializers.SlugRelatedField(
        many=True, slug_field="mesh_id", queryset=LLM.objects.all(), required=False
    )
    access = _AccessSerializer(required=False)

    def to_representation(self, department: Department) -> dict[str, Any]:
        access = {}
        for key in ACCESS_CHOICES:
            users, groups = services.department_access_holders(department=department, access=key)
            access[key] = {
                "users": [user.username for user in users],
                "groups": [group.name for group in groups],
            }
        return {
            "id": department.pk,
            "name": department.group.name,
            "cost_center": department.cost_center,
            "contacts": department.contacts,
            "members": [user.username for user in services.department_members(department)],
            "llms": [llm.mesh_id for llm in services.department_llms(department)],
            "access": access,
        }

    @transaction.atomic
    def update(self, department: Department, data: dict[str, Any]) -> Department:
        actor = self.context["request"].user
        department = services.department_update(
            department=department,
            actor=actor,
            **{k: data[k] for k in ("name", "cost_center", "contacts") if k in data},
        )
        viewers = {}
        for key, given in (data.get("access") or {}).items():
            held_users, held_groups = services.department_access_holders(
                department=department, access=key
            )
            viewers[key] = (given.get("users", held_users), given.get("groups", held_groups))
        services.department_access_set(
            department=department,
            actor=actor,
            members=data.get("members"),
            llms=data.get("llms"),
            viewers=viewers,
        )
        return department


class GrantRequestSerializer(serializers.Serializer):
    """One grant: an access and exactly one of a user (id or username) or a group (id or name)."""

    access = serializers.ChoiceField(choices=ACCESS_CHOICES)
    user = serializers.CharField(required=False)
    group = serializers.CharField(required=False)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("user" in data) == ("group" in data):
            raise serializers.ValidationError("Give exactly one of user or group.")
        return data


def _holder(data: dict[str, Any]) -> dict[str, User | Group]:
    if "user" in data:
        ref = data["user"]
        lookup = {"pk": int(ref)} if ref.isdigit() else {"username": ref}
        return {"user": get_object_or_404(User, **lookup)}
    ref = data["group"]
    lookup = {"pk": int(ref)} if ref.isdigit() else {"name": ref}
    return {"group": get_object_or_404(Group, **lookup)}


class DepartmentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Departments are created and deleted in the admin; here their access is read and set."""

    serializer_class = DepartmentSerializer
    permission_classes = [ModelPermissions]
    queryset = Department.objects.select_related("group").order_by("group__name")

    def _grant(self, request: Request, *, grant: bool) -> Response:
        department = self.get_object()
        ask = GrantRequestSerializer(data=request.data)
        ask.is_valid(raise_exception=True)
        service = services.department_access_grant if grant else services.department_access_revoke
        service(
            department=department,
            access=ask.validated_data["access"],
            actor=request.user,
            **_holder(ask.validated_data),
        )
        return Response(self.get_serializer(department).data)

    @extend_schema(request=GrantRequestSerializer, responses=DepartmentSerializer)
    @action(detail=True, methods=["post"], permission_classes=[CAN_CHANGE])
    def grant(self, request: Request, pk: str | None = None, format: str | None = None) -> Response:
        """Let one user or group view this department's reports or audit records."""
        return self._grant(request, grant=True)

    @extend_schema(request=GrantRequestSerializer, responses=DepartmentSerializer)
    @action(detail=True, methods=["post"], permission_classes=[CAN_CHANGE])
    def revoke(
        self, request: Request, pk: str | None = None, format: str | None = None
    ) -> Response:
        """Take that access away again (a global permission is not touched)."""
        return self._grant(request, grant=False)
