"""`/api/quotas/`: each quota with its current spend, reservations and room, for holders of
`quotas.view_quota` (the admin's quota pages ask the same)."""

from __future__ import annotations

from rest_framework import serializers, viewsets

from meshsite.lib.drf import ModelPermissions
from quotas.models import Quota

from .services import quota_status


class QuotaSerializer(serializers.ModelSerializer):
    department = serializers.StringRelatedField()
    user = serializers.StringRelatedField()
    api_key = serializers.SerializerMethodField()
    connection = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    llm = serializers.SlugRelatedField(slug_field="mesh_id", read_only=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = Quota
        fields = [
            "id",
            "name",
            "amount",
            "period",
            "rolling_days",
            "mode",
            "alert_thresholds",
            "is_catch_all",
            "is_active",
            "department",
            "user",
            "api_key",
            "purpose",
            "connection",
            "llm",
            "status",
        ]
        read_only_fields = fields

    def get_api_key(self, quota: Quota) -> str | None:
        return quota.api_key.prefix if quota.api_key_id else None

    def get_status(self, quota: Quota) -> dict:
        status = quota_status(quota)
        return {
            "period_start": status["period_start"],
            "period_end": status["period_end"],
            "spent": str(status["spent"]),
            "reserved": str(status["reserved"]),
            "remaining": str(status["remaining"]),
            "percent": round(status["percent"], 2),
        }


class QuotaViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [ModelPermissions]
    serializer_class = QuotaSerializer
    queryset = Quota.objects.select_related(
        "department__group", "user", "api_key", "connection", "llm"
    ).order_by("name")
