"""The gateway owns its key's last_used_at (issue 17): audit writes it as a batched write
the gateway registered, and knows neither the table nor the column."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit import batched
from audit.writer import AuditWriter
from gateway.lastused import KEY_TOUCHES, KeyTouches, apikey_touch

AUDIT = Path(__file__).resolve().parents[2] / "audit"
# The write path (a record still points at its key, lazily, for the trail's names).
WRITERS = ("writer", "loopwriter", "sqlitewriter", "statements", "encoders", "batched", "ops")


def test_audits_writers_know_neither_the_key_table_nor_its_column():
    for name in WRITERS:
        text = (AUDIT / f"{name}.py").read_text()
        assert "last_used_at" not in text, name
        assert "ApiKey" not in text and "gateway_apikey" not in text, name


def test_the_gateway_registers_its_touch_at_startup():
    assert isinstance(batched.registered()[KEY_TOUCHES], KeyTouches)


def test_touches_merge_to_the_latest_use_per_key_in_key_order():
    early = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    late = early + timedelta(minutes=5)
    rows = KeyTouches().rows([(7, early), (3, early), (7, late), (3, early)], "postgresql")
    assert rows == [[early, 3, early], [late, 7, late]]
    sqlite = KeyTouches().rows([(7, late)], "sqlite")
    assert sqlite == [["2026-12-01 10:05:00", 7, "2026-12-01 10:05:00"]]


@pytest.mark.django_db(transaction=True)
def test_an_older_touch_never_moves_last_used_at_back(cast):
    from gateway.keys import apikey_create
    from gateway.models import ApiKey

    api_key, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="order")
    newer = datetime.now(UTC).replace(microsecond=0)
    writer = AuditWriter()
    try:
        apikey_touch(api_key.pk, newer, writer=writer)
        asyncio.run(writer.flush())
        apikey_touch(api_key.pk, newer - timedelta(minutes=1), writer=writer)
        asyncio.run(writer.flush())
    finally:
        writer.stop()
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == newer
