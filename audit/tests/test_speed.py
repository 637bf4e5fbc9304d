"""Measured speed per LLM, computed by the database from generated call records."""

from __future__ import annotations

import datetime as dt
import random
import statistics

import pytest
from django.utils import timezone

from audit.models import CallRecord
from audit.speed import llm_speed_refresh, measured_speeds, percentile
from audit.tasks_audit import refresh_measured_speed
from audit.tests.make_records import create, record
from connections import versioning
from connections.models import LLM

NOW = timezone.now().replace(microsecond=0)


def at(hours_ago: float) -> dt.datetime:
    return NOW - dt.timedelta(hours=hours_ago)


@pytest.fixture
def trail(cast):
    """gpt-4o: 101 ok calls in the window (61 streamed), plus calls that must not count."""
    rng = random.Random(4)
    ok = []
    for i in range(101):
        latency = rng.randint(200, 5000)
        streamed = i % 5 != 0 and i < 76
        ok.append(
            record(
                llm=cast.gpt4o,
                user=cast.alice,
                started_at=at(rng.uniform(0.1, 160)),
                latency_ms=latency,
                ttft_ms=rng.randint(50, latency - 1) if streamed else None,
                streamed=streamed,
                completion_tokens=rng.randint(1, 800),
            )
        )
    noise = [
        # failures, however slow, are not the model's speed
        record(
            llm=cast.gpt4o,
            started_at=at(1),
            latency_ms=90_000,
            outcome=CallRecord.Outcome.TIMEOUT,
        ),
        record(
            llm=cast.gpt4o,
            started_at=at(2),
            latency_ms=60_000,
            outcome=CallRecord.Outcome.UPSTREAM_ERROR,
        ),
        # older than 7 days
        record(llm=cast.gpt4o, started_at=at(24 * 7 + 1), latency_ms=99_000),
        # still in progress: no latency yet
        record(llm=cast.gpt4o, started_at=at(0.01), latency_ms=None, outcome="interrupted"),
    ]
    # Embeddings produce no output tokens: a latency, but no tokens per second.
    embeddings = [
        record(llm=cast.embedding, started_at=at(3), latency_ms=ms, completion_tokens=0)
        for ms in (40, 60, 80, 100)
    ]
    create(*ok, *noise, *embeddings)
    return ok


def generation_ms(r: CallRecord) -> int:
    return r.latency_ms - r.ttft_ms if r.streamed and r.ttft_ms is not None else r.latency_ms


def test_it_measures_percentiles_ttft_and_output_speed_from_ok_calls_in_the_window(cast, trail):
    speeds = measured_speeds(since=NOW - dt.timedelta(days=7), until=NOW)
    latencies = [r.latency_ms for r in trail]
    speed = speeds[cast.gpt4o.pk]
    assert speed.calls == 101
    assert speed.p50_ms == round(statistics.median(latencies))
    assert speed.p95_ms == round(statistics.quantiles(latencies, n=100, method="inclusive")[94])
    assert speed.ttft_ms == round(statistics.median([r.ttft_ms for r in trail if r.streamed]))
    tokens = sum(r.completion_tokens for r in trail)
    assert speed.tokens_per_second == round(tokens * 1000 / sum(generation_ms(r) for r in trail), 2)


def test_an_llm_without_output_tokens_has_latency_but_no_tokens_per_second(cast, trail):
    speed = measured_speeds(since=NOW - dt.timedelta(days=7), until=NOW)[cast.embedding.pk]
    assert (speed.calls, speed.p50_ms, speed.p95_ms) == (4, 70, 97)
    assert speed.ttft_ms is None
    assert speed.tokens_per_second is None


def test_the_refresh_stores_the_figures_on_each_llm_and_clears_stale_ones(
    cast, trail, django_capture_on_commit_callbacks
):
    LLM.objects.filter(pk=cast.gpt4o_mini.pk).update(measured_p50_ms=1234, measured_p95_ms=5678)
    before = versioning.current(versioning.CATALOG)
    with django_capture_on_commit_callbacks(execute=True):
        assert llm_speed_refresh(now=NOW) == 2
    gpt4o = LLM.objects.get(pk=cast.gpt4o.pk)
    latencies = [r.latency_ms for r in trail]
    assert gpt4o.measured_p50_ms == round(statistics.median(latencies))
    assert gpt4o.measured_p95_ms is not None and gpt4o.measured_p95_ms > gpt4o.measured_p50_ms
    assert gpt4o.measured_ttft_ms is not None
    assert gpt4o.measured_tokens_per_second > 0
    assert gpt4o.measured_at == NOW
    mini = LLM.objects.get(pk=cast.gpt4o_mini.pk)
    assert (mini.measured_p50_ms, mini.measured_p95_ms, mini.measured_at) == (None, None, None)
    # In-memory catalogs (the /v1/models list) are told to reload.
    assert versioning.current(versioning.CATALOG) != before


def test_the_task_is_idempotent(cast, trail):
    refresh_measured_speed.apply().get()
    first = LLM.objects.values_list("measured_p50_ms", "measured_p95_ms", "measured_ttft_ms")
    first = sorted(first, key=str)
    refresh_measured_speed.apply().get()
    again = sorted(
        LLM.objects.values_list("measured_p50_ms", "measured_p95_ms", "measured_ttft_ms"), key=str
    )
    assert first == again
    assert LLM.objects.get(pk=cast.gpt4o.pk).measured_p50_ms is not None


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([7], 0.95, 7.0),
        ([10, 20], 0.5, 15.0),
        ([10, 20, 30, 40], 0.95, 38.5),
        ([40, 10, 30, 20, 50], 0.5, 30.0),
        ([], 0.5, None),
    ],
)
def test_the_portable_percentile_interpolates_like_percentile_cont(
    cast, values, fraction, expected
):
    create(*(record(llm=cast.gpt4o, latency_ms=v) for v in values))
    result = percentile(CallRecord.objects.all(), "latency_ms", fraction)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_the_portable_computation_agrees_with_the_database_native_one(cast, trail):
    # On PostgreSQL this compares percentile_cont with the LIMIT/OFFSET reads.
    from audit.speed import _measured, _speeds_portable

    since = NOW - dt.timedelta(days=7)
    assert _speeds_portable(_measured(since=since, until=NOW)) == measured_speeds(
        since=since, until=NOW
    )
