"""Call records as the REST API shows them, and the API's filter parameters."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import CallRecord


class CallRecordSerializer(serializers.ModelSerializer):
    """One record without its bodies: what a list shows."""

    user = serializers.CharField(source="user.username", default=None, read_only=True)
    department = serializers.CharField(source="department.group.name", default=None, read_only=True)
    cost_center = serializers.CharField(
        source="department.cost_center", default=None, read_only=True
    )
    llm = serializers.CharField(source="llm.mesh_id", default=None, read_only=True)
    connection = serializers.CharField(source="connection.slug", default=None, read_only=True)
    cost = serializers.DecimalField(max_digits=18, decimal_places=10, read_only=True)

    class Meta:
        model = CallRecord
        fields = (
            "id",
            "request_id",
            "started_at",
            "first_token_at",
            "ended_at",
            "latency_ms",
            "ttft_ms",
            "user",
            "api_key_prefix",
            "department",
            "cost_center",
            "purpose",
            "endpoint",
            "streamed",
            "model_requested",
            "alias_name",
            "llm",
            "connection",
            "outcome",
            "status_code",
            "error_message",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "tokens_estimated",
            "cost",
        )
        read_only_fields = fields


class CallRecordDetailSerializer(CallRecordSerializer):
    """One record in full: attempts, prices used, client and bodies."""

    class Meta(CallRecordSerializer.Meta):
        fields = (
            *CallRecordSerializer.Meta.fields,
            "attempts",
            "input_price",
            "output_price",
            "cached_input_price",
            "client_ip",
            "user_agent",
            "request_body",
            "response_body",
        )
        read_only_fields = fields


@extend_schema_field(OpenApiTypes.STR)
class _Moment(serializers.Field):
    """A date (its midnight, site time zone) or an ISO 8601 date-time."""

    default_error_messages = {"invalid": "Give a date (YYYY-MM-DD) or an ISO 8601 date-time."}

    def to_internal_value(self, data) -> dt.datetime:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            if len(data) == 10:
                day = dt.date.fromisoformat(data)
                return dt.datetime.combine(day, dt.time.min, timezone.get_current_timezone())
            moment = dt.datetime.fromisoformat(data.replace("Z", "+00:00"))
        except ValueError:
            self.fail("invalid")
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        return moment


class CallRecordFilterSerializer(serializers.Serializer):
    """Query parameters of `/api/calls/`; each narrows the caller's visible records."""

    started_after = _Moment(required=False, help_text="From this date or date-time (included).")
    started_before = _Moment(required=False, help_text="Until this date or date-time (excluded).")
    department = serializers.CharField(required=False, help_text="Department id or cost center.")
    user = serializers.CharField(required=False, help_text="Username.")
    llm = serializers.CharField(required=False, help_text="LLM mesh id (conn/model) or id.")
    model = serializers.CharField(required=False, help_text="Model name as requested.")
    outcome = serializers.ChoiceField(choices=CallRecord.Outcome.choices, required=False)
    purpose = serializers.CharField(required=False, help_text="API key purpose (exact).")
    api_key_prefix = serializers.CharField(required=False, help_text="mg-xxxxxxxx")
