"""Connection failures to a provider, logged so an operator can see them, and rate-limited
so a dead upstream under load does not flood the log: one line per upstream (connection
and origin) per minute, naming the cause class (`dns`, `tls: unknown CA`, ...), never a
secret. Per process; a failure costs a dict lookup."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

logger = logging.getLogger("meshgate.upstream")

INTERVAL = 60.0
_last: dict[tuple[str, str], float] = {}


def note(slug: str, url: str, cause: str, *, now: float | None = None) -> bool:
    """Log the failure unless this upstream's was logged less than INTERVAL ago; True if
    a line was written."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    key = (slug, origin)
    moment = time.monotonic() if now is None else now
    if moment - _last.get(key, -INTERVAL) < INTERVAL:
        return False
    if len(_last) > 4096:
        _last.clear()
    _last[key] = moment
    logger.warning(
        "upstream %s of connection %s failed: %s (next report in a minute at most)",
        origin,
        slug,
        cause or "unknown",
    )
    return True
