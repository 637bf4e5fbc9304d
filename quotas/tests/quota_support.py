"""Shared pieces of the quota and rate-limit tests (not a test module)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync

from conftest import redis_url_for_tests
from quotas import admission, runtime

# The suite's Redis when it has one, else this engineer's own db number.
REDIS_TEST_URL = os.environ.get("REDIS_URL") or redis_url_for_tests(11)
GPT4O_PRICES = (Decimal("2.50"), Decimal("10.00"), Decimal("1.25"))
# 100 prompt tokens at 2.50 + 100 output tokens at 10.00 per million: 0.00125 USD.
WORST_CASE = Decimal("0.00125")


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    department_id: int | None
    api_key_id: int | None
    api_key_prefix: str
    purpose: str


def principal_of(user, department, api_key=None, purpose: str = "tests") -> Principal:
    return Principal(
        user_id=user.pk,
        username=user.username,
        department_id=department.pk if department else None,
        api_key_id=api_key.pk if api_key else None,
        api_key_prefix=api_key.prefix if api_key else "",
        purpose=purpose,
    )


def clear_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        for pattern in ("meshgate:quota:*", "meshgate:rl:*"):
            keys = list(client.scan_iter(pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["redis", "database"])
def backend(request, settings):
    """Each test runs on real Redis and on the database path (no REDIS_URL)."""
    settings.REDIS_URL = REDIS_TEST_URL if request.param == "redis" else None
    if request.param == "redis":
        clear_redis()
    runtime.start()
    yield request.param
    if request.param == "redis":
        clear_redis()
    runtime.start()


@pytest.fixture
def celery_eager():
    """Celery tasks run where they are sent, as without Redis (the suite has no worker)."""
    from meshsite.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = eager


def run(coroutine_function, *args, **kwargs):
    """Run async code from a sync test the way Django does: its ORM calls come back to
    this thread (and its test transaction)."""
    return async_to_sync(coroutine_function)(*args, **kwargs)


async def try_admit(principal, llm, *, prices=GPT4O_PRICES, prompt=100, output=100, now=None):
    """An Admission, or the exception that refused the call."""
    try:
        return await admission.admit(
            principal=principal,
            llm_id=llm.pk,
            connection_id=llm.connection_id,
            prices=prices,
            prompt_tokens_estimate=prompt,
            max_output_tokens=output,
            now=now,
        )
    except (admission.QuotaExceeded, admission.RateLimited, admission.QuotaUnavailable) as exc:
        return exc


def admit_sync(principal, llm, **kwargs):
    return run(try_admit, principal, llm, **kwargs)


async def gather(*coroutines):
    return await asyncio.gather(*coroutines)
