"""Admin forms of the connections app.

Secret fields are write-only: a PasswordInput that never renders a value (not
even after a failed submit), with help text that says when the secret was set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth.models import Group, User

from . import services
from .models import LLM, Connection, Department

SECRET_LABELS = {
    "api_key": "API key",
    "aws_access_key_id": "AWS access key id",
    "aws_secret_access_key": "AWS secret access key",
    "aws_session_token": "AWS session token",
    "client_key": "Client certificate's private key (PEM)",
    "proxy_password": "Proxy password",
    "secret_headers": "Secret headers ('Name: value' lines)",
}
# Secrets typed as several lines (a PEM key, header lines).
MULTILINE_SECRETS = frozenset({"client_key", "secret_headers"})

KIND_HELP = {
    Connection.Kind.OPENAI: "OpenAI: an API key. Base URL optional "
    "(https://api.openai.com/v1 by default).",
    Connection.Kind.AZURE_OPENAI: "Azure OpenAI: base URL https://<resource>.openai.azure.com, "
    "the API version, an API key, and in options the deployments, e.g. "
    '{"deployments": [{"name": "my-gpt4o", "model": "gpt-4o"}]} (the model names the catalog '
    "prices).",
    Connection.Kind.BEDROCK: "AWS Bedrock: the region, and an access key id and secret access key "
    "(a session token for temporary credentials). Base URL only to override the endpoint.",
    Connection.Kind.OPENAI_COMPATIBLE: "OpenAI-compatible server (vLLM, TGI, Ollama): its base "
    "URL ending in /v1, e.g. http://vllm:8000/v1, and an API key if the server wants one. "
    "Private addresses need MESHGATE_ALLOW_PRIVATE_UPSTREAMS.",
    Connection.Kind.HUGGINGFACE_LOCAL: "Hugging Face local models: no secret; in options the "
    "models directory (Hub cache or save_pretrained folders) and optionally the device and limits, "
    'e.g. {"models_dir": "/srv/models", "device": "cpu", "max_concurrent_generations": 2, '
    '"max_loaded_models": 2, "idle_unload_seconds": 900}. Nothing is ever downloaded.',
}


class SecretTextarea(forms.Textarea):
    """A several-line secret: like PasswordInput(render_value=False), never shows a value."""

    def format_value(self, value: Any) -> None:
        return None


def _kind_help(kind: str) -> str:
    text = str(KIND_HELP[kind])
    if kind == Connection.Kind.HUGGINGFACE_LOCAL:
        from .providers.huggingface import deps

        text += " " + deps.installed_note()
    return text


def _all_secret_fields() -> list[str]:
    names: list[str] = []
    for fields in Connection.SECRET_FIELDS.values():
        names.extend(name for name in fields if name not in names)
    return names


def secret_status(connection: Connection, name: str) -> str:
    """'set on <date>' or 'not set': never the value, nor a masked form of it."""
    when = (connection.secrets_set_at or {}).get(name)
    if not when:
        return "not set"
    try:
        return f"set on {datetime.fromisoformat(when):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return "set"


def _kinds_using(name: str) -> str:
    return ", ".join(
        str(Connection.Kind(kind).label)
        for kind, fields in Connection.SECRET_FIELDS.items()
        if name in fields
    )


class ConnectionForm(forms.ModelForm):
    base_url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text=Connection._meta.get_field("base_url").help_text,
    )

    class Meta:
        model = Connection
        fields = list(services.CONNECTION_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        saved = self.instance.pk is not None
        # A saved connection shows its own kind's secrets and help; a new one, every kind's.
        names = self.instance.secret_field_names if saved else _all_secret_fields()
        for name in names:
            status = secret_status(self.instance, name) if saved else "not set"
            widget: forms.Widget = forms.PasswordInput(
                render_value=False, attrs={"autocomplete": "new-password"}
            )
            if name in MULTILINE_SECRETS:  # never rendered with a value either
                widget = SecretTextarea(attrs={"rows": 3, "autocomplete": "off"})
            self.fields[name] = forms.CharField(
                label=SECRET_LABELS.get(name, name),
                required=False,
                strip=True,
                widget=widget,
                help_text=f"{status[0].upper()}{status[1:]}. Type a new value to replace it; "
                f"leave empty to keep it. Used by: {_kinds_using(name)}.",
            )
            if saved and status != "not set":
                self.fields[f"clear_{name}"] = forms.BooleanField(
                    label=f"Remove the {SECRET_LABELS.get(name, name)}", required=False
                )
        helps = [self.instance.kind] if saved else list(KIND_HELP)
        self.fields["kind"].help_text = " ".join(_kind_help(kind) for kind in helps)
        if saved:
            self.fields["kind"].help_text += " Changing the kind drops secrets it does not take."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("kind") or self.instance.kind
        allowed = Connection.SECRET_FIELDS.get(kind, ())
        for name in self._secret_names():
            if cleaned.get(name) and name not in allowed:
                self.add_error(name, f"A {Connection.Kind(kind).label} connection has no {name}.")
        return cleaned

    def clean_extra_headers(self) -> dict[str, Any]:
        return self.cleaned_data.get("extra_headers") or {}

    def clean_secret_headers(self) -> str:
        text = self.cleaned_data.get("secret_headers") or ""
        from .providers.transport import secret_headers_error

        problem = secret_headers_error(text)
        if problem:
            raise forms.ValidationError(problem)
        return text

    def _secret_names(self) -> list[str]:
        return [name for name in _all_secret_fields() if name in self.fields]

    def secret_values(self) -> dict[str, str]:
        return {
            name: self.cleaned_data[name]
            for name in self._secret_names()
            if self.cleaned_data.get(name)
        }

    def secrets_to_clear(self) -> list[str]:
        return [name for name in self._secret_names() if self.cleaned_data.get(f"clear_{name}")]

    def model_changes(self) -> dict[str, Any]:
        return {
            name: self.cleaned_data[name]
            for name in services.CONNECTION_FIELDS
            if name in self.changed_data
        }

    def model_values(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in services.CONNECTION_FIELDS}


class LLMForm(forms.ModelForm):
    groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=FilteredSelectMultiple("groups", is_stacked=False),
        help_text="Groups whose members may call this model (django-guardian use_llm), "
        "once it is approved.",
    )

    class Meta:
        model = LLM
        fields = ["connection", "name", "approved", *services.LLM_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["groups"].initial = services.llm_groups(self.instance)

    def llm_changes(self) -> dict[str, Any]:
        return {
            name: self.cleaned_data[name]
            for name in services.LLM_FIELDS
            if name in self.changed_data
        }


class GroupPickForm(forms.Form):
    groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"), widget=forms.CheckboxSelectMultiple
    )


def _pick(queryset, name: str) -> forms.ModelMultipleChoiceField:
    return forms.ModelMultipleChoiceField(
        queryset=queryset, required=False, widget=FilteredSelectMultiple(name, is_stacked=False)
    )


_PEOPLE = User.objects.filter(is_active=True).order_by("username")
_GROUPS = Group.objects.order_by("name")
# The access panel's fields; `report_*` and `audit_*` are per-department object permissions.
ACCESS_FIELDS = ("members", "llms", "report_users", "report_groups", "audit_users", "audit_groups")


class DepartmentForm(forms.ModelForm):
    """A department, and on its change page its access panel: members, models granted to
    it, and who may view its reports and its audit records (this department only)."""

    name = forms.CharField(max_length=150, help_text="The Django group's name.")
    members = _pick(_PEOPLE, "members")
    llms = _pick(LLM.objects.select_related("connection").order_by("mesh_id"), "models")
    report_users = _pick(_PEOPLE, "people")
    report_groups = _pick(_GROUPS, "groups")
    audit_users = _pick(_PEOPLE, "people")
    audit_groups = _pick(_GROUPS, "groups")

    class Meta:
        model = Department
        fields = ["name", "cost_center", "contacts"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        department = self.instance
        if not department.pk:
            for field_name in ACCESS_FIELDS:  # the panel is on the change page
                self.fields.pop(field_name)
            return
        name = department.group.name
        self.fields["name"].initial = name
        texts = {
            "members": (
                "Members",
                f"People in {name}: they may call the models granted to it and charge it.",
            ),
            "llms": ("Models granted", f"Models {name}'s members may call, once approved."),
        }
        for access, label in (("report", "reports"), ("audit", "audit records")):
            texts[f"{access}_users"] = (
                f"May view {name}'s {label}: people",
                f"Only {name}'s {label}, no other department's.",
            )
            texts[f"{access}_groups"] = (
                f"May view {name}'s {label}: groups",
                f"Every member of these groups may view {name}'s {label}.",
            )
        for field_name, (label, help_text) in texts.items():
            if field_name in self.fields:
                self.fields[field_name].label = label
                self.fields[field_name].help_text = help_text
        initial = {
            "members": services.department_members(department),
            "llms": services.department_llms(department),
        }
        for access, key in (("report", "reports"), ("audit", "audit")):
            users, groups = services.department_access_holders(department=department, access=key)
            initial[f"{access}_users"], initial[f"{access}_groups"] = users, groups
        for field_name, value in initial.items():
            if field_name in self.fields:
                self.fields[field_name].initial = value

    def access_changes(self) -> dict[str, Any]:
        """The access panel as `department_access_set` takes it ({} when it was not shown)."""
        data = self.cleaned_data
        if not all(name in self.fields for name in ACCESS_FIELDS):
            return {}
        return {
            "members": data["members"],
            "llms": data["llms"],
            "viewers": {
                "reports": (data["report_users"], data["report_groups"]),
                "audit": (data["audit_users"], data["audit_groups"]),
            },
        }

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        taken = Group.objects.filter(name=name)
        if self.instance.pk:
            taken = taken.exclude(pk=self.instance.group_id)
        if taken.filter(department__isnull=False).exists():
            raise forms.ValidationError("Another department already has this name.")
        return name
