"""`/api/calls/`: the audit trail through the REST API, scoped like the admin.

Anyone authenticated may ask; each sees only the departments they hold the audit role on
(`connections.view_department_audit`, per department), superusers everything. A record of
another department is a 404, not a 403: its existence is not disclosed.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import permissions, viewsets
from rest_framework.pagination import CursorPagination

from .models import CallRecord
from .serializers import (
    CallRecordDetailSerializer,
    CallRecordFilterSerializer,
    CallRecordSerializer,
)


class CallRecordPagination(CursorPagination):
    """Cursor pages: stable while the gateway keeps appending, and no count(*) of millions."""

    ordering = ("-started_at", "-id")
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


def filter_call_records(queryset: QuerySet, params: dict) -> QuerySet:
    """Narrow `queryset` by validated CallRecordFilterSerializer data."""
    queryset = queryset.started_between(params.get("started_after"), params.get("started_before"))
    if "department" in params:
        value = params["department"]
        by = Q(department__cost_center=value)
        if value.isdigit():
            by |= Q(department_id=int(value))
        queryset = queryset.filter(by)
    if "user" in params:
        users = get_user_model().objects.filter(username=params["user"]).values_list("pk")
        queryset = queryset.filter(user_id__in=list(users))
    if "llm" in params:
        value = params["llm"]
        queryset = queryset.filter(
            Q(llm_id=int(value)) if value.isdigit() else Q(llm__mesh_id=value)
        )
    for name, field in (
        ("model", "model_requested"),
        ("outcome", "outcome"),
        ("purpose", "purpose"),
        ("api_key_prefix", "api_key_prefix"),
    ):
        if name in params:
            queryset = queryset.filter(**{field: params[name]})
    return queryset


@extend_schema_view(list=extend_schema(parameters=[CallRecordFilterSerializer]))
class CallRecordViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [permissions.IsAuthenticated]
    pagination_class = CallRecordPagination

    def get_serializer_class(self):
        return CallRecordDetailSerializer if self.action == "retrieve" else CallRecordSerializer

    def get_queryset(self) -> QuerySet[CallRecord]:
        queryset = CallRecord.objects.visible_to(self.request.user).select_related(
            "user", "department__group", "llm", "connection"
        )
        if self.action == "list":
            filters = CallRecordFilterSerializer(data=self.request.query_params)
            filters.is_valid(raise_exception=True)
            queryset = filter_call_records(queryset, filters.validated_data)
            # Lists carry no bodies: don't read them from the database either.
            queryset = queryset.defer("request_body", "response_body", "attempts")
        return queryset
