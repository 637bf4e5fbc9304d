"""CSV export of the filtered call records list, streamed."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse
from guardian.shortcuts import assign_perm

from audit.export import COLUMNS, csv_lines
from audit.models import CallRecord
from audit.tests.make_records import create, record

EXPORT = "admin:audit_callrecord_export"


@pytest.fixture
def records(cast):
    return create(
        record(request_id="req-mkt-1", user=cast.alice, llm=cast.gpt4o, purpose="=HYPERLINK(1)"),
        record(request_id="req-mkt-2", user=cast.alice, llm=cast.gpt4o_mini),
        record(
            request_id="req-fin-1",
            user=cast.bob,
            llm=cast.gpt4o_mini,
            outcome=CallRecord.Outcome.TIMEOUT,
            status_code=504,
        ),
    )


def rows(response) -> list[dict[str, str]]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_the_export_is_a_streamed_csv_of_every_record_for_a_superuser(client, cast, records):
    client.force_login(cast.admin)
    response = client.get(reverse(EXPORT))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="call-records-')
    exported = rows(response)
    assert [row["request_id"] for row in exported] == ["req-mkt-1", "req-mkt-2", "req-fin-1"]
    first = exported[0]
    assert first["user"] == "alice"
    assert first["department"] == "Marketing"
    assert first["cost_center"] == "MKT-100"
    assert first["llm"] == "sim/gpt-4o"
    assert first["connection"] == "sim"
    assert first["outcome"] == "ok"
    assert first["started_at"] == records[0].started_at.isoformat()
    assert Decimal(first["cost_usd"]) == Decimal("0.0000198")
    assert exported[2]["status_code"] == "504"
    # No bodies leave through the export.
    assert "request_body" not in first and "hello" not in str(exported)


def test_the_export_follows_the_changelist_filters(client, cast, records):
    client.force_login(cast.admin)
    response = client.get(reverse(EXPORT), {"outcome__exact": "timeout"})
    assert [row["request_id"] for row in rows(response)] == ["req-fin-1"]
    response = client.get(reverse(EXPORT), {"department": cast.marketing.pk, "q": "req-mkt-2"})
    assert [row["request_id"] for row in rows(response)] == ["req-mkt-2"]


def test_a_department_auditor_exports_only_their_departments(client, cast, records):
    cast.alice.is_staff = True
    cast.alice.save()
    assign_perm("connections.view_department_audit", cast.alice, cast.marketing)
    client.force_login(cast.alice)
    exported = rows(client.get(reverse(EXPORT)))
    assert {row["request_id"] for row in exported} == {"req-mkt-1", "req-mkt-2"}
    exported = rows(client.get(reverse(EXPORT), {"department": cast.finance.pk}))
    assert exported == []


def test_staff_without_an_audit_grant_cannot_export(client, cast, records):
    cast.bob.is_staff = True
    cast.bob.save()
    client.force_login(cast.bob)
    assert client.get(reverse(EXPORT)).status_code == 403


def test_anonymous_users_are_sent_to_the_login_page(client, records):
    response = client.get(reverse(EXPORT))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_a_bad_filter_is_a_400(client, cast, records):
    client.force_login(cast.admin)
    assert client.get(reverse(EXPORT), {"started_to": "soon"}).status_code == 400


def test_caller_supplied_text_cannot_become_a_spreadsheet_formula(client, cast, records):
    client.force_login(cast.admin)
    exported = rows(client.get(reverse(EXPORT), {"q": "req-mkt-1"}))
    assert exported[0]["purpose"] == "'=HYPERLINK(1)"


def test_rows_are_written_in_chunks_not_all_at_once(cast):
    create(*(record(user=cast.bob) for _ in range(25)))
    chunks = list(csv_lines(CallRecord.objects.all(), chunk_size=10))
    # header, 10 rows, 10 rows, the last 5
    assert len(chunks) == 4
    assert chunks[0].startswith(",".join(name for name, _ in COLUMNS[:3]))
    assert [chunk.count("\n") for chunk in chunks] == [1, 10, 10, 5]


def test_under_asgi_the_export_streams_through_an_async_iterator(cast):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    create(*(record(user=cast.bob) for _ in range(5)))

    async def download() -> tuple[bool, bytes]:
        client = AsyncClient()
        await client.aforce_login(cast.admin)
        response = await client.get(reverse(EXPORT))
        assert response.status_code == 200
        return response.is_async, b"".join([chunk async for chunk in response.streaming_content])

    is_async, content = async_to_sync(download)()
    assert is_async
    assert len(list(csv.DictReader(io.StringIO(content.decode())))) == 5


def test_the_csv_bytes_are_exactly_specified_on_every_database(cast):
    # PostgreSQL writes this with COPY, SQLite through Python's csv module: same bytes.
    moment = dt.datetime(2026, 3, 4, 5, 6, 7, 8, tzinfo=dt.UTC)
    create(
        record(
            request_id="req-x",
            started_at=moment,
            user=cast.alice,
            llm=cast.gpt4o,
            purpose='=cmd|" /C calc"!A0',
            streamed=True,
            prompt_tokens=1,
            completion_tokens=2,
            cost=Decimal("0"),
            latency_ms=5,
            ttft_ms=None,
            client_ip="10.1.2.3",
            error_message='line1\nline2, "quoted"',
        ),
        record(
            request_id="req-y",
            started_at=moment + dt.timedelta(seconds=1),
            model_requested="",
            outcome=CallRecord.Outcome.UNAUTHORIZED,
            status_code=401,
            prompt_tokens=0,
            completion_tokens=0,
            cost=Decimal("0.0000198"),
            latency_ms=None,
        ),
    )
    text = "".join(csv_lines(CallRecord.objects.order_by("started_at")))
    header = ",".join(name for name, _ in COLUMNS)
    assert text == (
        f"{header}\n"
        "2026-03-04T05:06:07.000008+00:00,req-x,alice,Marketing,MKT-100,,"
        '"\'=cmd|"" /C calc""!A0",chat.completions,true,sim/gpt-4o,,sim/gpt-4o,sim,ok,200,'
        '1,2,0,false,0.0000000000,5,,10.1.2.3,"line1\nline2, ""quoted"""\n'
        "2026-03-04T05:06:08.000008+00:00,req-y,,,,,,chat.completions,false,,,,,"
        "unauthorized,401,0,0,0,false,0.0000198000,,,,\n"
    )
