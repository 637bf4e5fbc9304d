"""Rate limits: requests and tokens per minute, sliding window, on Redis and in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gateway.keys import apikey_create
from quotas import Admission, RateLimited, error_response, runtime
from quotas.services import ratelimit_create

from . import quota_support
from .quota_support import admit_sync, principal_of, run

backend = quota_support.backend  # the fixture: each test on Redis and in memory

T0 = datetime(2026, 5, 15, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def key_principal(cast, purpose: str = "tests"):
    api_key, _raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose=purpose)
    return principal_of(cast.alice, cast.marketing, api_key, purpose)


def test_requests_per_minute_per_key_slide_and_say_when_to_retry(cast, backend):
    ratelimit_create(name="Key RPM", scope="api_key", requests_per_minute=3)
    alice = key_principal(cast)

    for second in (0, 10, 20):
        assert isinstance(admit_sync(alice, cast.gpt4o_mini, now=at(second)), Admission)
    refused = admit_sync(alice, cast.gpt4o_mini, now=at(30))

    assert isinstance(refused, RateLimited)
    assert refused.limit_name == "Key RPM"
    assert refused.retry_after_seconds == 30  # the call at 0 s leaves the window at 60 s
    status, body, headers = error_response(refused)
    assert status == 429 and headers["Retry-After"] == "30"
    assert body["error"]["code"] == "rate_limited"
    # A refused call is not counted: at 60 s exactly the first call has left the window.
    assert isinstance(admit_sync(alice, cast.gpt4o_mini, now=at(59.9)), RateLimited)
    assert isinstance(admit_sync(alice, cast.gpt4o_mini, now=at(60)), Admission)
    # Another key of the same user has its own window.
    other = key_principal(cast, "other")
    assert isinstance(admit_sync(other, cast.gpt4o_mini, now=at(30)), Admission)


def test_tokens_per_minute_count_the_worst_case_then_the_actual_tokens(cast, backend):
    ratelimit_create(name="Department TPM", scope="department", tokens_per_minute=1000)
    alice = principal_of(cast.alice, cast.marketing)

    # Each call may use 100 prompt + 200 output tokens: three fit, a fourth does not.
    calls = [admit_sync(alice, cast.gpt4o_mini, output=200, now=at(i)) for i in range(3)]
    assert all(isinstance(call, Admission) for call in calls)
    refused = admit_sync(alice, cast.gpt4o_mini, output=200, now=at(5))
    assert isinstance(refused, RateLimited)
    assert refused.retry_after_seconds == 55
    # The first call used 50 tokens, not 300: the room comes back at once.
    run(calls[0].settle, Decimal("0.0001"), 50)
    assert isinstance(admit_sync(alice, cast.gpt4o_mini, output=200, now=at(6)), Admission)
    # Bob's department is counted apart.
    bob = principal_of(cast.bob, cast.finance)
    assert isinstance(admit_sync(bob, cast.gpt4o_mini, output=200, now=at(6)), Admission)


def test_a_limit_on_one_llm_leaves_the_others_alone(cast, backend):
    ratelimit_create(name="gpt-4o RPM", scope="llm", llm=cast.gpt4o, requests_per_minute=1)
    alice = principal_of(cast.alice, cast.marketing)

    assert isinstance(admit_sync(alice, cast.gpt4o, now=at(0)), Admission)
    assert isinstance(admit_sync(alice, cast.gpt4o, now=at(1)), RateLimited)
    assert isinstance(admit_sync(alice, cast.gpt4o_mini, now=at(1)), Admission)


def test_a_call_refused_by_a_quota_is_not_counted_by_the_rate_limit(cast, backend):
    from quotas.services import quota_create

    ratelimit_create(name="RPM", scope="department", requests_per_minute=2)
    quota_create(name="Tiny", amount=Decimal("0.000001"), department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    free = (Decimal("0"), Decimal("0"), Decimal("0"))

    for second in range(3):
        refused = admit_sync(alice, cast.gpt4o, now=at(second))
        assert refused.__class__.__name__ == "QuotaExceeded"
    assert isinstance(admit_sync(alice, cast.gpt4o, prices=free, now=at(4)), Admission)
    assert isinstance(admit_sync(alice, cast.gpt4o, prices=free, now=at(5)), Admission)
    assert isinstance(admit_sync(alice, cast.gpt4o, prices=free, now=at(6)), RateLimited)


def test_calls_older_than_a_minute_neither_count_nor_stay(cast, settings, monkeypatch):
    from quotas import admission

    settings.REDIS_URL = quota_support.REDIS_TEST_URL
    quota_support.clear_redis()
    runtime.start()
    ratelimit_create(name="Key RPM", scope="api_key", requests_per_minute=2)
    alice = key_principal(cast)
    # Between the scripts' housekeeping, calls that left the window are still stored:
    # they must not count.
    monkeypatch.setattr(admission, "REFRESH_SECONDS", 3600)
    for second in (0, 10, 70, 75):
        assert isinstance(admit_sync(alice, cast.gpt4o_mini, now=at(second)), Admission)
    refused = admit_sync(alice, cast.gpt4o_mini, now=at(76))
    assert isinstance(refused, RateLimited) and refused.retry_after_seconds == 54

    # With housekeeping on every call, the window keeps only the last minute.
    monkeypatch.setattr(admission, "REFRESH_SECONDS", 0)
    runtime.start()
    assert isinstance(admit_sync(alice, cast.gpt4o_mini, now=at(140)), Admission)
    import redis

    client = redis.Redis.from_url(quota_support.REDIS_TEST_URL)
    [window] = list(client.scan_iter("meshgate:rl:*:z"))
    [tokens] = list(client.scan_iter("meshgate:rl:*:t"))
    assert client.zcard(window) == 1
    assert int(client.get(tokens)) == 200  # 100 prompt + 100 output tokens
    client.close()
    quota_support.clear_redis()
