"""Route inventory: every URL pattern of the project refuses callers it should not serve.

The test walks Django's URL resolver recursively (admin, the management API and
everything other parts add), builds a sample URL for each pattern by filling its
parameters with plausible values until the URL resolves back to that same
pattern, and calls it with several methods:

- anonymously: each route must redirect to a login page, or answer 401 or 403
  (405 for a method the route does not take) -- never 2xx. The only public routes
  are listed in PUBLIC, explicitly, with the reason.
- as alice (an ordinary user, no model permissions, not staff): routes under
  ADMIN_ONLY must refuse her the same way.

Not covered here: `/v1/...`, served by the lean ASGI gateway (meshsite/asgi.py)
ahead of Django's resolver; the gateway's own tests check that a missing or bad
key is refused there. Static files are served by the web server / whitenoise, not
by a URL pattern, and are public by design.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.apps import apps
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404
from django.utils.regex_helper import normalize
from rest_framework.views import APIView

# Public on purpose; anything else reachable without login is a finding.
PUBLIC = {
    "/accounts/login/": "the login page",
    "/admin/login/": "the admin's login form (shows no data; staff only can get past it)",
}
# Routes only administrators (staff with model permissions) may use.
ADMIN_ONLY = ("/admin/", "/api/connections", "/api/llms", "/api/aliases")
LOGIN_PAGES = {"/accounts/login/", "/admin/login/"}
METHODS = ("get", "head", "options", "post", "put", "patch", "delete")

# Plausible values for URL parameters, tried in order until the URL resolves back to
# the pattern it was built from (ids, slugs, names, formats, dates, app labels...).
SAMPLES = [
    "1",
    "sample",
    "json",
    "2026",
    "2026-01",
    "2026-01-31",
    "01",
    str(uuid.UUID(int=1)),
    "a",
]


def _routes(patterns, prefix: str = "", route: str = "") -> Iterator[tuple[str, str]]:
    """(full regex, full route as ResolverMatch.route spells it) for every endpoint."""
    for regex, full_route, _callback in _endpoints(patterns, prefix, route):
        yield regex, full_route


def _endpoints(patterns, prefix: str = "", route: str = ""):
    for pattern in patterns:
        regex = pattern.pattern.regex.pattern
        joined = prefix + (regex[1:] if prefix and regex.startswith("^") else regex)
        text = str(pattern.pattern)
        full_route = route + (text[1:] if route and text.startswith("^") else text)
        if isinstance(pattern, URLResolver):
            yield from _endpoints(pattern.url_patterns, joined, full_route)
        elif isinstance(pattern, URLPattern):
            yield joined, full_route, pattern.callback


# Values a parameter of this name should try first (DRF answers 404 to an unknown format
# before it authenticates, which would hide what the route does).
HINTS = {"format": ["json"]}


def _sample_url(regex: str, route: str) -> str | None:
    pool = SAMPLES + [config.label for config in apps.get_app_configs()]
    for template, params in normalize(regex):
        choices = [HINTS.get(name, []) + pool for name in params]
        for values in itertools.islice(itertools.product(*choices), 5000):
            url = "/" + template % dict(zip(params, values, strict=True))
            try:
                match = resolve(url)
            except Resolver404:
                continue
            if match.route == route:
                return url
    return None


def inventory() -> list[str]:
    urls = []
    for regex, route in _routes(get_resolver().url_patterns):
        url = _sample_url(regex, route)
        assert url is not None, (
            f"no sample URL could be built for {route!r}: add a value to SAMPLES"
        )
        urls.append(url)
    return sorted(set(urls))


REDIRECTS = (301, 302, 303, 307, 308)


def _refusal(client: Client, response) -> str | None:
    """What kind of refusal a response is, or None if it served the caller."""
    for _hop in range(3):
        # A redirect counts when it ends on a login page (the admin's logout, for one,
        # sends anonymous callers to the admin index, which sends them to its login).
        if response.status_code not in REDIRECTS:
            break
        target = urlsplit(response["Location"]).path
        if target in LOGIN_PAGES:
            return "login"
        response = client.get(target)
    if response.status_code in REDIRECTS:
        return None
    if response.status_code in (401, 403):
        return "denied"
    if response.status_code == 405:
        return "method"
    if response.request["REQUEST_METHOD"] == "OPTIONS" and not response.content:
        return "method"  # Django's default OPTIONS: an Allow header and no body
    return None


def _check(client: Client, url: str, methods: tuple[str, ...] = METHODS) -> list[str]:
    problems, refusals = [], set()
    for method in methods:
        response = getattr(client, method)(url)
        refusal = _refusal(client, response)
        if refusal is None:
            problems.append(f"{method.upper()} {url} -> {response.status_code}")
        refusals.add(refusal)
    if not refusals & {"login", "denied"} and not problems:
        problems.append(f"{url}: only 405s, never an authentication refusal")
    return problems


@pytest.fixture
def urls(cast) -> list[str]:
    found = inventory()
    # The walk must really see the project: a broken walker would pass vacuously.
    for expected in ("/admin/gateway/apikey/add/", "/api/keys/", "/api/llms/1/approve/", "/keys/"):
        assert expected in found
    assert len(found) > 50
    return found


def test_every_route_refuses_an_anonymous_caller(urls):
    client = Client()
    problems = [p for url in urls if url not in PUBLIC for p in _check(client, url)]
    assert not problems, "\n".join(problems)


def test_the_public_routes_are_exactly_the_listed_ones(urls):
    assert set(PUBLIC) <= set(urls)
    assert Client().get("/accounts/login/").status_code == 200


def test_admin_only_routes_refuse_an_ordinary_user(cast, urls):
    client = Client()
    client.force_login(cast.alice)
    admin_only = [url for url in urls if url.startswith(ADMIN_ONLY) and url not in PUBLIC]
    assert "/api/connections/" in admin_only and "/admin/" in admin_only
    # Read, add, change, delete: one method per model permission (HEAD/OPTIONS check as GET,
    # PUT as PATCH), to keep the test quick.
    methods = ("get", "post", "patch", "delete")
    problems = [p for url in admin_only for p in _check(client, url, methods)]
    assert not problems, "\n".join(problems)


def test_the_check_flags_a_route_that_serves_anyone(cast):
    """The checker itself: pages that serve the caller are reported, not waved through."""
    assert "GET /accounts/login/ -> 200" in _check(Client(), "/accounts/login/")
    client = Client()
    client.force_login(cast.alice)
    assert "GET /keys/ -> 200" in _check(client, "/keys/")
    assert "GET /api/keys/ -> 200" in _check(client, "/api/keys/")


def test_every_api_view_declares_its_permission():
    """No DRF view relies on the project default (which denies, but says nothing)."""
    undeclared = []
    for _regex, route, callback in _endpoints(get_resolver().url_patterns):
        view_class = getattr(callback, "cls", None)
        if view_class is None or not issubclass(view_class, APIView):
            continue
        declared = view_class.permission_classes is not APIView.permission_classes or (
            "permission_classes" in getattr(callback, "initkwargs", {})
        )
        if not declared:
            undeclared.append(route)
    assert not undeclared, undeclared
