"""ASGI entry point.

`/v1/` (the OpenAI-compatible API, the hot path) goes to the lean handler in
`gateway.asgi`, which uses Django's settings, models and cache but no
middleware and no HttpRequest. So do `/metrics`, `/healthz` and `/readyz` (`gateway.ops`).
Everything else goes to Django.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from gateway.asgi import GatewayApp  # noqa: E402
from gateway.ops import PATHS as OPS_PATHS  # noqa: E402
from gateway.ops import ops_app  # noqa: E402

gateway_application = GatewayApp()


async def application(scope, receive, send):
    if (scope["type"] == "http" and scope["path"].startswith("/v1/")) or scope[
        "type"
    ] == "lifespan":
        await gateway_application(scope, receive, send)
    elif scope["type"] == "http" and scope["path"] in OPS_PATHS:  # /metrics, /healthz, /readyz
        await ops_app(scope, receive, send)
    else:
        await django_application(scope, receive, send)
