"""The playground's Content-Security-Policy: our own scripts and styles only.

Model output is untrusted text. It is rendered with `textContent`, and this
header is the second wall: even if a bug let markup through, no inline script,
inline handler (`onerror=`), inline style or foreign origin would run.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from asgiref.sync import iscoroutinefunction

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _with_policy(response):
    response.headers.setdefault("Content-Security-Policy", POLICY)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def content_security_policy(view: Callable) -> Callable:
    """Add the policy to a view's responses (sync or async view)."""
    if iscoroutinefunction(view):

        @wraps(view)
        async def async_wrapper(request, *args, **kwargs):
            return _with_policy(await view(request, *args, **kwargs))

        return async_wrapper

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        return _with_policy(view(request, *args, **kwargs))

    return wrapper
