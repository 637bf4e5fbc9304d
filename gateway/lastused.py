"""An API key's `last_used_at`: the gateway's column, written off the request path.

Authentication notes a key's use at most once a minute per key (`gateway.auth`) and
hands it to the audit writer as a batched write registered here: the writer runs
this statement with its next batch, one UPDATE per key and batch, for its latest use.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from django.db import connection

from audit import batched
from audit.writer import AuditWriter
from audit.writer import writer as audit_writer

KEY_TOUCHES = "gateway.apikey.last_used_at"


class KeyTouches:
    """UPDATE gateway_apikey SET last_used_at, only ever forward in time (writes may land
    out of order), and no row rewritten when the time is not newer. A plain UPDATE, not
    .save(): a save fires the signal that flushes every worker's keys."""

    def statement(self, vendor: str) -> str:
        from .models import ApiKey

        meta = ApiKey._meta
        quote = connection.ops.quote_name
        column = quote(meta.get_field("last_used_at").column)
        # Only the model's own table and column names are interpolated; values are parameters.
        return (
            f"UPDATE {quote(meta.db_table)} SET {column} = %s "  # noqa: S608
            f"WHERE {quote(meta.pk.column)} = %s AND ({column} IS NULL OR {column} < %s)"
        )

    def rows(self, items: Sequence[tuple[int, datetime]], vendor: str) -> list[list[object]]:
        """One row per key, its latest use, in key order: two writers touching the same keys
        then lock their rows in the same order and cannot deadlock."""
        latest: dict[int, datetime] = {}
        for key_id, when in items:
            latest[key_id] = max(when, latest.get(key_id, when))
        rows: list[list[object]] = []
        for key_id, when in sorted(latest.items()):
            value: object = when
            if vendor == "sqlite":  # as Django's SQLite backend stores it: naive UTC text
                value = str(when.astimezone(UTC).replace(tzinfo=None))
            rows.append([value, key_id, value])
        return rows


def register() -> None:
    batched.register(KEY_TOUCHES, KeyTouches())


def apikey_touch(api_key_id: int, when: datetime, writer: AuditWriter = audit_writer) -> None:
    """Record a key's use, fire and forget: written with the audit writer's next batch."""
    writer.later(KEY_TOUCHES, (api_key_id, when))
