"""CSV export of call records, streamed: a million rows leave without being held in memory.

Rows are read with `values_list(...).iterator(chunk_size=...)` (a server-side cursor on
PostgreSQL) and written one chunk at a time. Under ASGI, Django drains a *sync* streaming
iterator into a list before sending it, so there the same rows are handed out through an
async iterator that pulls each chunk in Django's request thread.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator, Iterable, Iterator
from itertools import islice

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connections, transaction
from django.db.models import QuerySet
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


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def csv_lines(queryset: QuerySet, *, chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
    """The header, then one CSV line per record of `queryset`, read in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow([header for header, _ in COLUMNS])
    yield flush()
    rows = queryset.values_list(*(path for _, path in COLUMNS))
    connection = connections[queryset.db]
    # On PostgreSQL, a cursor outside a transaction is declared WITH HOLD, which makes the
    # server compute the whole result before the first row. Inside one, rows flow at once.
    # SQLite is left alone: its transactions here are IMMEDIATE and would block the writers.
    scope = (
        transaction.atomic(using=queryset.db)
        if connection.vendor == "postgresql"
        else contextlib.nullcontext()
    )
    with scope:
        for index, row in enumerate(rows.iterator(chunk_size=chunk_size), start=1):
            writer.writerow([_cell(value) for value in row])
            if index % chunk_size == 0:
                yield flush()
    yield flush()


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
