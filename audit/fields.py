"""The record's completion fields, the part of the audit façade (`audit.record`) the writers
read too: a leaf, so the writers do not import the façade that calls them."""

from __future__ import annotations

# Fields a completion sets: every completion sets all of them, so one bulk_update covers a
# batch (the writer's prepared statements list them in this order).
COMPLETION_FIELDS = (
    "outcome",
    "status_code",
    "error_message",
    "first_token_at",
    "ended_at",
    "latency_ms",
    "ttft_ms",
    "attempts",
    "llm_id",
    "connection_id",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "tokens_estimated",
    "cost",
    "input_price",
    "output_price",
    "cached_input_price",
    "response_body",
)
