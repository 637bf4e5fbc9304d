"""How a call ended: the record's `outcome`, one enum for the gateway and the trail.

Apart from the models so the hot path and its errors can name an outcome without
loading the models (a TextChoices needs no app registry).
"""

from __future__ import annotations

from django.db import models


class Outcome(models.TextChoices):
    OK = "ok", "OK"
    INVALID_REQUEST = "invalid_request", "Invalid request"
    UNAUTHORIZED = "unauthorized", "Unauthorized"
    FORBIDDEN = "forbidden", "Forbidden"
    NOT_FOUND = "not_found", "Model not found"
    BUDGET_EXCEEDED = "budget_exceeded", "Budget exceeded"
    RATE_LIMITED = "rate_limited", "Rate limited"
    UPSTREAM_ERROR = "upstream_error", "Upstream error"
    TIMEOUT = "timeout", "Timeout"
    CLIENT_DISCONNECTED = "client_disconnected", "Client disconnected"
    INTERNAL_ERROR = "internal_error", "Internal error"
    INTERRUPTED = "interrupted", "Interrupted (in progress or crashed)"
