"""Each quota's spend, reservations and room: in the admin and at /api/quotas/ (view_quota)."""

from __future__ import annotations

from decimal import Decimal

from django.test import Client
from django.utils import timezone

from quotas.models import Quota, RateLimit
from quotas.services import quota_create, ratelimit_create

from . import quota_support
from .quota_support import WORST_CASE, admit_sync, principal_of, run

backend = quota_support.backend  # each test on Redis and on the database


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def spend_some(cast) -> Quota:
    quota = quota_create(name="Marketing monthly", amount=Decimal("1"), department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    now = timezone.now()
    run(admit_sync(alice, cast.gpt4o, now=now).settle, Decimal("0.25"), 100)
    admit_sync(alice, cast.gpt4o, now=now)  # still in flight: reserved
    return quota


def test_staff_see_spend_reserved_and_remaining_at_the_api(cast, backend):
    quota = spend_some(cast)
    response = logged_in(cast.admin).get("/api/quotas/")
    assert response.status_code == 200
    [row] = response.json()["results"]
    assert row["name"] == quota.name
    assert row["department"] == "Marketing"
    assert Decimal(row["status"]["spent"]) == Decimal("0.25")
    assert Decimal(row["status"]["reserved"]) == WORST_CASE
    assert Decimal(row["status"]["remaining"]) == Decimal("0.75") - WORST_CASE
    detail = logged_in(cast.admin).get(f"/api/quotas/{quota.pk}/")
    assert detail.json()["status"] == row["status"]


def test_people_who_are_not_staff_cannot_read_quotas(cast):
    quota_create(name="Marketing monthly", amount=Decimal("1"), department=cast.marketing)
    assert logged_in(cast.alice).get("/api/quotas/").status_code == 403
    assert Client().get("/api/quotas/").status_code in (401, 403)


def test_the_quotas_are_read_only_at_the_api(cast):
    quota_create(name="Marketing monthly", amount=Decimal("1"), department=cast.marketing)
    response = logged_in(cast.admin).post("/api/quotas/", {"name": "x", "amount": "1"})
    assert response.status_code == 405


def test_the_admin_changelist_shows_each_quotas_standing(cast, backend):
    spend_some(cast)
    response = logged_in(cast.admin).get("/admin/quotas/quota/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Marketing monthly" in html
    # Amounts in the one format of every page (audit.money.usd).
    assert "$0.25" in html  # spent
    assert "$0.0013" in html  # reserved: below a cent, two significant digits
    assert "$0.75" in html  # remaining
    found = logged_in(cast.admin).get("/admin/quotas/quota/", {"q": "Marketing"})
    assert len(found.context["cl"].result_list) == 1


def test_the_admin_adds_a_quota_through_the_service_rules(cast):
    client = logged_in(cast.admin)
    assert client.get("/admin/quotas/quota/add/").status_code == 200
    form = {
        "name": "Finance weekly",
        "amount": "20",
        "period": "rolling",
        "mode": "block",
        "is_active": "on",
        "alert_thresholds": "[50, 80, 100]",
        "department": cast.finance.pk,
        "purpose": "",
    }
    refused = client.post("/admin/quotas/quota/add/", form)
    assert refused.status_code == 200
    assert "A rolling period needs a number of days." in refused.content.decode()
    form["rolling_days"] = "7"
    created = client.post("/admin/quotas/quota/add/", form)
    assert created.status_code == 302
    quota = Quota.objects.get(name="Finance weekly")
    assert (quota.rolling_days, quota.department, quota.alert_thresholds) == (
        7,
        cast.finance,
        [50, 80, 100],
    )
    change = client.get(f"/admin/quotas/quota/{quota.pk}/change/")
    assert "spent $0.00," in change.content.decode()


def test_the_admin_lists_rate_limits_and_alerts(cast):
    ratelimit_create(name="Key RPM", scope="api_key", requests_per_minute=60)
    client = logged_in(cast.admin)
    assert "Key RPM" in client.get("/admin/quotas/ratelimit/").content.decode()
    assert client.get("/admin/quotas/ratelimit/add/").status_code == 200
    assert client.get("/admin/quotas/quotaalert/").status_code == 200
    assert client.get("/admin/quotas/quotaalert/add/").status_code == 403
    assert RateLimit.objects.count() == 1
