"""Headers a call adds to every upstream request of its own (a W3C `traceparent`).

The gateway's tracing stage sets them for the call's task; the wire adapters' one sending
function (`openai.errors.post_checked`) appends them. Unset (tracing off) they cost one
context-variable read per upstream request.
"""

from __future__ import annotations

from contextvars import ContextVar

# Encoded header lines (`name: value\r\n`, as `meshsite.lib.http.encode_headers` makes them).
UPSTREAM_HEADERS: ContextVar[bytes] = ContextVar("meshgate_upstream_headers", default=b"")
