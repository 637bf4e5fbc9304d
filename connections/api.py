"""The connections' management API (`/api/`): connections, LLMs and their grants, aliases.

Authenticated by session (CSRF enforced by DRF) or by a Meshgate key; either way the
caller acts with its user's Django model permissions, reads included (`view_*`).
Every view declares its permission classes: nothing relies on the project default.
Writes go through the services, so each change is recorded as a ChangeEvent.
"""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from meshsite.lib.drf import ModelPermissions, require

from . import services as connection_services
from .models import LLM, Alias, AliasTarget, Connection
from .serializers import (
    AliasSerializer,
    ConnectionSerializer,
    ConnectionTestSerializer,
    DiscoverySerializer,
    GrantSerializer,
    GroupRefSerializer,
    LLMSerializer,
)

# Approving a model or granting it to a group changes who may call what: the same
# rights as editing it in the admin, and for grants also editing groups.
CAN_APPROVE = require("connections.view_llm", "connections.change_llm")
CAN_GRANT = require("connections.view_llm", "connections.change_llm", "auth.change_group")
# Testing uses the connection's credentials; discovering adds models.
CAN_TEST = require("connections.view_connection", "connections.change_connection")
CAN_DISCOVER = require(
    "connections.view_connection", "connections.change_connection", "connections.add_llm"
)


class ConnectionViewSet(viewsets.ModelViewSet):
    serializer_class = ConnectionSerializer
    permission_classes = [ModelPermissions]
    queryset = Connection.objects.all()
    lookup_field = "slug"

    def perform_destroy(self, connection: Connection) -> None:
        connection_services.connection_delete(connection=connection, actor=self.request.user)

    @extend_schema(request=None, responses=ConnectionTestSerializer)
    @action(detail=True, methods=["post"], permission_classes=[CAN_TEST])
    def test(
        self, request: Request, slug: str | None = None, format: str | None = None
    ) -> Response:
        """A cheap real call to the provider: 200 either way, `ok` says how it went."""
        result = connection_services.connection_test(connection=self.get_object())
        return Response(ConnectionTestSerializer(result).data)

    @extend_schema(request=None, responses={200: DiscoverySerializer, 502: DiscoverySerializer})
    @action(detail=True, methods=["post"], permission_classes=[CAN_DISCOVER])
    def discover(
        self, request: Request, slug: str | None = None, format: str | None = None
    ) -> Response:
        """Add the provider's new models, not approved; 502 if the provider could not say."""
        result = connection_services.models_discover(
            connection=self.get_object(), actor=request.user
        )
        return Response(
            DiscoverySerializer(result).data,
            status=status.HTTP_200_OK if result.ok else status.HTTP_502_BAD_GATEWAY,
        )


class LLMViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Models come from discovery; here they are read, priced, approved and granted."""

    serializer_class = LLMSerializer
    permission_classes = [ModelPermissions]
    queryset = LLM.objects.select_related("connection", "approved_by")

    @extend_schema(
        parameters=[
            OpenApiParameter("connection", str, description="Only this connection's (slug)."),
            OpenApiParameter("approved", bool, description="Only approved (true) or not (false)."),
        ]
    )
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        queryset = super().get_queryset()
        params = self.request.query_params
        if params.get("connection"):
            queryset = queryset.filter(connection__slug=params["connection"])
        if params.get("approved") in {"true", "false"}:
            queryset = queryset.filter(approved=params["approved"] == "true")
        return queryset

    @extend_schema(request=None, responses=LLMSerializer)
    @action(detail=True, methods=["post"], permission_classes=[CAN_APPROVE])
    def approve(
        self, request: Request, pk: str | None = None, format: str | None = None
    ) -> Response:
        llm = self.get_object()
        connection_services.llm_approve(llm=llm, actor=request.user)
        return Response(self.get_serializer(llm).data)

    @extend_schema(request=None, responses=LLMSerializer)
    @action(detail=True, methods=["post"], permission_classes=[CAN_APPROVE])
    def withdraw(
        self, request: Request, pk: str | None = None, format: str | None = None
    ) -> Response:
        llm = self.get_object()
        connection_services.llm_withdraw(llm=llm, actor=request.user)
        return Response(self.get_serializer(llm).data)

    @extend_schema(methods=["get"], request=None, responses=GrantSerializer(many=True))
    @extend_schema(
        methods=["post"], request=GroupRefSerializer, responses=GrantSerializer(many=True)
    )
    @action(
        detail=True,
        methods=["get", "post"],
        permission_classes=[require("connections.view_llm")],
    )
    def grants(
        self, request: Request, pk: str | None = None, format: str | None = None
    ) -> Response:
        """The groups holding `use_llm` on this model; POST `{"group": id or name}` grants one."""
        llm = self.get_object()
        if request.method == "POST":
            if not CAN_GRANT().has_permission(request, self):
                self.permission_denied(request)
            ref = GroupRefSerializer(data=request.data)
            ref.is_valid(raise_exception=True)
            group = _group(ref.validated_data["group"])
            connection_services.llm_grant(llm=llm, group=group, actor=request.user)
        return Response(GrantSerializer(_grants(llm), many=True).data)

    @extend_schema(request=None, responses=GrantSerializer(many=True))
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"grants/(?P<group_id>\d+)",
        permission_classes=[CAN_GRANT],
    )
    def revoke_grant(
        self, request: Request, pk: str | None = None, group_id: str = "", format: str | None = None
    ) -> Response:
        llm = self.get_object()
        group = get_object_or_404(Group, pk=group_id)
        connection_services.llm_revoke(llm=llm, group=group, actor=request.user)
        return Response(GrantSerializer(_grants(llm), many=True).data)


def _group(ref: str) -> Group:
    if ref.isdigit():
        return get_object_or_404(Group, pk=int(ref))
    return get_object_or_404(Group, name=ref)


def _grants(llm: LLM) -> list[dict]:
    return [
        {"id": group.pk, "name": group.name, "is_department": hasattr(group, "department")}
        for group in connection_services.llm_groups(llm)
    ]


class AliasViewSet(viewsets.ModelViewSet):
    serializer_class = AliasSerializer
    permission_classes = [ModelPermissions]
    queryset = Alias.objects.prefetch_related(
        Prefetch("targets", queryset=AliasTarget.objects.select_related("llm").order_by("position"))
    )
    lookup_field = "name"

    def perform_destroy(self, alias: Alias) -> None:
        connection_services.alias_delete(alias=alias, actor=self.request.user)


__all__ = ["AliasViewSet", "ConnectionViewSet", "LLMViewSet"]
