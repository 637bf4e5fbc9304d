"""AWS credentials for a Bedrock connection, never fetched on the event loop.

A connection's own keys are used as they are. Without them, the host's credential chain
(environment, shared files, container or instance metadata endpoints) is resolved in a
worker thread: botocore fetches over blocking HTTP, and a slow metadata endpoint would
otherwise stall every call the worker serves. The frozen credentials are cached until
`REFRESH_BEFORE` seconds before they expire; then one refresh runs in a thread while
calls go on signing with the still-valid ones; only calls with nothing valid to sign
with wait, and they share that one refresh.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from botocore.credentials import Credentials, ReadOnlyCredentials

from ..base import ProviderError

REFRESH_BEFORE = 300.0  # seconds before expiry when a refresh starts


def _no_credentials() -> ProviderError:
    return ProviderError(
        "This Bedrock connection has no AWS credentials.",
        status=502,
        code="upstream_auth_failed",
    )


class ChainCredentials:
    """The credential chain's current credentials for one adapter (one process)."""

    def __init__(self) -> None:
        self._source: Any = None  # botocore's (refreshable) credentials, once found
        self._frozen: ReadOnlyCredentials | None = None
        self._expires_at: float | None = None  # time.time(); None: they do not expire
        self._refreshing: asyncio.Future[None] | None = None

    def _resolve(self) -> tuple[ReadOnlyCredentials, float | None]:
        """Blocking (a worker thread): find the chain's credentials and freeze them."""
        if self._source is None:
            import botocore.session

            found = botocore.session.get_session().get_credentials()
            if found is None:
                raise _no_credentials()
            self._source = found
        frozen = self._source.get_frozen_credentials()
        expiry = getattr(self._source, "_expiry_time", None)
        return frozen, expiry.timestamp() if expiry is not None else None

    def sync(self) -> ReadOnlyCredentials:
        """For code off the loop (Discover, Test connection)."""
        if self._valid(time.time()):
            assert self._frozen is not None
            return self._frozen
        self._frozen, self._expires_at = self._resolve()
        return self._frozen

    def _valid(self, now: float, margin: float = 0.0) -> bool:
        if self._frozen is None:
            return False
        return self._expires_at is None or self._expires_at - margin > now

    async def get(self) -> ReadOnlyCredentials:
        now = time.time()
        if self._valid(now, REFRESH_BEFORE):
            assert self._frozen is not None
            return self._frozen
        refresh = self._refreshing
        if refresh is None:
            refresh = self._refreshing = asyncio.ensure_future(self._refresh())
        if self._valid(now):  # still good: sign with them while the refresh runs
            assert self._frozen is not None
            return self._frozen
        await asyncio.shield(refresh)
        if self._frozen is None:
            raise _no_credentials()
        return self._frozen

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._frozen, self._expires_at = await loop.run_in_executor(None, self._resolve)
        except ProviderError:
            if not self._valid(time.time()):
                raise
        except Exception:  # botocore's fetch failed: the next call tries again
            if not self._valid(time.time()):
                raise ProviderError(
                    "AWS credentials could not be obtained from the host's credential chain.",
                    status=502,
                    code="upstream_auth_failed",
                    retryable=True,
                ) from None
        finally:
            self._refreshing = None


def static(secrets: dict[str, str]) -> Credentials | None:
    """The connection's own keys, if it has them."""
    if secrets.get("aws_access_key_id") and secrets.get("aws_secret_access_key"):
        return Credentials(
            secrets["aws_access_key_id"],
            secrets["aws_secret_access_key"],
            secrets.get("aws_session_token") or None,
        )
    return None
