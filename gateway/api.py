"""The gateway's management API (`/api/keys/`): people manage their API keys.

Authenticated by session (CSRF enforced by DRF) or by a Meshgate key (`api_auth.py`).
Every view declares its permission classes: nothing relies on the project default.
Writes go through `keys.py`, so each change is recorded.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from . import keys
from .models import ApiKey
from .serializers import ApiKeyCreatedSerializer, ApiKeySerializer


class IsKeyHolder(permissions.BasePermission):
    """Anyone signed in manages their own keys; others' keys need the model permissions.

    Minting a key while authenticated by a key needs `gateway.add_apikey`: otherwise a
    leaked key could mint its own successor and outlive its revocation.
    """

    def has_permission(self, request: Request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if view.action == "create" and isinstance(request.auth, ApiKey):
            return user.has_perm("gateway.add_apikey")
        return True

    def has_object_permission(self, request: Request, view, api_key: ApiKey) -> bool:
        if api_key.owner_id == request.user.pk:
            return True
        if request.method in permissions.SAFE_METHODS:
            return request.user.has_perm("gateway.view_apikey")
        return request.user.has_perm("gateway.change_apikey")


class ApiKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """A user's own API keys; with `gateway.view_apikey`, everyone's. Keys are never deleted."""

    serializer_class = ApiKeySerializer
    permission_classes = [IsKeyHolder]
    queryset = ApiKey.objects.select_related("owner", "department__group", "revoked_by")

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.request.user.has_perm("gateway.view_apikey"):
            return queryset
        return queryset.filter(owner=self.request.user)

    @extend_schema(responses={201: ApiKeyCreatedSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key = serializer.save()
        response = Response(ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"  # the key is in this body and nowhere else
        return response

    @extend_schema(request=None, responses=ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(
        self, request: Request, pk: str | None = None, format: str | None = None
    ) -> Response:
        api_key = keys.apikey_revoke(api_key=self.get_object(), actor=request.user)
        return Response(self.get_serializer(api_key).data)
