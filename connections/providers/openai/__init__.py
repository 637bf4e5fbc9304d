"""OpenAI and OpenAI-compatible servers (vLLM, TGI, Ollama, ...): the reference adapter.

Hot path: one pooled `http.Client` per adapter (`meshsite.lib.http`);
the request body is sent on with `model` replaced by the provider's name and the
upstream bytes come back as they are. Only usage (and, for streams, the assembled message) is read.
Streams always ask the upstream for usage (`stream_options.include_usage`); the
usage-only chunk is passed on only when the client asked for it.

Where an upstream reports no usage, tokens are estimated at ~4 characters per
token and `Usage.estimated` is set. tiktoken downloads its encoding files at run
time, which a gateway may not be allowed to do; a tiktoken-compatible package
with the files built in (bpe-openai) was measured here at ~100 MB per process
and a 0.5-6 s first load: too much for an estimate on the hot path.

Errors: every failure becomes a `ProviderError` whose text never holds the
upstream body verbatim, a secret or the base URL (see `sanitize`). The adapter
makes one attempt; the gateway's router retries and falls back using
`retryable` and `retry_after`.

Off the hot path, discovery and connection tests use the official `openai` SDK.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from meshsite.lib import http

from ..base import Adapter, ConnectionConfig, DiscoveredModel, ProviderError, Result, Stream, Usage
from .errors import (
    address_refused,
    error_for_status,
    malformed_error,
    post_checked,
    retry_after_seconds,
    sanitize,
    stream_broken,
    stream_failure,
    timeout_error,
    transport_error,
    upstream_error_fields,
)
from .pool import PooledClients
from .sse import (
    SSEStream,
    completion_text,
    estimate_prompt_tokens,
    estimate_tokens,
    usage_from,
)

__all__ = [
    "OpenAIAdapter",
    "OpenAICompatibleAdapter",
    "PooledClients",
    "SSEStream",
    "address_refused",
    "error_for_status",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "malformed_error",
    "model_kind",
    "post_checked",
    "retry_after_seconds",
    "sanitize",
    "stream_broken",
    "stream_failure",
    "timeout_error",
    "transport_error",
    "upstream_error_fields",
    "usage_from",
]

# Families an OpenAI account lists that do not serve chat or embeddings.
_NOT_TEXT = (
    "dall-e",
    "whisper",
    "tts",
    "audio",
    "realtime",
    "transcribe",
    "moderation",
    "image",
    "sora",
    "davinci-002",
    "babbage-002",
)


class OpenAIAdapter(Adapter):
    kind = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"

    @classmethod
    def default_url(cls, region: str = "") -> str:
        return cls.default_base_url

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self.base_url = (config.base_url or self.default_base_url).rstrip("/")
        self._pool = PooledClients(config)
        self._headers = http.encode_headers(
            {**self._pool.transport.headers, **self._build_headers()}
        )

    # --- wiring, overridden by Azure -------------------------------------------------------

    def _build_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        key = self.config.secrets.get("api_key")
        if key:
            headers["authorization"] = f"Bearer {key}"
        for option, header in (
            ("organization", "openai-organization"),
            ("project", "openai-project"),
        ):
            if self.config.options.get(option):
                headers[header] = str(self.config.options[option])
        return headers

    def _url(self, model: str, operation: str) -> str:
        return f"{self.base_url}/{operation}"

    def _http_client(self) -> http.Client:
        if not self.base_url:
            raise ProviderError("This connection has no base URL.", status=500)
        return self._pool.get()

    async def _send(self, url: str, payload: dict[str, Any], *, stream: bool) -> http.Response:
        return await post_checked(
            self._http_client(),
            url,
            orjson.dumps(payload),
            self._headers,
            stream=stream,
            status_error=self._status_error,
            slug=self.config.slug,
        )

    def _status_error(self, status: int, headers, body: bytes) -> ProviderError:
        return error_for_status(status, headers, body, self.config)

    # --- hot path ---------------------------------------------------------------------------

    async def chat(self, model: str, body: dict[str, Any]) -> Result:
        payload = {**body, "model": model}
        payload.pop("stream", None)
        payload.pop("stream_options", None)
        response = await self._send(self._url(model, "chat/completions"), payload, stream=False)
        parsed = _json_dict(response.content)
        usage = usage_from(parsed.get("usage")) or Usage(
            prompt_tokens=estimate_prompt_tokens(body),
            completion_tokens=estimate_tokens(completion_text(parsed)),
            estimated=True,
        )
        return Result(body=response.content, usage=usage, parsed=parsed)

    async def open_stream(self, model: str, body: dict[str, Any]) -> Stream:
        options = body.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        client_wants_usage = bool(options.get("include_usage"))
        payload = {**body, "model": model, "stream": True}
        if self.config.options.get("stream_usage", True):
            payload["stream_options"] = {**options, "include_usage": True}
        response = await self._send(self._url(model, "chat/completions"), payload, stream=True)
        return SSEStream(
            response,
            request_body=body,
            forward_usage_chunk=client_wants_usage,
            config=self.config,
        )

    async def embed(self, model: str, body: dict[str, Any]) -> Result:
        payload = {**body, "model": model}
        response = await self._send(self._url(model, "embeddings"), payload, stream=False)
        parsed = _json_dict(response.content)
        usage = usage_from(parsed.get("usage")) or Usage(
            prompt_tokens=estimate_prompt_tokens(body), estimated=True
        )
        return Result(body=response.content, usage=usage, parsed=parsed)

    async def aclose(self) -> None:
        await self._pool.aclose()

    # --- off the hot path -------------------------------------------------------------------
    # Through the same client as calls (proxy, trust, headers, address rules): a green test
    # means calls get through, and a red one says why.

    def _get(self, operation: str) -> dict[str, Any]:
        url = f"{self.base_url}/{operation}"

        async def work(client: http.Client) -> dict[str, Any]:
            response = await post_checked(
                client,
                url,
                b"",
                self._headers,
                stream=False,
                status_error=self._status_error,
                slug=self.config.slug,
                method="GET",
            )
            return _json_dict(response.content)

        if not self.base_url:
            raise ProviderError("This connection has no base URL.", status=500)
        return self._pool.run(work, url)

    def _model_names(self) -> list[str]:
        data = self._get("models").get("data")
        if not isinstance(data, list):
            raise malformed_error()
        return sorted(
            {str(m["id"]) for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
        )

    def list_models(self) -> list[DiscoveredModel]:
        found = []
        for name in self._model_names():
            lowered = name.lower()
            if any(family in lowered for family in _NOT_TEXT):
                continue
            found.append(DiscoveredModel(name=name, kind=model_kind(name)))
        return found

    def test(self) -> str:
        count = len(self._model_names())
        return f"Connected: the provider lists {count} models."


class OpenAICompatibleAdapter(OpenAIAdapter):
    """vLLM, TGI, Ollama and other OpenAI-compatible servers: a base URL, and a key if any."""

    kind = "openai_compatible"
    default_base_url = ""


def model_kind(name: str) -> str:
    return "embedding" if "embed" in name.lower() else "chat"


def _json_dict(content: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise malformed_error()
    if not isinstance(parsed, dict):
        raise malformed_error()
    return parsed
