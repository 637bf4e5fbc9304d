"""Serializers of the connections' management API. Writes call the services; nothing here saves
a model.

Every writable serializer refuses fields it does not accept (read-only or unknown)
with a 400 instead of ignoring them: a client that sends `approved: true` or
`is_staff: true` learns it did not work, and nothing changes.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from meshsite.lib.drf import StrictFieldsMixin, service_errors

from . import services as connection_services
from .models import LLM, Alias, Connection
from .services import CONNECTION_FIELDS
from .validators import validate_base_url

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
