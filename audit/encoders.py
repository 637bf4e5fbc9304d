"""A record's values as each database reads them, encoded by column type without Django's
per-value preparation: PostgreSQL's text format (the loop writer's pipeline) and
SQLite's driver values (the SQLite loop writer)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db import models
from django.utils import timezone

from .statements import Statements, identity, json_bytes, text_without_nul


def _column_encoders(
    sql: Statements, encoder: Callable[[models.Field, Callable], Callable]
) -> tuple[list, list]:
    """(name, encoded default, encode) per inserted column; (name, encode) per completion
    column; `encoder(field, prepare)` picks each column's encoding. The record's defaults
    are constants: encoded once, not per call."""
    inserts = [
        (field.attname, encode(_constant_default(field)), encode)
        for field, encode in ((field, encoder(field, prepare)) for field, prepare in sql.insert)
    ]
    updates = [(field.attname, encoder(field, prepare)) for field, prepare in sql.update]
    return inserts, updates


def pg_encoders(sql: Statements) -> tuple[list, list]:
    """The column encoders for PostgreSQL's text format."""

    def encoder(field: models.Field, prepare: Callable[[Any], Any]) -> Callable[[Any], Any]:
        # Django's get_db_prep_save takes several microseconds a value (settings and
        # time-zone checks); these types are written as PostgreSQL reads them.
        if isinstance(field, models.JSONField):
            return _json
        if isinstance(field, models.DateTimeField):
            return _datetime
        if isinstance(field, models.DecimalField):
            return _decimal
        if prepare is identity:
            return pg_text
        return lambda value: pg_text(prepare(value))

    return _column_encoders(sql, encoder)


def _constant_default(field: models.Field) -> Any:
    """The field's default, which must be the same for every record: it is encoded once."""
    if field.has_default() and callable(field.default) and field.default not in (list, dict):
        raise TypeError(
            f"CallRecord.{field.name}: a default computed per record needs encoding per call"
        )
    return field.get_default()


def _json(value: Any) -> bytes | None:
    return None if value is None else json_bytes(value)


def _datetime(value: datetime | None) -> bytes | None:
    if value is None:
        return None
    if value.tzinfo is None:  # as Django reads a naive datetime: in the default time zone
        value = timezone.make_aware(value)
    return value.isoformat().encode()


def _decimal(value: Decimal | None) -> bytes | None:
    return None if value is None else str(value).encode()


def pg_text(value: Any) -> bytes | None:
    kind = type(value)
    if value is None:
        return None
    if kind is str:
        # PostgreSQL would cut the text at a NUL without a word: U+FFFD in its place.
        return text_without_nul(value).encode()
    if kind is bool:
        return b"t" if value else b"f"
    if kind is int:
        return b"%d" % value
    if isinstance(value, datetime | date):
        return value.isoformat().encode()
    if isinstance(value, Decimal):
        return str(value).encode()
    return pg_text(str(value))


def sqlite_encoders(sql: Statements) -> tuple[list, list]:
    """As `pg_encoders`, for SQLite: Django's preparers, but datetimes and decimals written
    directly as Django's SQLite backend writes them; defaults encoded once."""

    def encoder(field: models.Field, prepare: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if isinstance(field, models.DateTimeField):
            return sqlite_datetime
        if isinstance(field, models.DecimalField):
            return _sqlite_decimal
        return prepare

    return _column_encoders(sql, encoder)


def sqlite_datetime(value: datetime | None) -> str | None:
    """UTC, naive, as `str()` gives it: what Django's SQLite backend stores."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return str(value)


def _sqlite_decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
