"""`quotas.ledger` on the database path, called directly: the edges the admission tests miss.

`db_admit` and `db_settle` are what enforces quotas without Redis. Each test here kills mutants
of `quotas/ledger.py` that survived `test_quota_admission.py` (see docs/MUTATION.md, ledger):
a settlement of exactly 0 or of one nano-dollar, a quota's last nano-dollar, a non-blocking
quota past its amount, a blocking one past its amount facing a call that holds nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from quotas import runtime
from quotas.config import quota_config
from quotas.ledger import Held, QuotaExceeded, db_admit, db_settle, db_status
from quotas.models import QuotaCounter
from quotas.periods import window
from quotas.services import quota_create

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 5, 15, 12, 30, 15, tzinfo=UTC)
NANO = Decimal("0.000000001")
AMOUNT = Decimal("0.000010")  # 10,000 nano-dollars


@pytest.fixture(autouse=True)
def database_path(settings):
    settings.REDIS_URL = None
    runtime.start()
    yield
    runtime.start()


def quota(cast, period: str = "month", mode: str = "block", **fields):
    fields.setdefault("name", f"{period}-{mode}")
    fields.setdefault("department", cast.marketing)
    made = quota_create(
        amount=AMOUNT,
        period=period,
        mode=mode,
        **({"rolling_days": 7} if period == "rolling" else {}),
        **fields,
    )
    config = quota_config(made)
    return config, window(period, NOW, config.rolling_days)


def test_the_last_nano_dollar_of_a_quota_is_usable_and_the_next_one_is_refused(cast):
    config, span = quota(cast)
    db_admit([Held(config, span, 9_999)])
    assert db_settle([Held(config, span, 9_999)], 9_999, NOW) == [9_999]
    db_admit([Held(config, span, 1)])  # exactly the amount: admitted
    assert db_status(config, span) == (Decimal("0.000009999"), NANO)  # one nano held
    assert db_settle([Held(config, span, 1)], 1, NOW) == [10_000]
    assert db_status(config, span) == (AMOUNT, Decimal("0"))
    with pytest.raises(QuotaExceeded) as refused:
        db_admit([Held(config, span, 1)])
    assert refused.value.quota_name == "month-block"
    assert refused.value.resets_at == datetime(2026, 6, 1, tzinfo=UTC)


def test_a_call_holding_nothing_passes_a_blocking_quota_already_past_its_amount(cast):
    config, span = quota(cast)
    db_admit([Held(config, span, 5_000)])
    db_settle([Held(config, span, 5_000)], 12_000, NOW)  # cost more than its worst case
    assert db_status(config, span) == (Decimal("0.000012"), Decimal("0"))
    db_admit([Held(config, span, 0)])  # a zero-priced model: nothing to check, nothing held
    assert db_status(config, span)[1] == 0
    with pytest.raises(QuotaExceeded):
        db_admit([Held(config, span, 1)])


def test_an_alert_only_quota_past_its_amount_still_admits_and_holds(cast):
    config, span = quota(cast, mode="alert")
    db_admit([Held(config, span, 10_000)])
    db_settle([Held(config, span, 10_000)], 10_000, NOW)
    db_admit([Held(config, span, 3_000)])  # past the amount: counted, never refused
    assert db_status(config, span) == (AMOUNT, Decimal("0.000003"))


@pytest.mark.parametrize("period", ["month", "rolling"])
def test_a_settlement_of_zero_adds_nothing_and_one_nano_dollar_is_counted(cast, period):
    config, span = quota(cast, period=period)
    db_admit([Held(config, span, 2_000)])
    assert db_settle([Held(config, span, 2_000)], 0, NOW) == [0]
    assert db_status(config, span) == (Decimal("0"), Decimal("0"))
    rows = QuotaCounter.objects.filter(quota_id=config.id)
    # Only the period's counter: a call that cost nothing opens no per-minute bucket.
    assert rows.count() == 1
    db_admit([Held(config, span, 2_000)])
    assert db_settle([Held(config, span, 2_000)], 1, NOW) == [1]
    assert db_status(config, span) == (NANO, Decimal("0"))
    if period == "rolling":
        bucket = rows.get(period_start=datetime(2026, 5, 15, 12, 30, tzinfo=UTC))
        assert bucket.spent == NANO


def test_a_rolling_window_counts_a_minute_bucket_while_any_of_it_is_inside(cast):
    config, span = quota(cast, period="rolling")  # (12:30:15 seven days ago, now]
    assert span.start == datetime(2026, 5, 8, 12, 30, 15, tzinfo=UTC)
    partly_inside = datetime(2026, 5, 8, 12, 30, 5, tzinfo=UTC)  # bucket [12:30, 12:31)
    wholly_before = datetime(2026, 5, 8, 12, 29, 50, tzinfo=UTC)  # bucket [12:29, 12:30)
    db_settle([Held(config, span, 0)], 300, partly_inside)
    db_settle([Held(config, span, 0)], 4_000, wholly_before)
    assert db_status(config, span) == (Decimal("0.0000003"), Decimal("0"))


@pytest.mark.parametrize("period", ["month", "rolling"])
def test_a_new_counter_starts_from_the_spend_in_the_audit_trail(cast, period):
    from audit.tests.make_records import create, record

    create(
        record(started_at=datetime(2026, 5, 14, 9, tzinfo=UTC), user=cast.alice, cost=NANO * 700),
        record(started_at=datetime(2026, 5, 1, 9, tzinfo=UTC), user=cast.bob, cost=NANO * 5_000),
    )  # bob's is not Marketing's
    config, span = quota(cast, period=period)
    db_admit([Held(config, span, 100)])  # the counter is made here, seeded from the trail
    assert db_status(config, span) == (NANO * 700, NANO * 100)
    with pytest.raises(QuotaExceeded):
        db_admit([Held(config, span, 9_201)])


def test_a_counter_is_seeded_again_only_if_older_than_redis_last_seen_working(cast):
    from audit.tests.make_records import create, record

    config, span = quota(cast)
    db_admit([Held(config, span, 100)])  # seeded now, from an empty trail
    # Redis last worked an hour before: this counter is younger, its reservation stays.
    runtime.current.redis_last_ok = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    db_admit([Held(config, span, 200)])
    assert db_status(config, span) == (Decimal("0"), NANO * 300)
    # Spend Redis counted (its record is in the trail), and Redis seen working since the seed:
    # the next call re-seeds the counter from the trail.
    create(record(started_at=NOW, user=cast.alice, cost=NANO * 4_000))
    runtime.current.redis_last_ok = datetime.now(UTC) + timedelta(seconds=1)
    db_admit([Held(config, span, 50)])
    assert db_status(config, span) == (NANO * 4_000, NANO * 50)


def test_a_blocking_quota_is_checked_after_an_alert_only_one(cast):
    watch, span = quota(cast, mode="alert")  # the lower id: locked and looked at first
    block, _ = quota(cast, period="month", mode="block", name="Alice", user=cast.alice)
    db_admit([Held(block, span, 10_000), Held(watch, span, 10_000)])
    db_settle([Held(block, span, 10_000), Held(watch, span, 10_000)], 10_000, NOW)
    with pytest.raises(QuotaExceeded) as refused:
        db_admit([Held(watch, span, 1), Held(block, span, 1)])
    assert refused.value.quota_name == "Alice"
    # Refused as a whole: nothing was held on the quota that had room either.
    assert db_status(watch, span) == (AMOUNT, Decimal("0"))


def test_a_catch_all_counter_starts_from_the_spend_no_other_quota_matches(cast):
    from audit.tests.make_records import create, record

    quota(cast)  # Marketing's
    create(
        record(started_at=NOW, user=cast.alice, cost=NANO * 700),  # Marketing's quota's
        record(started_at=NOW, user=cast.bob, cost=NANO * 2_000),  # no other quota's
    )
    everyone, span = quota(cast, name="Everyone else", department=None, is_catch_all=True)
    db_admit([Held(everyone, span, 100)])
    assert db_status(everyone, span) == (NANO * 2_000, NANO * 100)


@pytest.mark.parametrize(
    ("period", "counted", "not_counted"),
    [
        # A calendar period is [start, end): its first instant counts, the next one's does not.
        ("month", datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)),
        # A rolling window is (start, end]: now counts, exactly seven days ago does not.
        ("rolling", NOW, datetime(2026, 5, 8, 12, 30, 15, tzinfo=UTC)),
    ],
)
def test_a_counter_seeded_from_the_trail_keeps_the_periods_bounds(
    cast, period, counted, not_counted
):
    from audit.tests.make_records import create, record

    create(
        record(started_at=counted, user=cast.alice, cost=NANO * 600),
        record(started_at=not_counted, user=cast.alice, cost=NANO * 3_000),
    )
    config, span = quota(cast, period=period)
    db_admit([Held(config, span, 0)])
    assert db_status(config, span)[0] == NANO * 600
