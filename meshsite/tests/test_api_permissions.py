"""Every `/api/` route checks the model permission it exposes.

The routes come from Django's URL resolver (the same walk as test_routes.py), so a
route added later is covered, or fails here until it is classified below. Each is
called as a staff user holding no permission at all, and as a staff user holding
exactly one `view_*` permission:

- MODEL routes expose one model: without its `view_<model>` permission every method is
  403; with it, reads are 200 and writes still 403 (a view permission changes nothing).
- SCOPED routes show each caller their own share (their keys, the departments they may
  audit or see reports of): a list answers 200 with nothing of anyone else's, a detail
  of someone else's object 404.
- DOCS routes (the OpenAPI schema and its pages) describe the API to anyone signed in.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import resolve, reverse

from audit import services as audit_services
from audit.models import CallRecord, ChargebackReport
from audit.tests.usage_data import generate_month
from gateway.keys import apikey_create
from gateway.models import ApiKey
from meshsite.tests.test_routes import inventory
from quotas.models import Quota
from quotas.services import quota_create

pytestmark = pytest.mark.django_db

# url name prefix -> the permission a read needs.
MODEL = {
    "api-connection": "connections.view_connection",
    "api-llm": "connections.view_llm",
    "api-alias": "connections.view_alias",
    "api-quota": "quotas.view_quota",
    "api-department": "connections.view_department",
}
SCOPED = ("api-key", "api-call", "api-usage", "api-report")
DOCS = ("api-schema", "api-docs", "api-redoc")
WRITES = ("post", "put", "patch", "delete")


def _kind(url_name: str) -> tuple[str, str]:
    for prefix in MODEL:
        if url_name == prefix or url_name.startswith(prefix + "-"):
            return "model", prefix
    for group in (SCOPED, DOCS):
        for prefix in group:
            if url_name == prefix or url_name.startswith(prefix + "-"):
                return ("scoped" if group is SCOPED else "docs"), prefix
    raise AssertionError(f"{url_name}: classify this /api/ route in {__name__}")


def _takes(url: str, method: str = "get") -> bool:
    match = resolve(url)
    actions = getattr(match.func, "actions", None)
    if actions is not None:
        return method in actions
    return hasattr(match.func.cls, method)


@pytest.fixture
def world(cast):
    """One object of everything the API shows, none of it the caller's."""
    CallRecord.objects.bulk_create(generate_month(cast, count=30))
    audit_services.chargeback_build(month="2026-10")
    apikey_create(owner=cast.alice, department=cast.marketing, purpose="campaign copy")
    quota_create(name="Marketing monthly", amount=Decimal("5"), department=cast.marketing)
    return cast


# Real objects for the sample URLs' ids, so a 404 means "not yours", not "no such thing".
def _lookup(prefix: str, cast) -> dict[str, str]:
    report = ChargebackReport.objects.order_by("pk").first()
    return {
        "api-connection": {"slug": cast.connection.slug},
        "api-llm": {"pk": str(cast.gpt4o.pk)},
        "api-alias": {"name": cast.alias.name},
        "api-quota": {"pk": str(Quota.objects.get().pk)},
        "api-department": {"pk": str(cast.marketing.pk)},
        "api-key": {"pk": str(ApiKey.objects.get().pk)},
        "api-call": {"pk": str(CallRecord.objects.order_by("pk").first().pk)},
        "api-report": {"pk": str(report.pk)},
    }.get(prefix, {})


def api_urls(cast) -> list[tuple[str, str, str]]:
    """(url, kind, prefix) for every /api/ route, its ids those of real objects."""
    found = []
    for sample in inventory():
        if not sample.startswith("/api/"):
            continue
        match = resolve(sample)
        kind, prefix = _kind(match.url_name)
        kwargs = dict(match.kwargs)
        for name, value in _lookup(prefix, cast).items():
            if name in kwargs:
                kwargs[name] = value
        if "group_id" in kwargs:
            kwargs["group_id"] = str(cast.marketing.group_id)
        if "fmt" in kwargs:
            kwargs["fmt"] = "csv"
        found.append((reverse(match.url_name, kwargs=kwargs), kind, prefix))
    names = {resolve(url).url_name for url, *_ in found}
    assert {"api-quota-list", "api-connection-list", "api-key-list", "api-usage"} <= names
    return found


def staff(*perms: str) -> tuple[User, Client]:
    user = User.objects.create_user("clerk", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return user, client


def _scoped_problems(client: Client, url: str) -> list[str]:
    """A scoped route read by someone who holds nothing: empty, or 404."""
    if not _takes(url):
        return []
    response = client.get(url)
    match = resolve(url)
    is_list = match.url_name.endswith("-list") or match.url_name == "api-usage"
    if is_list:
        if response.status_code != 200:
            return [f"GET {url} -> {response.status_code}, expected 200"]
        body = response.json()
        rows = body.get("results", body.get("rows", body)) if isinstance(body, dict) else body
        if rows:
            return [f"GET {url} shows another person's data: {str(rows)[:120]}"]
        return []
    if response.status_code != 404:
        return [f"GET {url} -> {response.status_code}, expected 404"]
    return []


def test_a_staff_user_without_permissions_is_refused_every_management_route(world):
    _user, client = staff()
    problems = []
    for url, kind, _prefix in api_urls(world):
        if kind == "model":
            for method in ("get", *WRITES):
                status = getattr(client, method)(url).status_code
                if status != 403:
                    problems.append(f"{method.upper()} {url} -> {status}, expected 403")
        elif kind == "scoped":
            problems += _scoped_problems(client, url)
        else:
            status = client.get(url).status_code
            if status != 200:
                problems.append(f"GET {url} -> {status}, expected 200 (docs)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("perm", sorted(set(MODEL.values())))
def test_one_view_permission_opens_reads_of_its_model_and_nothing_else(world, perm):
    _user, client = staff(perm)
    problems = []
    served = 0
    for url, kind, prefix in api_urls(world):
        if kind == "scoped":
            problems += _scoped_problems(client, url)
            continue
        if kind != "model":
            continue
        mine = MODEL[prefix] == perm
        if _takes(url):
            status = client.get(url).status_code
            expected = 200 if mine else 403
            served += status == 200
            if status != expected:
                problems.append(f"GET {url} -> {status}, expected {expected}")
        for method in WRITES:
            status = getattr(client, method)(url).status_code
            # 405 is honest where the route has no such method; elsewhere it must be 403.
            if status != 403 and not (status == 405 and not _takes(url, method)):
                problems.append(f"{method.upper()} {url} with only {perm} -> {status}")
    assert served, f"no route served a holder of {perm}"
    assert not problems, "\n".join(problems)
