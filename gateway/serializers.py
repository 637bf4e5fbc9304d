"""Serializers of the gateway's management API: API keys. Writes call `keys.py`.

Like every writable serializer of the API, they refuse fields they do not accept
(read-only or unknown) with a 400 instead of ignoring them.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers

from connections.models import Department
from meshsite.lib.drf import StrictFieldsMixin, service_errors

from . import keys
from .models import ApiKey


@extend_schema_field(OpenApiTypes.STR)
class DepartmentNameField(serializers.SlugRelatedField):
    """A department by its group's name."""


class ApiKeySerializer(StrictFieldsMixin, serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(
        slug_field="username",
        queryset=get_user_model().objects.all(),
        required=False,
        help_text="Defaults to you. Another user only with the gateway.add_apikey permission.",
    )
    department = DepartmentNameField(
        slug_field="group__name",
        queryset=Department.objects.select_related("group"),
        help_text="The department charged: one of the owner's groups.",
    )
    expires_in_days = serializers.IntegerField(
        min_value=1, max_value=3650, required=False, write_only=True
    )
    revoked_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "prefix",
            "owner",
            "department",
            "purpose",
            "created_at",
            "expires_at",
            "expires_in_days",
            "revoked_at",
            "revoked_by",
            "last_used_at",
            "is_active",
        ]
        read_only_fields = ["prefix", "created_at", "revoked_at", "last_used_at"]

    def validate_owner(self, owner):
        actor = self.context["request"].user
        if owner != actor and not actor.has_perm("gateway.add_apikey"):
            raise exceptions.PermissionDenied("You can create keys for yourself only.")
        return owner

    def validate(self, attrs: dict) -> dict:
        if "expires_in_days" in attrs:
            if attrs.get("expires_at"):
                raise serializers.ValidationError(
                    {"expires_in_days": ["Give expires_in_days or expires_at, not both."]}
                )
            attrs["expires_at"] = timezone.now() + timedelta(days=attrs.pop("expires_in_days"))
        return attrs

    def create(self, validated_data: dict) -> ApiKey:
        actor = self.context["request"].user
        owner = validated_data.get("owner") or actor
        with service_errors():
            api_key, raw_key = keys.apikey_create(
                owner=owner,
                department=validated_data["department"],
                purpose=validated_data["purpose"],
                expires_at=validated_data.get("expires_at"),
                actor=actor,
            )
        # Only the create response carries the key; it is not kept anywhere.
        api_key.raw_key = raw_key
        return api_key


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.SerializerMethodField(help_text="The key itself. Shown once, never again.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]

    def get_key(self, api_key: ApiKey) -> str:
        return api_key.raw_key
