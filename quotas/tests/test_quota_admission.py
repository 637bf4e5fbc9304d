"""Quotas at the admission layer, on real Redis and on the database path."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from audit.models import CallRecord
from quotas import Admission, QuotaExceeded, RateLimited, admission, error_response, runtime
from quotas.admission import worst_case_nanos
from quotas.models import QuotaAlert, QuotaCounter
from quotas.services import (
    quota_create,
    quota_status,
    quota_update,
    ratelimit_create,
)

from . import quota_support
from .quota_support import (
    GPT4O_PRICES,
    REDIS_TEST_URL,
    WORST_CASE,
    admit_sync,
    clear_redis,
    gather,
    principal_of,
    run,
    try_admit,
)

backend = quota_support.backend  # the fixture: each test on Redis and on the database
celery_eager = quota_support.celery_eager
MID_MAY = datetime(2026, 5, 15, 12, 0, tzinfo=UTC)


def settle(adm: Admission, cost: str, tokens: int = 0) -> None:
    run(adm.settle, Decimal(cost), tokens)


def record_call(principal, llm, cost: str, started_at: datetime) -> CallRecord:
    """What the gateway's audit writer leaves behind for a completed call."""
    return CallRecord.objects.create(
        request_id=f"req-{CallRecord.objects.count()}-{started_at.timestamp()}",
        started_at=started_at,
        user_id=principal.user_id,
        department_id=principal.department_id,
        purpose=principal.purpose,
        endpoint="chat.completions",
        llm=llm,
        connection_id=llm.connection_id,
        outcome="ok",
        cost=Decimal(cost),
    )


def test_fifty_parallel_calls_with_room_for_two_admit_exactly_two(cast, backend):
    quota = quota_create(
        name="Marketing monthly", amount=2 * WORST_CASE, period="month", department=cast.marketing
    )
    alice = principal_of(cast.alice, cast.marketing)

    results = run(gather, *[try_admit(alice, cast.gpt4o, now=MID_MAY) for _ in range(50)])

    admitted = [r for r in results if isinstance(r, Admission)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(admitted) == 2
    assert len(refused) == 48
    assert {r.quota_name for r in refused} == {"Marketing monthly"}
    assert run(try_admit, alice, cast.gpt4o_mini, prompt=1, output=1, now=MID_MAY).quota_name
    settle(admitted[0], "0.00041", 120)
    settle(admitted[1], "0.000305", 90)
    status = quota_status(quota, now=MID_MAY)
    assert status["spent"] == Decimal("0.000715")
    assert status["reserved"] == 0
    assert status["remaining"] == 2 * WORST_CASE - Decimal("0.000715")


def test_a_call_at_the_last_tenth_of_a_second_counts_in_that_month(cast, backend):
    quota = quota_create(
        name="Monthly", amount=2 * WORST_CASE, period="month", department=cast.marketing
    )
    alice = principal_of(cast.alice, cast.marketing)
    last_moment = datetime(2026, 1, 31, 23, 59, 59, 900_000, tzinfo=UTC)

    late = admit_sync(alice, cast.gpt4o, now=last_moment)
    settle(late, "0.002")

    assert quota_status(quota, now=last_moment)["spent"] == Decimal("0.002")
    refused = admit_sync(alice, cast.gpt4o, now=last_moment + timedelta(milliseconds=50))
    assert isinstance(refused, QuotaExceeded)
    assert refused.resets_at == datetime(2026, 2, 1, tzinfo=UTC)
    # February's counter starts at zero.
    february = admit_sync(alice, cast.gpt4o, now=datetime(2026, 2, 1, tzinfo=UTC))
    assert isinstance(february, Admission)
    status = quota_status(quota, now=datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC))
    assert status["spent"] == 0
    assert status["reserved"] == WORST_CASE


def test_a_rolling_window_forgets_spend_n_days_later(cast, backend):
    quota_create(
        name="Rolling week",
        amount=2 * WORST_CASE,
        period="rolling",
        rolling_days=7,
        department=cast.marketing,
    )
    alice = principal_of(cast.alice, cast.marketing)
    start = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    settle(admit_sync(alice, cast.gpt4o, now=start), "0.002")

    week_later = start + timedelta(days=7)
    still = admit_sync(alice, cast.gpt4o, now=week_later - timedelta(milliseconds=1))
    assert isinstance(still, QuotaExceeded)
    if backend == "redis":
        # Exactly seven days after the call started, its spend is forgotten.
        assert still.resets_at == week_later
        assert isinstance(admit_sync(alice, cast.gpt4o, now=week_later), Admission)
    else:
        # The database path counts per-minute buckets: forgotten within the minute after.
        assert isinstance(admit_sync(alice, cast.gpt4o, now=week_later), QuotaExceeded)
        later = week_later + timedelta(minutes=1)
        assert isinstance(admit_sync(alice, cast.gpt4o, now=later), Admission)


def test_redis_flushed_mid_month_the_next_call_still_sees_the_months_spend(cast, settings):
    settings.REDIS_URL = REDIS_TEST_URL
    clear_redis()
    runtime.start()
    monthly = quota_create(
        name="Monthly", amount=2 * WORST_CASE, period="month", department=cast.marketing
    )
    rolling = quota_create(
        name="Rolling", amount=Decimal("1"), period="rolling", rolling_days=3, user=cast.alice
    )
    alice = principal_of(cast.alice, cast.marketing)
    first = admit_sync(alice, cast.gpt4o, now=MID_MAY)
    settle(first, "0.002")
    record_call(alice, cast.gpt4o, "0.002", MID_MAY)
    # Spend of another month and of another department is not this counter's.
    record_call(alice, cast.gpt4o, "0.5", MID_MAY - timedelta(days=30))
    bob = principal_of(cast.bob, cast.finance)
    record_call(bob, cast.gpt4o_mini, "0.7", MID_MAY)

    clear_redis()  # Redis restarted empty
    runtime.start()

    refused = admit_sync(alice, cast.gpt4o, now=MID_MAY + timedelta(hours=1))
    assert isinstance(refused, QuotaExceeded)
    assert refused.quota_name == "Monthly"
    assert quota_status(monthly, now=MID_MAY + timedelta(hours=1))["spent"] == Decimal("0.002")
    # The rolling counter was rebuilt with its entries: they still leave on time.
    assert quota_status(rolling, now=MID_MAY + timedelta(hours=1))["spent"] == Decimal("0.002")
    three_days = MID_MAY + timedelta(days=3)
    assert quota_status(rolling, now=three_days)["spent"] == 0
    clear_redis()


def test_several_workers_rebuilding_at_once_count_the_spend_once(cast, settings):
    settings.REDIS_URL = REDIS_TEST_URL
    clear_redis()
    runtime.start()
    quota = quota_create(name="Monthly", amount=Decimal("1"), department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    record_call(alice, cast.gpt4o, "0.25", MID_MAY)

    results = run(gather, *[try_admit(alice, cast.gpt4o, now=MID_MAY) for _ in range(10)])

    assert all(isinstance(r, Admission) for r in results)
    status = quota_status(quota, now=MID_MAY)
    assert status["spent"] == Decimal("0.25")
    assert status["reserved"] == 10 * WORST_CASE
    clear_redis()


def test_a_quota_or_rate_limit_an_admin_changes_applies_at_the_next_call(
    cast, backend, settings, django_capture_on_commit_callbacks
):
    settings.MESHGATE_CACHE_CHECK_SECONDS = 0  # every call reads the quotas' version
    quota = quota_create(name="Monthly", amount=10 * WORST_CASE, department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    free = (Decimal("0"), Decimal("0"), Decimal("0"))
    for prices in (GPT4O_PRICES, GPT4O_PRICES, free, free):  # what the process keeps is warm
        assert isinstance(admit_sync(alice, cast.gpt4o, prices=prices, now=MID_MAY), Admission)

    with django_capture_on_commit_callbacks(execute=True):  # the change is committed
        quota_update(quota=quota, amount=3 * WORST_CASE)
    # Two worst cases are held: a third fits the new amount, a fourth does not.
    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), Admission)
    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), QuotaExceeded)

    with django_capture_on_commit_callbacks(execute=True):
        ratelimit_create(name="Department RPM", scope="department", requests_per_minute=1)
    assert isinstance(admit_sync(alice, cast.gpt4o, prices=free, now=MID_MAY), Admission)
    assert isinstance(admit_sync(alice, cast.gpt4o, prices=free, now=MID_MAY), RateLimited)


def test_every_key_the_scripts_write_expires(cast, settings):
    settings.REDIS_URL = REDIS_TEST_URL
    clear_redis()
    runtime.start()
    quota_create(name="Monthly", amount=Decimal("1"), department=cast.marketing)
    quota_create(
        name="Rolling", amount=Decimal("1"), period="rolling", rolling_days=3, user=cast.alice
    )
    ratelimit_create(name="Department RPM", scope="department", requests_per_minute=100)
    alice = principal_of(cast.alice, cast.marketing)
    settle(admit_sync(alice, cast.gpt4o, now=MID_MAY), "0.002", 50)
    # Keys deleted under a running process: the next call writes them afresh, before
    # the process's next housekeeping, and they expire all the same.
    clear_redis()
    settle(admit_sync(alice, cast.gpt4o, now=MID_MAY), "0.002", 50)

    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    keys = [*client.scan_iter("meshgate:quota:*"), *client.scan_iter("meshgate:rl:*")]
    assert len(keys) == 5  # a counter per quota, the rolling entries, a window and its tokens
    assert all(client.ttl(key) > 0 for key in keys)
    client.close()
    clear_redis()


def test_a_cancelled_call_releases_its_reservation_and_is_charged_its_partial_usage(cast, backend):
    quota = quota_create(name="Monthly", amount=2 * WORST_CASE, department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)

    async def streaming_call(started: asyncio.Event):
        adm = await admission.admit(
            principal=alice,
            llm_id=cast.gpt4o.pk,
            connection_id=cast.connection.pk,
            prices=(Decimal("2.50"), Decimal("10.00"), Decimal("1.25")),
            prompt_tokens_estimate=100,
            max_output_tokens=100,
            now=MID_MAY,
        )
        try:
            started.set()
            await asyncio.sleep(30)  # the stream, until the client goes away
        finally:
            await adm.settle(Decimal("0.0004"), 60)  # what was streamed before

    async def scenario():
        started = asyncio.Event()
        task = asyncio.create_task(streaming_call(started))
        await started.wait()
        in_flight = await sync_to_async(quota_status)(quota, now=MID_MAY)
        task.cancel()  # the client disconnects mid-stream
        with suppress(asyncio.CancelledError):
            await task
        return in_flight

    assert run(scenario)["reserved"] == WORST_CASE
    status = quota_status(quota, now=MID_MAY)
    assert status["reserved"] == 0
    assert status["spent"] == Decimal("0.0004")


def test_release_and_settle_are_idempotent(cast, backend):
    quota = quota_create(name="Monthly", amount=2 * WORST_CASE, department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    adm = admit_sync(alice, cast.gpt4o, now=MID_MAY)
    assert quota_status(quota, now=MID_MAY)["reserved"] == WORST_CASE
    settle(adm, "0.001")
    settle(adm, "0.001")
    run(adm.release)
    status = quota_status(quota, now=MID_MAY)
    assert (status["spent"], status["reserved"]) == (Decimal("0.001"), 0)
    failed = admit_sync(alice, cast.gpt4o, now=MID_MAY)
    run(failed.release)
    run(failed.release)
    status = quota_status(quota, now=MID_MAY)
    assert (status["spent"], status["reserved"]) == (Decimal("0.001"), 0)


def test_overlapping_quotas_both_count_and_the_first_to_run_out_blocks(cast, backend):
    department = quota_create(name="Marketing", amount=Decimal("0.01"), department=cast.marketing)
    personal = quota_create(name="Alice", amount=2 * WORST_CASE, user=cast.alice)
    alice = principal_of(cast.alice, cast.marketing)

    for _ in range(2):
        settle(admit_sync(alice, cast.gpt4o, now=MID_MAY), str(WORST_CASE))
    refused = admit_sync(alice, cast.gpt4o, now=MID_MAY)

    assert isinstance(refused, QuotaExceeded)
    assert refused.quota_name == "Alice"
    assert quota_status(department, now=MID_MAY)["spent"] == 2 * WORST_CASE
    assert quota_status(personal, now=MID_MAY)["spent"] == 2 * WORST_CASE
    # A refused call reserved nothing on the quota that still had room.
    assert quota_status(department, now=MID_MAY)["reserved"] == 0


def test_a_zero_priced_llm_is_never_blocked_by_a_spending_quota(cast, backend):
    quota_create(name="Tiny", amount=Decimal("0.000001"), department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), QuotaExceeded)
    free = (Decimal("0"), Decimal("0"), Decimal("0"))
    for _ in range(3):
        adm = admit_sync(alice, cast.gpt4o, prices=free, now=MID_MAY)
        assert isinstance(adm, Admission)
        run(adm.release)


def test_the_catch_all_quota_counts_only_calls_no_other_quota_matches(cast, backend):
    catch_all = quota_create(name="Everyone else", amount=2 * WORST_CASE, is_catch_all=True)
    marketing = quota_create(name="Marketing", amount=Decimal("1"), department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    bob = principal_of(cast.bob, cast.finance)

    for _ in range(3):
        settle(admit_sync(alice, cast.gpt4o, now=MID_MAY), "0.001")
    settle(admit_sync(bob, cast.gpt4o_mini, now=MID_MAY), "0.002")
    refused = admit_sync(bob, cast.gpt4o, now=MID_MAY)

    assert isinstance(refused, QuotaExceeded)
    assert refused.quota_name == "Everyone else"
    assert quota_status(catch_all, now=MID_MAY)["spent"] == Decimal("0.002")
    assert quota_status(marketing, now=MID_MAY)["spent"] == Decimal("0.003")


def test_an_alert_only_quota_counts_but_never_refuses(cast, backend):
    quota = quota_create(name="Watch", amount=WORST_CASE, mode="alert", department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    for _ in range(3):
        adm = admit_sync(alice, cast.gpt4o, now=MID_MAY)
        assert isinstance(adm, Admission)
        settle(adm, "0.001")
    assert quota_status(quota, now=MID_MAY)["spent"] == Decimal("0.003")


def test_thresholds_email_admins_and_contacts_once_per_threshold_and_period(
    cast, backend, mailoutbox, celery_eager
):
    cast.marketing.contacts = "cfo@example.com\nlead@example.com"
    cast.marketing.save()
    quota = quota_create(
        name="Marketing",
        amount=Decimal("0.01"),
        department=cast.marketing,
        alert_thresholds=[50, 80, 100],
    )
    alice = principal_of(cast.alice, cast.marketing)

    settle(admit_sync(alice, cast.gpt4o, now=MID_MAY), "0.0055")
    assert len(mailoutbox) == 1
    assert "50%" in mailoutbox[0].subject
    assert set(mailoutbox[0].to) == {"admin@example.com", "cfo@example.com", "lead@example.com"}
    settle(admit_sync(alice, cast.gpt4o, now=MID_MAY), "0.0001")
    assert len(mailoutbox) == 1  # still past 50 %, not yet 80 %
    runtime.start()  # another worker: the sent-marker, not memory, stops a resend
    settle(admit_sync(alice, cast.gpt4o, now=MID_MAY), "0.0001")
    assert len(mailoutbox) == 1
    settle(admit_sync(alice, cast.gpt4o, now=MID_MAY), "0.0025")
    assert len(mailoutbox) == 2
    assert "80%" in mailoutbox[1].subject
    assert set(QuotaAlert.objects.filter(quota=quota).values_list("threshold", flat=True)) == {
        50,
        80,
    }
    # The next month alerts again.
    june = datetime(2026, 6, 2, tzinfo=UTC)
    settle(admit_sync(alice, cast.gpt4o, now=june), "0.006")
    assert len(mailoutbox) == 3


def test_with_redis_unreachable_a_blocking_quota_fails_closed_and_others_proceed(cast, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    runtime.start()
    quota_create(name="Monthly", amount=2 * WORST_CASE, department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    bob = principal_of(cast.bob, cast.finance)  # no quota, no limit

    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), admission.QuotaUnavailable)
    assert not QuotaCounter.objects.exists()  # nothing counted in a ledger of its own
    assert admit_sync(bob, cast.gpt4o, now=MID_MAY).backend == "none"
    runtime.start()


def test_max_tokens_is_capped_by_what_the_llm_can_produce(cast, backend):
    cast.gpt4o.max_output_tokens = 50
    cast.gpt4o.save()
    quota = quota_create(name="Monthly", amount=Decimal("1"), department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    adm = admit_sync(alice, cast.gpt4o, output=100_000, now=MID_MAY)
    assert adm.max_output_tokens == 50
    expected = (100 * Decimal("2.50") + 50 * Decimal("10.00")) / 1_000_000
    assert adm.worst_case_cost == expected
    assert quota_status(quota, now=MID_MAY)["reserved"] == expected


def test_the_worst_case_is_priced_to_the_nano_dollar_rounded_up():
    gpt4o = (Decimal("2.50"), Decimal("10.00"), Decimal("1.25"))
    assert worst_case_nanos(gpt4o, 100, 100) == 1_250_000  # 0.00125 USD
    assert worst_case_nanos((Decimal("1.2345"), Decimal("0"), Decimal("0")), 1, 0) == 1235
    assert worst_case_nanos((Decimal("0.000001"), Decimal("0"), None), 1, 0) == 1
    # Cached input dearer than input: the worst case takes the dearer.
    assert worst_case_nanos((Decimal("1"), Decimal("2"), Decimal("3")), 1000, 10) == 3_020_000
    # Finer than the catalog's millionths (a price given in code): still exact.
    assert worst_case_nanos((Decimal("0.0000005"), Decimal("0"), Decimal("0")), 3, 0) == 1
    assert worst_case_nanos((Decimal("0.0000005"), Decimal("0"), Decimal("0")), 4000, 0) == 2


def test_a_refusal_tells_the_client_which_quota_and_when_it_resets():
    status, body, headers = error_response(
        QuotaExceeded("Marketing monthly", datetime(2099, 1, 1, tzinfo=UTC))
    )
    assert status == 429
    assert body["error"]["code"] == "quota_exceeded"
    assert "Marketing monthly" in body["error"]["message"]
    assert "2099-01-01T00:00:00Z" in body["error"]["message"]
    assert headers["x-should-retry"] == "false"
    assert int(headers["Retry-After"]) > 0


@pytest.mark.parametrize("period", ["day", "week"])
def test_calendar_days_and_weeks_start_at_utc_midnight(cast, backend, period):
    quota = quota_create(
        name="Short", amount=2 * WORST_CASE, period=period, department=cast.marketing
    )
    alice = principal_of(cast.alice, cast.marketing)
    sunday_night = datetime(2026, 5, 17, 23, 59, 59, 900_000, tzinfo=UTC)  # a Sunday
    settle(admit_sync(alice, cast.gpt4o, now=sunday_night), "0.002")
    assert isinstance(admit_sync(alice, cast.gpt4o, now=sunday_night), QuotaExceeded)
    monday = datetime(2026, 5, 18, tzinfo=UTC)
    assert isinstance(admit_sync(alice, cast.gpt4o, now=monday), Admission)
    assert quota_status(quota, now=monday)["spent"] == 0
