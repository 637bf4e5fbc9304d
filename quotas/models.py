"""Cost control: spending quotas and rate limits (services in `quotas.services`).

The tables keep the names gateway gave them before quotas became an app of their own.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

QUOTA_MONEY = {"max_digits": 18, "decimal_places": 10, "default": Decimal("0")}


class Quota(models.Model):
    """A spending limit in USD over a period, for the calls its scope matches.

    An empty scope field matches every call. A catch-all quota matches only the
    calls no other active quota matches. Written through `quotas.services`.
    """

    class Period(models.TextChoices):
        MONTH = "month", "Calendar month (UTC)"
        WEEK = "week", "Calendar week (UTC, from Monday)"
        DAY = "day", "Calendar day (UTC)"
        ROLLING = "rolling", "Rolling N days"

    class Mode(models.TextChoices):
        BLOCK = "block", "Block calls past the amount"
        ALERT = "alert", "Alert only"

    name = models.CharField(max_length=100, unique=True, help_text="Shown to refused clients.")
    amount = models.DecimalField(
        max_digits=16, decimal_places=6, help_text="USD per period (at most 9,000,000)."
    )
    period = models.CharField(max_length=10, choices=Period.choices, default=Period.MONTH)
    rolling_days = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Window length for a rolling period."
    )
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.BLOCK)
    alert_thresholds = models.JSONField(
        default=list, blank=True, help_text="Percentages that send an e-mail, e.g. [50, 80, 100]."
    )
    is_catch_all = models.BooleanField(
        default=False, help_text="Matches only calls that no other active quota matches."
    )
    is_active = models.BooleanField(default=True)
    department = models.ForeignKey(
        "connections.Department", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    api_key = models.ForeignKey(
        "gateway.ApiKey", null=True, blank=True, on_delete=models.CASCADE, related_name="quotas"
    )
    purpose = models.CharField(max_length=200, blank=True)
    connection = models.ForeignKey(
        "connections.Connection", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    llm = models.ForeignKey(
        "connections.LLM", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "gateway_quota"  # created by gateway before quotas became an app
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_catch_all"],
                condition=models.Q(is_catch_all=True),
                name="quota_one_catch_all",
            )
        ]

    def __str__(self) -> str:
        return self.name


class QuotaCounter(models.Model):
    """The database's count of a quota's spend for one period (or one rolling bucket).

    Used when Redis is not configured or unreachable; rows are locked with
    SELECT ... FOR UPDATE while a call is admitted.
    """

    quota = models.ForeignKey(Quota, on_delete=models.CASCADE, related_name="counters")
    period_start = models.DateTimeField()
    spent = models.DecimalField(**QUOTA_MONEY)
    reserved = models.DecimalField(**QUOTA_MONEY)
    seeded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "gateway_quotacounter"  # created by gateway before quotas became an app
        constraints = [
            models.UniqueConstraint(fields=["quota", "period_start"], name="quota_counter_unique")
        ]

    def __str__(self) -> str:
        return f"{self.quota} @ {self.period_start:%Y-%m-%d %H:%M}"


class QuotaAlert(models.Model):
    """The sent-marker of one alert: a threshold e-mails once per quota and period."""

    quota = models.ForeignKey(Quota, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateTimeField()
    threshold = models.PositiveSmallIntegerField()
    spent = models.DecimalField(**QUOTA_MONEY)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "gateway_quotaalert"  # created by gateway before quotas became an app
        ordering = ["-sent_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["quota", "period_start", "threshold"], name="quota_alert_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.quota} {self.threshold}% ({self.period_start:%Y-%m-%d})"


class RateLimit(models.Model):
    """Requests and tokens per minute, counted per API key, per department or per LLM.

    Without a target it applies to each key (department, LLM) separately; with one,
    only to that one. A call counts against every rate limit that applies.
    """

    class Scope(models.TextChoices):
        API_KEY = "api_key", "Per API key"
        DEPARTMENT = "department", "Per department"
        LLM = "llm", "Per LLM"

    name = models.CharField(max_length=100, unique=True, help_text="Shown to refused clients.")
    scope = models.CharField(max_length=12, choices=Scope.choices)
    api_key = models.ForeignKey(
        "gateway.ApiKey",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="rate_limits",
    )
    department = models.ForeignKey(
        "connections.Department", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    llm = models.ForeignKey(
        "connections.LLM", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        db_table = "gateway_ratelimit"  # created by gateway before quotas became an app
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
