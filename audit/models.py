"""What happened and who pays: one CallRecord per call to the gateway."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from .money import MoneyField
from .outcome import Outcome
from .querysets import CallRecordQuerySet, ChargebackReportQuerySet, UsageRollupQuerySet

MONEY = {"max_digits": 18, "decimal_places": 10, "default": Decimal("0")}
PRICE = {"max_digits": 12, "decimal_places": 6, "null": True, "blank": True}
TRAIL_REFERENCE = {
    "null": True,
    "blank": True,
    "on_delete": models.DO_NOTHING,
    "db_constraint": False,
    "db_index": False,
}


class CallRecord(models.Model):
    """One request to /v1/ (or one playground call), refused ones included.

    Written before the upstream call with outcome "interrupted" and completed
    when the call ends, so a crash leaves an interrupted record, never none.
    """

    Outcome = Outcome  # audit.outcome: the one enum of how a call ended

    request_id = models.CharField(max_length=64)  # unique with started_at: see Meta.constraints
    started_at = models.DateTimeField()
    first_token_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)

    # Who and what a record refers to are kept as ids without database constraints: the
    # trail outlives what it names (deleting a user, key, department, LLM or connection
    # changes no record, where SET_NULL would rewrite and blank millions of them), and the
    # gateway's two writes per call check no foreign keys. Each id is indexed through the
    # (id, started_at) indexes below, or its own (connection).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, related_name="+", **TRAIL_REFERENCE)
    # A lazy reference: audit does not import the gateway. The prefix stays if the key goes.
    api_key = models.ForeignKey("gateway.ApiKey", related_name="+", **TRAIL_REFERENCE)
    api_key_prefix = models.CharField(max_length=32, blank=True)
    department = models.ForeignKey("connections.Department", related_name="+", **TRAIL_REFERENCE)
    purpose = models.CharField(max_length=200, blank=True)

    endpoint = models.CharField(max_length=40)
    streamed = models.BooleanField(default=False)
    model_requested = models.CharField(max_length=255, blank=True)
    alias_name = models.CharField(max_length=100, blank=True)
    attempts = models.JSONField(default=list, blank=True)
    llm = models.ForeignKey("connections.LLM", related_name="+", **TRAIL_REFERENCE)
    connection = models.ForeignKey(
        "connections.Connection",
        related_name="+",
        **{**TRAIL_REFERENCE, "db_index": True},
    )

    outcome = models.CharField(max_length=24, choices=Outcome.choices, default=Outcome.INTERRUPTED)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error_message = models.TextField(blank=True)

    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    tokens_estimated = models.BooleanField(default=False)
    cost = models.DecimalField(**MONEY)
    input_price = models.DecimalField(**PRICE)
    output_price = models.DecimalField(**PRICE)
    cached_input_price = models.DecimalField(**PRICE)

    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    request_body = models.JSONField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)

    objects = CallRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["started_at"], name="call_started"),
            models.Index(fields=["department", "started_at"], name="call_department_started"),
            models.Index(fields=["user", "started_at"], name="call_user_started"),
            models.Index(fields=["llm", "started_at"], name="call_llm_started"),
            models.Index(fields=["api_key", "started_at"], name="call_key_started"),
        ]
        # A constraint, not unique=True: that would add a second (LIKE) index on PostgreSQL
        # that no query uses, maintained on every insert. With the start time because the
        # partitioned table (audit.partitions) can only enforce a key holding its partition
        # key; request ids are the gateway's own, one per call, so they stay unique alone.
        # Its index also serves lookups by request id.
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "started_at"], name="call_request_started_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model_requested} {self.outcome}"


# --- usage roll-ups and chargeback (services in audit.services) -----------------------------


class UsageRollup(models.Model):
    """Totals of one UTC day's calls for one group (department, user, LLM, purpose, key).

    Recomputed from CallRecord by `usage_rollup_day`, which replaces a day's rows as a whole:
    never incremented, so recomputing is idempotent. A key belongs to one user, department and
    purpose, so grouping by its prefix too adds few rows and lets chargeback break down by key.
    """

    day = models.DateField()
    # Ids plus the name at roll-up time, without database constraints, as CallRecord keeps
    # them: deleting what a row names changes no row, so spend stays where it was.
    department = models.ForeignKey("connections.Department", related_name="+", **TRAIL_REFERENCE)
    department_name = models.CharField(max_length=150, blank=True)
    cost_center = models.CharField(max_length=32, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, related_name="+", **TRAIL_REFERENCE)
    user_name = models.CharField(max_length=150, blank=True)
    llm = models.ForeignKey("connections.LLM", related_name="+", **TRAIL_REFERENCE)
    llm_name = models.CharField(max_length=255, blank=True)
    api_key = models.ForeignKey("gateway.ApiKey", related_name="+", **TRAIL_REFERENCE)
    purpose = models.CharField(max_length=200, blank=True)
    api_key_prefix = models.CharField(max_length=32, blank=True)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost = MoneyField(default=Decimal("0"))
    computed_at = models.DateTimeField()

    objects = UsageRollupQuerySet.as_manager()

    class Meta:
        ordering = ["-day"]
        indexes = [
            models.Index(fields=["day", "department"], name="rollup_day_department"),
            models.Index(fields=["department", "day"], name="rollup_department_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.department_id} {self.user_id} {self.llm_id} {self.purpose}"


class ChargebackReport(models.Model):
    """One department's statement for one month. Regenerating adds a version and makes it the
    current one; earlier versions stay, with their files, downloadable."""

    month = models.DateField(help_text="First day of the month the report covers.")
    # The department's id without a database constraint: a deleted department keeps its
    # reports (and gets new ones for months it has calls in), named by the snapshot below.
    department = models.ForeignKey(
        "connections.Department",
        related_name="chargeback_reports",
        **{**TRAIL_REFERENCE, "null": False, "blank": False},
    )
    version = models.PositiveIntegerField(default=1)
    is_current = models.BooleanField(default=True)
    # Snapshots: the report stays true if the department is renamed or re-coded later.
    department_name = models.CharField(max_length=200)
    cost_center = models.CharField(max_length=32)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    total_cost = MoneyField(default=Decimal("0"))
    breakdowns = models.JSONField(default=dict, blank=True)
    # Files kept in the database: versions are immutable and small, and downloads go through
    # permission checks, never through a public media URL.
    csv_file = models.BinaryField(editable=False)
    xlsx_file = models.BinaryField(editable=False)
    generated_at = models.DateTimeField()
    generated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The task run that built it: a redelivered task finds its reports and builds no more.
    generation_id = models.CharField(max_length=64, blank=True, db_index=True, editable=False)

    objects = ChargebackReportQuerySet.as_manager()

    class Meta:
        ordering = ["-month", "department_name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["month", "department", "version"], name="chargeback_unique_version"
            ),
            models.UniqueConstraint(
                fields=["month", "department"],
                condition=models.Q(is_current=True),
                name="chargeback_one_current",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.department_name} {self.month:%Y-%m} v{self.version}"

    def file_name(self, fmt: str) -> str:
        return f"chargeback-{self.month:%Y-%m}-{self.cost_center}-v{self.version}.{fmt}"


class DeletedName(models.Model):
    """The name of a user, LLM, API key or department when it was deleted: roll-ups, reports
    and pages show "name (deleted)" for the ids the trail still holds. Written by pre_delete
    signals (audit.trail), in the deleting transaction."""

    class Kind(models.TextChoices):
        USER = "user", "User"
        LLM = "llm", "LLM"
        API_KEY = "api_key", "API key"
        DEPARTMENT = "department", "Department"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    ref_id = models.BigIntegerField()
    name = models.CharField(max_length=255)
    code = models.CharField(max_length=32, blank=True, help_text="A department's cost center.")
    deleted_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "ref_id"], name="deleted_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.ref_id} {self.name}"
