"""The adapter contract every provider kind implements.

An adapter is built once per connection version from a `ConnectionConfig`
(decrypted secrets held in memory only) and reused across calls. On the hot
path it speaks the provider's wire protocol over one pooled `http.HTTPClient`
(see `meshsite.lib.http`) and returns OpenAI-shaped results; off the
hot path (discovery, connection tests) it may use the provider's official SDK.

Every failure an adapter reports is a `ProviderError`, whose `retryable` flag
tells the router whether the next attempt or target is worth trying. Its
message is safe to show a client: no credential, no internal host name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class ConnectionConfig:
    """What an adapter needs of a connection: a plain snapshot, secrets decrypted."""

    id: int
    slug: str
    kind: str
    version: int
    base_url: str = ""
    api_version: str = ""
    region: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    timeout_seconds: float = 60.0
    max_retries: int = 2
    # The network to the provider (see `transport.py`): proxy ("" the environment's,
    # "none", or a URL), extra CA and client certificate (PEM), verification, headers.
    proxy_url: str = ""
    ca_certificate: str = ""
    client_certificate: str = ""
    verify_tls: bool = True
    extra_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_connection(cls, connection) -> ConnectionConfig:
        return cls(
            id=connection.pk,
            slug=connection.slug,
            kind=connection.kind,
            version=connection.version,
            base_url=connection.base_url,
            api_version=connection.api_version,
            region=connection.region,
            options=dict(connection.options or {}),
            secrets=connection.get_secrets(),
            timeout_seconds=connection.timeout_seconds,
            max_retries=connection.max_retries,
            proxy_url=connection.proxy_url,
            ca_certificate=connection.ca_certificate,
            client_certificate=connection.client_certificate,
            verify_tls=not connection.skip_tls_verify,
            extra_headers=dict(connection.extra_headers or {}),
        )

    def secret_values(self) -> list[str]:
        values = [value for value in self.secrets.values() if value]
        # Secret headers are lines: each value is a secret of its own.
        for line in self.secrets.get("secret_headers", "").splitlines():
            value = line.partition(":")[2].strip()
            if value:
                values.append(value)
        return values


class ProviderError(Exception):
    """A provider call failed. `status` is the HTTP status Meshgate answers with."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        code: str = "upstream_error",
        error_type: str = "api_error",
        retryable: bool = False,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.error_type = error_type
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.param = param
        # A connection failure's class (`dns`, `tls: unknown CA`, ...; see lib/http/trust.py).
        self.cause = ""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False


@dataclass
class Result:
    """A complete (non-streamed) answer: the OpenAI-shaped body as bytes and its usage."""

    body: bytes
    usage: Usage
    # The parsed body, when the adapter parsed it anyway (for the audit record).
    parsed: dict[str, Any] | None = None


class Stream:
    """An open streamed answer. Iterate it for OpenAI SSE frames (`data: {...}\\n\\n` bytes);
    a chunk may hold several frames (what one upstream read brought).

    The adapter has already checked the upstream status when it returns a Stream,
    so a failure before the first byte raises ProviderError from `open_stream`
    (and the router may fall back); a failure mid-stream raises ProviderError from
    iteration. After iteration, `usage` holds the counted usage and `message`
    the assembled answer (content and tool calls) for the audit record. The
    final `data: [DONE]` frame is *not* yielded: the gateway writes it.
    """

    usage: Usage
    message: dict[str, Any]
    first_byte_at: float | None

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the upstream connection (idempotent); called on every exit path."""
        raise NotImplementedError


@dataclass
class DiscoveredModel:
    name: str
    kind: str = "chat"
    context_window: int | None = None
    description: str = ""


def unsupported_endpoint(what: str) -> ProviderError:
    """A 400 for an endpoint this kind of connection does not serve ("serve embeddings")."""
    return ProviderError(
        f"This connection does not {what}.",
        status=400,
        code="unsupported_endpoint",
        error_type="invalid_request_error",
    )


class Adapter:
    """Base class of the provider adapters. Subclasses set `kind` and override."""

    kind: ClassVar[str]
    # Request fields this provider cannot honour; the gateway answers 400 for them.
    unsupported_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config

    @classmethod
    def default_url(cls, region: str = "") -> str:
        """Where a connection without a base URL goes (for the admin's network summary)."""
        return ""

    @classmethod
    def preload(cls) -> None:
        """Import what a first call would import, and read the system's trust store (the TLS
        context every connection's client starts from). Called in a worker thread when the
        catalog loads, so neither runs on the event loop."""
        from .transport import warm

        warm()

    # --- hot path (async, wire protocol) --------------------------------------------------

    async def chat(self, model: str, body: dict[str, Any]) -> Result:
        """Send an OpenAI-shaped chat completion request for `model` (the provider's name)."""
        raise unsupported_endpoint("serve chat completions")

    async def open_stream(self, model: str, body: dict[str, Any]) -> Stream:
        """Start a streamed chat completion; raise ProviderError before the first byte."""
        raise unsupported_endpoint("stream chat completions")

    async def embed(self, model: str, body: dict[str, Any]) -> Result:
        raise unsupported_endpoint("serve embeddings")

    async def classify(self, model: str, body: dict[str, Any]) -> Result:
        """Label each text of `input` with scores (POST /v1/classifications)."""
        raise unsupported_endpoint("serve classifications")

    async def summarize(self, model: str, body: dict[str, Any]) -> Result:
        """Summarize the text of `input` (POST /v1/summaries)."""
        raise unsupported_endpoint("serve summaries")

    async def aclose(self) -> None:
        """Close pooled clients when the connection changes or the process stops."""

    # --- off the hot path (sync, SDKs welcome) --------------------------------------------

    def list_models(self) -> list[DiscoveredModel]:
        """What the provider offers to this account."""
        raise ProviderError("Discovery is not available for this kind of connection.", status=400)

    def test(self) -> str:
        """A cheap real call; return a short human message or raise ProviderError."""
        raise ProviderError("Testing is not available for this kind of connection.", status=400)
