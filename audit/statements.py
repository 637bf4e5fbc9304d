"""The audit record's SQL and the adaptation of its values, built once per database vendor.

What a record is, in database terms: the columns an opening inserts, the
COMPLETION_FIELDS a completion sets, and how each value is given to the driver.
The writers (`audit.writer`'s thread, `audit.loopwriter` on the loop) share them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import connection, models

from .fields import COMPLETION_FIELDS
from .models import CallRecord
from .ops import Op

# Field types whose database value is the Python value itself (ints, strings, booleans):
# Django's get_db_prep_save would only call through several layers to return it unchanged.
_AS_IS = (
    models.IntegerField,  # and its small, big and positive kinds
    models.CharField,
    models.TextField,
    models.BooleanField,
)


@dataclass
class Statements:
    """The writer's SQL and value adapters for one database vendor, built once."""

    insert: list[tuple[models.Field, Any]]  # (field, adapter) per inserted column
    update: list[tuple[models.Field, Any]]  # ... per COMPLETION_FIELDS column
    insert_head: str  # INSERT INTO ... (columns) VALUES
    insert_row: str  # (%s, ...)
    insert_returning: str
    insert_resumed_sql: str  # one row; on its request id's conflict, the existing row's id
    update_sql: str

    def insert_sql(self, rows: int) -> str:
        return f"{self.insert_head}{', '.join([self.insert_row] * rows)} {self.insert_returning}"


_statements_by_vendor: dict[str, Statements] = {}


def statements(vendor: str) -> Statements:
    found = _statements_by_vendor.get(vendor)
    if found is None:
        found = _statements_by_vendor[vendor] = _build_statements(vendor)
    return found


def _build_statements(vendor: str) -> Statements:
    meta = CallRecord._meta
    quote = connection.ops.quote_name
    insert = [(f, _preparer(f, vendor)) for f in meta.concrete_fields if not f.primary_key]
    update = [(f, _preparer(f, vendor)) for f in map(meta.get_field, COMPLETION_FIELDS)]
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    columns = ", ".join(quote(field.column) for field, _ in insert)
    assignments = ", ".join(f"{quote(field.column)} = %s" for field, _ in update)
    # Only the models' own table and column names are interpolated; every value is a parameter.
    insert_head = f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608
    insert_row = "(" + ", ".join(["%s"] * len(insert)) + ")"
    insert_returning = f"RETURNING {pk}, {quote('request_id')}"
    return Statements(
        insert=insert,
        update=update,
        insert_head=insert_head,
        insert_row=insert_row,
        insert_returning=insert_returning,
        # Request ids are the gateway's own and unique per call: a conflict on one (with
        # its start time, the unique key a partitioned table can hold; a resumed insert
        # sends the same one) is this call's record, committed before its connection
        # broke. The no-op update makes RETURNING give that row (DO NOTHING would return
        # none).
        insert_resumed_sql=(
            f"{insert_head}{insert_row} ON CONFLICT ({quote('request_id')}, "
            f"{quote('started_at')}) DO UPDATE SET "
            f"{quote('request_id')} = EXCLUDED.{quote('request_id')} {insert_returning}"
        ),
        update_sql=f"UPDATE {table} SET {assignments} WHERE {pk} = %s",  # noqa: S608
    )


def _pg_json_text(value: Any) -> str:
    return json_bytes(value).decode()


def _json_text(value: Any) -> str:
    """JSON as Django's JSONField would store it, with orjson (several times faster)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def json_bytes(value: Any) -> bytes:
    """JSON for PostgreSQL's jsonb, which cannot hold a NUL character (\\u0000): a call
    whose prompt holds one is still recorded, with U+FFFD in its place."""
    try:
        dumped = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        dumped = json.dumps(value).encode()
    if b"\\u0000" in dumped:
        return json_bytes(_without_nul(value))
    return dumped


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    return value


def text_without_nul(value: Any) -> Any:
    """PostgreSQL's text cannot hold NUL either: U+FFFD in its place."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _preparer(field: models.Field, vendor: str):
    """A function from a Python value to the value the driver is given for `field`."""
    if isinstance(field, models.JSONField) and field.encoder is None:
        if vendor == "postgresql":
            from psycopg.types.json import Jsonb

            return lambda value: None if value is None else Jsonb(value, dumps=_pg_json_text)
        return lambda value: None if value is None else _json_text(value)
    if isinstance(field, models.CharField | models.TextField) and vendor == "postgresql":
        return text_without_nul
    if isinstance(field, _AS_IS) and not field.is_relation:
        return identity
    if isinstance(field, models.GenericIPAddressField):
        # An IPv4 address is stored as given; IPv6 ones are normalized by Django.
        def prepare_ip(value: Any) -> Any:
            if value is None or (isinstance(value, str) and ":" not in value):
                return value or None
            return field.get_db_prep_save(value, connection)

        return prepare_ip
    if isinstance(field, models.ForeignKey) and isinstance(field.target_field, models.AutoField):
        return identity
    return lambda value: field.get_db_prep_save(value, connection)


def identity(value: Any) -> Any:
    return value


def insert_rows(statements: Statements, inserts: list[Op]) -> list[list[Any]]:
    rows = []
    for op in inserts:
        values = op.fields
        rows.append(
            [
                prepare(values[field.attname] if field.attname in values else field.get_default())
                for field, prepare in statements.insert
            ]
        )
    return rows


def update_rows(statements: Statements, updates: list[Op]) -> list[list[Any]]:
    rows = []
    for op in updates:
        values = op.fields
        row = [prepare(values.get(field.attname)) for field, prepare in statements.update]
        row.append(op.pk)
        rows.append(row)
    return rows
