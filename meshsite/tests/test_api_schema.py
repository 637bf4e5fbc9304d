"""The OpenAPI schema and the docs pages: login required, assets served locally."""

from __future__ import annotations

import re

import yaml
from django.test import Client
from rest_framework.test import APIClient


def test_the_schema_refuses_anonymous_callers(cast):
    assert APIClient().get("/api/schema/").status_code == 401


def test_the_docs_send_anonymous_visitors_to_the_login_page(cast):
    for url in ("/api/docs/", "/api/docs/redoc/"):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_the_schema_describes_every_endpoint_and_secrets_as_write_only(cast):
    client = APIClient()
    client.force_login(cast.alice)
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    paths = schema["paths"]
    for expected in (
        "/api/connections/",
        "/api/connections/{slug}/",
        "/api/llms/{id}/approve/",
        "/api/llms/{id}/grants/",
        "/api/llms/{id}/grants/{group_id}/",
        "/api/aliases/{name}/",
        "/api/keys/",
        "/api/keys/{id}/revoke/",
    ):
        assert expected in paths, expected
    connection = schema["components"]["schemas"]["Connection"]["properties"]
    assert connection["secrets"]["writeOnly"] is True
    assert connection["secrets_set"]["readOnly"] is True
    created = schema["components"]["schemas"]["ApiKeyCreated"]["properties"]
    assert "key" in created
    assert "key" not in schema["components"]["schemas"]["ApiKey"]["properties"]


def test_the_docs_pages_load_their_assets_from_this_server(cast):
    client = Client()
    client.force_login(cast.alice)
    for url in ("/api/docs/", "/api/docs/redoc/"):
        response = client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert "/static/drf_spectacular_sidecar/" in html
        assert "cdn.jsdelivr.net" not in html
        assert "/api/schema/" in html


def test_every_asset_the_docs_pages_reference_is_served_here(cast):
    """No CDN: each script, stylesheet and icon the pages name comes from this server."""
    client = Client()
    client.force_login(cast.alice)
    seen = set()
    for url in ("/api/docs/", "/api/docs/redoc/"):
        html = client.get(url).content.decode()
        assets = set(re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css|png))["']""", html))
        assert assets, url
        seen |= assets
        for asset in assets:
            assert asset.startswith("/static/"), asset
            response = Client().get(asset)
            assert response.status_code == 200, asset
            body = b"".join(response.streaming_content) if response.streaming else response.content
            assert body, asset
    assert any("swagger-ui-bundle.js" in asset for asset in seen)
    assert any("redoc" in asset for asset in seen)
