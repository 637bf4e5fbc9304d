"""Serializers of the management API. Writes call the services; nothing here saves a model.

Every writable serializer refuses fields it does not accept (read-only or unknown)
with a 400 instead of ignoring them: a client that sends `approved: true` or
`is_staff: true` learns it did not work, and nothing changes.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers

from connections import services as connection_services
from connections.models import LLM, Alias, Connection, Department
from connections.services import CONNECTION_FIELDS
from connections.validators import validate_base_url

from . import keys
from .models import ApiKey


@contextmanager
def service_errors():
    """Turn a service's Django ValidationError into DRF's, so it answers 400 with its fields."""
    try:
        yield
    except DjangoValidationError as exc:
        raise serializers.ValidationError(serializers.as_serializer_error(exc))


# Sent by HTML forms (the browsable API's included), not data for the model.
FORM_PLUMBING = frozenset({"csrfmiddlewaretoken"})


class StrictFieldsMixin:
    """Refuse input fields that are read-only or unknown rather than silently dropping them."""

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            fields = self.fields  # type: ignore[attr-defined]
            writable = {name for name, field in fields.items() if not field.read_only}
            refused = sorted(set(data.keys()) - writable - FORM_PLUMBING)
            if refused:
                raise serializers.ValidationError(
                    {name: ["This field cannot be set here."] for name in refused}
                )
        return super().to_internal_value(data)  # type: ignore[misc]


# --- connections ------------------------------------------------------------------------------


class ConnectionSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    secrets = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=10_000),
        write_only=True,
        required=False,
        help_text="Write-only: secret field name -> value (e.g. api_key). Never returned; "
        "an empty value leaves the stored secret as it is.",
    )
    secrets_set = serializers.SerializerMethodField(
        help_text="For each secret field of this kind: when it was last set, or null."
    )

    class Meta:
        model = Connection
        # The same editable fields the connection services accept, plus the API's own.
        fields = [
            "id",
            *CONNECTION_FIELDS,
            "secrets",
            "secrets_set",
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["version", "created_at", "updated_at"]

    def get_secrets_set(self, connection: Connection) -> dict[str, str | None]:
        return {name: connection.secrets_set_at.get(name) for name in connection.secret_field_names}

    def validate_base_url(self, value: str) -> str:
        if value:
            try:
                validate_base_url(value)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.messages)
        return value

    def validate(self, attrs: dict) -> dict:
        kind = attrs.get("kind", getattr(self.instance, "kind", None))
        allowed = Connection.SECRET_FIELDS.get(kind, ())
        unknown = sorted(set(attrs.get("secrets", {})) - set(allowed))
        if unknown:
            # Names only: a value must never be echoed, even in an error.
            raise serializers.ValidationError(
                {"secrets": [f"Not a secret field of a {kind} connection: {', '.join(unknown)}."]}
            )
        base_url = attrs.get("base_url", getattr(self.instance, "base_url", ""))
        if kind in {Connection.Kind.OPENAI_COMPATIBLE, Connection.Kind.AZURE_OPENAI} and not (
            base_url
        ):
            raise serializers.ValidationError(
                {"base_url": ["This kind of connection needs a base URL."]}
            )
        return attrs

    def create(self, validated_data: dict) -> Connection:
        secrets = validated_data.pop("secrets", {})
        actor = self.context["request"].user
        with service_errors():
            return connection_services.connection_create(
                actor=actor, secrets=secrets, **validated_data
            )

    def update(self, connection: Connection, validated_data: dict) -> Connection:
        # One service call: settings and secrets change together, under one version bump.
        with service_errors():
            return connection_services.connection_update(
                connection=connection, actor=self.context["request"].user, **validated_data
            )


class ConnectionTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()


class DiscoverySerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField(allow_blank=True)
    added = serializers.ListField(child=serializers.CharField())
    known = serializers.ListField(child=serializers.CharField())
    skipped = serializers.ListField(child=serializers.CharField())


# --- LLMs ---------------------------------------------------------------------------------------


# Approval has its own actions (and permission); the rest comes from discovery.
LLM_WRITABLE_FIELDS = frozenset(
    {
        "description",
        "input_price",
        "output_price",
        "cached_input_price",
        "context_window",
        "max_output_tokens",
    }
)


class LLMSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    connection = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    approved_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = LLM
        fields = [
            "id",
            "mesh_id",
            "connection",
            "name",
            "kind",
            "description",
            "approved",
            "approved_at",
            "approved_by",
            "input_price",
            "output_price",
            "cached_input_price",
            "context_window",
            "max_output_tokens",
            "catalog_tokens_per_second",
            "catalog_date",
            "measured_p50_ms",
            "measured_p95_ms",
            "measured_ttft_ms",
            "measured_tokens_per_second",
            "measured_at",
            "created_at",
        ]
        read_only_fields = [name for name in fields if name not in LLM_WRITABLE_FIELDS]

    def update(self, llm: LLM, validated_data: dict) -> LLM:
        with service_errors():
            return connection_services.llm_update(
                llm=llm, actor=self.context["request"].user, **validated_data
            )


class GroupRefSerializer(serializers.Serializer):
    """A group given by id or by name."""

    group = serializers.CharField(max_length=150)


class GrantSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    is_department = serializers.BooleanField()


# --- aliases ------------------------------------------------------------------------------------


class TargetsField(serializers.ListField):
    """Mesh ids in, mesh ids out, in the alias's order."""

    def to_representation(self, targets) -> list[str]:
        return [target.llm.mesh_id for target in targets.all()]


class AliasSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    targets = TargetsField(
        child=serializers.CharField(max_length=255),
        allow_empty=True,
        required=False,
        help_text="Ordered mesh ids (<connection-slug>/<model>): tried first to last.",
    )

    class Meta:
        model = Alias
        fields = ["id", "name", "description", "targets", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate_name(self, value: str) -> str:
        if "/" in value:
            raise serializers.ValidationError("An alias cannot contain '/' (mesh ids do).")
        return value

    def validate_targets(self, mesh_ids: list[str]) -> list[LLM]:
        if len(set(mesh_ids)) != len(mesh_ids):
            raise serializers.ValidationError("A model can appear only once in an alias.")
        llms = {llm.mesh_id: llm for llm in LLM.objects.filter(mesh_id__in=mesh_ids)}
        missing = [mesh_id for mesh_id in mesh_ids if mesh_id not in llms]
        if missing:
            raise serializers.ValidationError(f"Unknown models: {', '.join(missing)}.")
        return [llms[mesh_id] for mesh_id in mesh_ids]

    def create(self, validated_data: dict) -> Alias:
        with service_errors():
            return connection_services.alias_create(
                actor=self.context["request"].user,
                name=validated_data["name"],
                description=validated_data.get("description", ""),
                targets=validated_data.get("targets", []),
            )

    def update(self, alias: Alias, validated_data: dict) -> Alias:
        actor = self.context["request"].user
        targets = validated_data.pop("targets", None)
        with service_errors():
            if validated_data:
                alias = connection_services.alias_update(alias=alias, actor=actor, **validated_data)
            if targets is not None:
                connection_services.alias_set_targets(alias=alias, llms=targets, actor=actor)
        return alias


# --- API keys -----------------------------------------------------------------------------------


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
