"""CSV export of call records, streamed: a million rows leave without being held in memory.

On PostgreSQL the database writes the CSV itself (`COPY (SELECT ...) TO STDOUT`), which
streams row by row and is many times faster than building rows in Python. Elsewhere rows
are read with `values_list(...).iterator(chunk_size=...)` and written a chunk at a time.
Both give the same bytes. Under ASGI, Django drains a *sync* streaming iterator into a
list before sending it, so there the same chunks are handed out through an async iterator
that pulls each one in Django's request thread, on the request's database connection.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Iterable, Iterator
from decimal import Decimal
from itertools import islice

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    DateTimeField,
    F,
    Func,
    GenericIPAddressField,
    QuerySet,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Concat, NullIf
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

CHUNK_SIZE = 2000

# (CSV header, queryset path). Bodies are left out on purpose: the export is for
# accounting and investigation lists; a body is read on the record's own page.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("started_at", "started_at"),
    ("request_id", "request_id"),
    ("user", "user__username"),
    ("department", "department__group__name"),
    ("cost_center", "department__cost_center"),
    ("api_key_prefix", "api_key_prefix"),
    ("purpose", "purpose"),
    ("endpoint", "endpoint"),
    ("streamed", "streamed"),
    ("model_requested", "model_requested"),
    ("alias", "alias_name"),
    ("llm", "llm__mesh_id"),
    ("connection", "connection__slug"),
    ("outcome", "outcome"),
    ("status_code", "status_code"),
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("cached_tokens", "cached_tokens"),
    ("tokens_estimated", "tokens_estimated"),
    ("cost_usd", "cost"),
    ("latency_ms", "latency_ms"),
    ("ttft_ms", "ttft_ms"),
    ("client_ip", "client_ip"),
    ("error_message", "error_message"),
)

# A cell starting with one of these is a formula to a spreadsheet; the text fields
# (purpose, model name, error message) come from callers, so they are defused.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_REGEX = r"^[-=+@\t\r]"
_TIMESTAMP_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.USTZH:TZM'  # = isoformat(timespec="microseconds")


def _cell(value: object) -> object:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _header() -> str:
    return ",".join(header for header, _ in COLUMNS) + "\n"


def _python_lines(queryset: QuerySet, chunk_size: int) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = queryset.values_list(*(path for _, path in COLUMNS))
    for index, row in enumerate(rows.iterator(chunk_size=chunk_size), start=1):
        writer.writerow([_cell(value) for value in row])
        if index % chunk_size == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _sql_columns(queryset: QuerySet) -> QuerySet:
    """The export's columns computed by PostgreSQL, formatted exactly as `_cell` does."""
    columns = {}
    for index, (_header_name, path) in enumerate(COLUMNS):
        field = _field(queryset.model, path)
        if isinstance(field, DateTimeField):
            value = Func(F(path), Value(_TIMESTAMP_FORMAT), function="to_char")
        elif isinstance(field, GenericIPAddressField):
            value = Func(F(path), function="host")  # inet::text would add "/32"
        elif isinstance(field, BooleanField):
            value = Case(When(**{path: True}, then=Value("true")), default=Value("false"))
        elif isinstance(field, (CharField, TextField)):
            value = NullIf(
                Case(
                    When(**{f"{path}__regex": _FORMULA_REGEX}, then=Concat(Value("'"), F(path))),
                    default=F(path),
                    output_field=TextField(),
                ),
                Value(""),
            )
        else:
            value = F(path)
        columns[f"c{index}"] = Cast(value, TextField())
    return queryset.annotate(**columns).values_list(*columns)


def _field(model, path: str):
    for part in path.split("__")[:-1]:
        model = model._meta.get_field(part).related_model
    return model._meta.get_field(path.split("__")[-1])


def _copy_lines(queryset: QuerySet, chunk_size: int) -> Iterator[str]:
    """PostgreSQL writes the CSV itself (COPY ... TO STDOUT): tens of times faster than
    building rows in Python, and streamed just the same."""
    sql, params = _sql_columns(queryset).query.sql_with_params()
    buffer = bytearray()
    pieces = 0
    statement = f"COPY ({sql}) TO STDOUT (FORMAT CSV)"
    # Django's psycopg cursor binds client-side, so the parameters go into COPY's query.
    with (
        connections[queryset.db].cursor() as cursor,
        cursor.cursor.copy(statement, params) as copy,
    ):
        for data in copy:  # libpq hands COPY data over a row at a time
            buffer += data
            pieces += 1
            if pieces % chunk_size == 0:
                yield buffer.decode()
                buffer.clear()
    yield buffer.decode()


def csv_lines(queryset: QuerySet, *, chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
    """The header, then the CSV lines of every record of `queryset`, a chunk at a time."""
    yield _header()
    if connections[queryset.db].vendor == "postgresql":
        yield from _copy_lines(queryset, chunk_size)
    else:
        yield from _python_lines(queryset, chunk_size)


async def _async_lines(lines: Iterator[str], batch: int = 64) -> AsyncIterator[str]:
    def next_batch() -> list[str]:
        return list(islice(lines, batch))

    # thread_sensitive: every pull runs in the request's thread, on its DB connection.
    pull = sync_to_async(next_batch, thread_sensitive=True)
    try:
        while chunk := await pull():
            yield "".join(chunk)
    finally:
        await sync_to_async(lines.close, thread_sensitive=True)()


def csv_response(request: HttpRequest, queryset: QuerySet, *, name: str) -> StreamingHttpResponse:
    """A streamed `text/csv` download of `queryset` (sync or async as the server needs)."""
    lines = csv_lines(queryset)
    content: Iterable[str] | AsyncIterator[str] = (
        _async_lines(lines) if isinstance(request, ASGIRequest) else lines
    )
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response
