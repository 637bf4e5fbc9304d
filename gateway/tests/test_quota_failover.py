"""Redis going away and coming back: no spend forgotten, none counted twice."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from audit.models import CallRecord
from gateway.quotas import Admission, QuotaExceeded, admission
from gateway.quotas.services import quota_create, quota_status

from .quota_support import REDIS_TEST_URL, WORST_CASE, admit_sync, clear_redis, principal_of, run

MID_MAY = datetime(2026, 5, 15, 12, 0, tzinfo=UTC)
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def completed_call(principal, llm, cost: str, now: datetime, settings_url: str, settings):
    """One call through admission, settled and recorded as the gateway does."""
    settings.REDIS_URL = settings_url
    adm = admit_sync(principal, llm, now=now)
    assert isinstance(adm, Admission), adm
    CallRecord.objects.create(
        request_id=f"req-{adm.id}",
        started_at=now,
        user_id=principal.user_id,
        department_id=principal.department_id,
        endpoint="chat.completions",
        llm=llm,
        connection_id=llm.connection_id,
        outcome="ok",
        cost=Decimal(cost),
    )
    run(adm.settle, Decimal(cost), 10)
    return adm


def test_spend_counted_during_a_redis_outage_is_in_redis_when_it_comes_back(cast, settings):
    clear_redis()
    admission.reset_for_tests()
    quota = quota_create(name="Monthly", amount=Decimal("0.01"), department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)

    first = completed_call(alice, cast.gpt4o, "0.001", MID_MAY, REDIS_TEST_URL, settings)
    assert first.backend == "redis"
    # Redis goes away: the database counter is seeded from the audit trail.
    during = completed_call(alice, cast.gpt4o, "0.002", MID_MAY, UNREACHABLE, settings)
    assert during.backend == "database"
    settings.REDIS_URL = UNREACHABLE
    assert quota_status(quota, now=MID_MAY)["spent"] == Decimal("0.003")

    # Redis is back (after the retry delay): its stale counter is rebuilt, not trusted.
    admission._redis_down_until = 0.0
    back = completed_call(alice, cast.gpt4o, "0.004", MID_MAY, REDIS_TEST_URL, settings)
    assert back.backend == "redis"
    assert quota_status(quota, now=MID_MAY)["spent"] == Decimal("0.007")

    # Away again: the database counter, stale since Redis took over, is re-seeded.
    again = completed_call(alice, cast.gpt4o, "0.0005", MID_MAY, UNREACHABLE, settings)
    assert again.backend == "database"
    settings.REDIS_URL = UNREACHABLE
    assert quota_status(quota, now=MID_MAY)["spent"] == Decimal("0.0075")
    # 0.0075 spent + twice the 0.00125 worst case fills 0.01 exactly; a third does not fit.
    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), Admission)
    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), Admission)
    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), QuotaExceeded)
    assert quota_status(quota, now=MID_MAY)["reserved"] == 2 * WORST_CASE
    clear_redis()
    admission.reset_for_tests()


def test_a_reservation_nobody_settles_expires(cast, settings):
    settings.REDIS_URL = REDIS_TEST_URL
    clear_redis()
    admission.reset_for_tests()
    quota = quota_create(name="Monthly", amount=2 * WORST_CASE, department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    admit_sync(alice, cast.gpt4o, now=MID_MAY)  # a worker that crashes: never settled
    admit_sync(alice, cast.gpt4o, now=MID_MAY)
    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), QuotaExceeded)

    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    # Move the two deadlines into the past, as 15 minutes passing would.
    for key in client.scan_iter("meshgate:quota:*:c"):
        for name, value in client.hgetall(key).items():
            if name.startswith(b"r:"):
                client.hset(key, name, value.split(b"|")[0] + b"|1")
    client.close()
    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), Admission)
    assert quota_status(quota, now=MID_MAY)["reserved"] == WORST_CASE
    clear_redis()
    admission.reset_for_tests()
