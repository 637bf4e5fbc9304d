"""Forms that create API keys: the user's own page and the admin's add page."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django import forms
from django.contrib.auth import get_user_model
from django.utils import timezone

from connections.models import Department

MAX_EXPIRY_DAYS = 3650


class DepartmentChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, department: Department) -> str:
        return f"{department.group.name} ({department.cost_center})"


class KeyExpiryForm(forms.Form):
    """Purpose and an optional expiry, in days or as a date (not both)."""

    purpose = forms.CharField(
        max_length=200,
        help_text="What the key is for, e.g. 'newsletter drafting script'. Shown in reports.",
    )
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        label="Expires in (days)",
        help_text="Leave both expiry fields empty for a key that does not expire.",
    )
    expires_on = forms.DateField(
        required=False,
        label="or expires on",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        days, date = cleaned.get("expires_in_days"), cleaned.get("expires_on")
        if days and date:
            raise forms.ValidationError("Give the expiry in days or as a date, not both.")
        if date and date <= timezone.localdate():
            self.add_error("expires_on", "The expiry date must be in the future.")
        return cleaned

    def expires_at(self) -> datetime | None:
        days, date = self.cleaned_data.get("expires_in_days"), self.cleaned_data.get("expires_on")
        if days:
            return timezone.now() + timedelta(days=days)
        if date:
            # The key works through the whole chosen day.
            return timezone.make_aware(datetime.combine(date, time.max))
        return None


class MyApiKeyForm(KeyExpiryForm):
    """A user creating a key for themselves: only their own departments are offered."""

    field_order = ["department", "purpose", "expires_in_days", "expires_on"]

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["department"] = DepartmentChoiceField(
            queryset=Department.objects.filter(group__user=user).select_related("group"),
            help_text="The department charged for this key's calls.",
        )
        self.order_fields(self.field_order)


class AdminApiKeyForm(KeyExpiryForm):
    """An admin creating a key for anyone; the department must be one of the owner's groups."""

    field_order = ["owner", "department", "purpose", "expires_in_days", "expires_on"]

    owner = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_active=True).order_by("username")
    )
    department = DepartmentChoiceField(queryset=Department.objects.select_related("group"))

    def clean(self) -> dict:
        cleaned = super().clean()
        owner, department = cleaned.get("owner"), cleaned.get("department")
        if owner and department and not owner.groups.filter(pk=department.group_id).exists():
            self.add_error("department", f"{owner} is not a member of {department}.")
        return cleaned
