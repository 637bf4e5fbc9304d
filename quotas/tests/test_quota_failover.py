"""Redis going away and coming back: no spend forgotten, none counted twice."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from audit.models import CallRecord
from quotas import Admission, QuotaExceeded, runtime
from quotas.ledger import QuotaUnavailable
from quotas.services import quota_create, quota_status

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


def test_while_redis_is_unreachable_a_blocking_quota_refuses_instead_of_counting_alone(
    cast, settings
):
    """One worker's Redis is away: it must not admit through a ledger of its own that the
    workers still on Redis cannot see (overspend); it refuses until Redis is back."""
    clear_redis()
    runtime.start()
    quota = quota_create(name="Monthly", amount=Decimal("0.01"), department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)

    first = completed_call(alice, cast.gpt4o, "0.001", MID_MAY, REDIS_TEST_URL, settings)
    assert first.backend == "redis"
    settings.REDIS_URL = UNREACHABLE
    assert isinstance(admit_sync(alice, cast.gpt4o, now=MID_MAY), QuotaUnavailable)
    assert quota_status(quota, now=MID_MAY)["reserved"] == 0

    # Redis is back (after the retry delay): calls are admitted and counted there again.
    runtime.current.redis_down_until = 0.0
    back = completed_call(alice, cast.gpt4o, "0.004", MID_MAY, REDIS_TEST_URL, settings)
    assert back.backend == "redis"
    assert quota_status(quota, now=MID_MAY)["spent"] == Decimal("0.005")
    clear_redis()
    runtime.start()


def test_a_reservation_nobody_settles_expires(cast, settings):
    settings.REDIS_URL = REDIS_TEST_URL
    clear_redis()
    runtime.start()
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
    runtime.start()
