"""OpenAI and OpenAI-compatible servers (vLLM, TGI, Ollama, ...): the reference adapter.

Hot path: one pooled `httpx.AsyncClient` per adapter; the request body is sent
on with `model` replaced by the provider's name and the upstream bytes come back
as they are. Only usage (and, for streams, the assembled message) is read.
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

import asyncio
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import openai
import orjson

from .base import (
    Adapter,
    ConnectionConfig,
    DiscoveredModel,
    ProviderError,
    Result,
    Stream,
    Usage,
)

CHARS_PER_TOKEN = 4
MAX_MESSAGE = 300
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://\S+", re.IGNORECASE)
# Long opaque runs (keys, tokens, signatures) are never worth showing a client.
_OPAQUE = re.compile(r"\b(?:sk-|AKIA|ASIA)?[A-Za-z0-9_\-+/=]{32,}\b")
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


# --- errors ---------------------------------------------------------------------------------


def sanitize(text: str, config: ConnectionConfig) -> str:
    """Upstream text made safe for a client: no secret, URL, host or opaque token; short."""
    for secret in config.secret_values():
        text = text.replace(secret, "[redacted]")
    host = urlsplit(config.base_url).hostname if config.base_url else None
    text = _URL.sub("[url]", text)
    if host:
        text = text.replace(host, "[host]")
    text = _OPAQUE.sub("[redacted]", text)
    text = " ".join(text.split())
    return text[:MAX_MESSAGE] + ("…" if len(text) > MAX_MESSAGE else "")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def upstream_error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, code, param) from an OpenAI-, Azure- or AWS-shaped error body, if any."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return "", None, None
    if not isinstance(data, dict):
        return "", None, None
    error = data.get("error") if isinstance(data.get("error"), dict) else data
    message = error.get("message") or error.get("Message") or ""
    code, param = error.get("code"), error.get("param")
    code = code if isinstance(code, str) and _IDENTIFIER.match(code) else None
    param = param if isinstance(param, str) and _IDENTIFIER.match(param) else None
    return (message if isinstance(message, str) else ""), code, param


def error_for_status(
    status: int, headers: Mapping[str, str], body: bytes, config: ConnectionConfig
) -> ProviderError:
    """Map an upstream HTTP error to what Meshgate answers (see the module doc)."""
    message, code, param = upstream_error_fields(body)
    detail = sanitize(message, config) if message else ""
    if status == 429:
        # An exhausted quota will not heal by waiting; a rate limit will.
        quota = code == "insufficient_quota"
        return ProviderError(
            "The provider's quota for this connection is exhausted."
            if quota
            else "The provider is rate limiting requests; try again later.",
            status=429,
            code="insufficient_quota" if quota else "rate_limited",
            error_type="rate_limit_error",
            retryable=not quota,
            retry_after=retry_after_seconds(headers),
            upstream_status=status,
        )
    if status in (401, 403):
        return ProviderError(
            "Upstream authentication failed: the provider refused this connection's "
            "credentials. An administrator must check the connection.",
            status=502,
            code="upstream_auth_failed",
            upstream_status=status,
        )
    if status == 408:
        return timeout_error(upstream_status=status)
    if status in (400, 404, 409, 413, 415, 422):
        text = "The provider rejected the request"
        return ProviderError(
            f"{text}: {detail}" if detail else f"{text} (HTTP {status}).",
            status=413 if status == 413 else 400,
            code=code or "invalid_request",
            error_type="invalid_request_error",
            upstream_status=status,
            param=param,
        )
    if status >= 500:
        return ProviderError(
            f"The provider failed to answer (HTTP {status}).",
            status=502,
            code="upstream_error",
            retryable=True,
            retry_after=retry_after_seconds(headers),
            upstream_status=status,
        )
    return ProviderError(
        f"The provider answered with an unexpected status (HTTP {status}).",
        status=502,
        code="upstream_error",
        upstream_status=status,
    )


def timeout_error(*, upstream_status: int | None = None) -> ProviderError:
    return ProviderError(
        "The provider did not answer in time.",
        status=504,
        code="timeout",
        error_type="timeout_error",
        retryable=True,
        upstream_status=upstream_status,
    )


def transport_error(exc: Exception) -> ProviderError:
    """A network failure, without the exception's text (it can name the host)."""
    if isinstance(exc, httpx.TimeoutException):
        return timeout_error()
    return ProviderError(
        "The provider could not be reached.",
        status=502,
        code="upstream_unreachable",
        retryable=True,
    )


def malformed_error(what: str = "response") -> ProviderError:
    return ProviderError(
        f"The provider sent a malformed {what}.", status=502, code="upstream_malformed"
    )


# --- usage ----------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    parts = []
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            parts.append(_text_of(message.get("content")))
            for call in message.get("tool_calls") or []:
                parts.append(str(((call or {}).get("function") or {}).get("arguments", "")))
    if body.get("tools"):
        parts.append(orjson.dumps(body["tools"]).decode())
    raw = body.get("input")
    if isinstance(raw, str):
        parts.append(raw)
    elif isinstance(raw, list):
        parts.extend(i if isinstance(i, str) else " " * CHARS_PER_TOKEN * len(i) for i in raw)
    return sum(estimate_tokens(p) for p in parts)


def usage_from(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int((details if isinstance(details, dict) else {}).get("cached_tokens") or 0),
    )


def _completion_text(parsed: dict[str, Any]) -> str:
    texts = []
    for choice in parsed.get("choices") or []:
        message = (choice or {}).get("message") or {}
        texts.append(_text_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = (call or {}).get("function") or {}
            texts.append(f"{function.get('name', '')}{function.get('arguments', '')}")
    return "".join(texts)


# --- streams --------------------------------------------------------------------------------


class SSEStream(Stream):
    """An upstream OpenAI SSE stream, passed on frame by frame while usage and the message are read.

    `first_byte_at` is a `time.monotonic()` reading.
    """

    def __init__(
        self,
        response: httpx.Response,
        *,
        request_body: dict[str, Any],
        forward_usage_chunk: bool,
        config: ConnectionConfig,
    ) -> None:
        self._response = response
        self._request_body = request_body
        self._forward_usage_chunk = forward_usage_chunk
        self._config = config
        self._closed = False
        self._content: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self.usage = Usage()
        self.message: dict[str, Any] = {"role": "assistant", "content": None}
        self.finish_reason: str | None = None
        self.first_byte_at: float | None = None
        self._upstream_usage: Usage | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        done = False
        sent = 0
        buffer = b""
        try:
            async for data in self._response.aiter_bytes():
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                buffer += data
                if b"\r" in buffer:
                    buffer = buffer.replace(b"\r\n", b"\n")
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    payload = _data_of(event)
                    if payload is None:
                        continue
                    if payload == b"[DONE]":
                        done = True
                        break
                    if self._read(payload):
                        sent += 1
                        yield b"data: " + payload + b"\n\n"
                if done:
                    break
        except ProviderError as exc:
            exc.retryable = exc.retryable and sent == 0
            raise
        except httpx.TimeoutException:
            raise timeout_error()
        except httpx.TransportError:
            raise ProviderError(
                "The provider's stream broke off.",
                status=502,
                code="upstream_stream_broken",
                retryable=sent == 0,
            )
        finally:
            await self.aclose()
        if not done and self.finish_reason is None:
            raise ProviderError(
                "The provider's stream ended early.",
                status=502,
                code="upstream_stream_broken",
                retryable=sent == 0,
            )
        self._finish()

    def _read(self, payload: bytes) -> bool:
        """Take what is needed from one frame; True when it is to be passed on."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise malformed_error("stream")
        if not isinstance(chunk, dict):
            raise malformed_error("stream")
        if isinstance(chunk.get("error"), dict):
            message, code, _ = upstream_error_fields(payload)
            detail = sanitize(message, self._config) if message else ""
            raise ProviderError(
                "The provider reported an error mid-stream" + (f": {detail}" if detail else "."),
                status=502,
                code=code or "upstream_error",
            )
        usage = usage_from(chunk.get("usage"))
        if usage is not None:
            self._upstream_usage = usage
        choices = chunk.get("choices") or []
        if not choices:
            return usage is None or self._forward_usage_chunk
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self._content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                entry = self._calls.setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                entry["id"] = call.get("id") or entry["id"]
                function = call.get("function") or {}
                entry["function"]["name"] += function.get("name") or ""
                entry["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return True

    def _finish(self) -> None:
        content = "".join(self._content)
        self.message = {"role": "assistant", "content": content or None}
        if self._calls:
            self.message["tool_calls"] = [self._calls[i] for i in sorted(self._calls)]
        if self._upstream_usage is not None:
            self.usage = self._upstream_usage
            return
        calls = "".join(
            c["function"]["name"] + c["function"]["arguments"] for c in self._calls.values()
        )
        self.usage = Usage(
            prompt_tokens=estimate_prompt_tokens(self._request_body),
            completion_tokens=estimate_tokens(content + calls),
            estimated=True,
        )

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()


def _data_of(event: bytes) -> bytes | None:
    """The data of one SSE event (lines joined), or None for comments and empty events."""
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else b"\n".join(lines)


# --- pooled clients -------------------------------------------------------------------------


class PooledClients:
    """One pooled `httpx.AsyncClient` per event loop (a client cannot cross loops).

    The gateway has one loop per process, so one client; code that runs calls in
    short-lived loops (`async_to_sync`, tests) gets its own client there, without
    churning the long-lived one. Entries go when their loop is collected.
    """

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            timeout = self._config.timeout_seconds
            max_connections = int(self._config.options.get("max_connections", 1000))
            client = self._clients[loop] = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                # Sized for hundreds of concurrent streams: a smaller pool would queue them.
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=min(max_connections, 256),
                    keepalive_expiry=30,
                ),
                http1=True,
                http2=False,
                follow_redirects=False,
                trust_env=False,
            )
        return client

    async def aclose(self) -> None:
        """Close the clients of the running loop; those of other loops cannot be awaited here."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()


# --- the adapters ---------------------------------------------------------------------------


class OpenAIAdapter(Adapter):
    kind = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self.base_url = (config.base_url or self.default_base_url).rstrip("/")
        self._pool = PooledClients(config)
        self._headers = self._build_headers()

    # --- wiring, overridden by Azure -------------------------------------------------------

    def _build_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": "meshgate"}
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

    def _http_client(self) -> httpx.AsyncClient:
        if not self.base_url:
            raise ProviderError("This connection has no base URL.", status=500)
        return self._pool.get()

    async def _send(self, url: str, payload: dict[str, Any], *, stream: bool) -> httpx.Response:
        client = self._http_client()
        request = client.build_request(
            "POST", url, content=orjson.dumps(payload), headers=self._headers
        )
        try:
            response = await client.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise transport_error(exc)
        if response.status_code >= 300:
            try:
                body = await response.aread() if stream else response.content
            except httpx.TransportError:
                body = b""
            finally:
                await response.aclose()
            raise error_for_status(response.status_code, response.headers, body, self.config)
        return response

    # --- hot path ---------------------------------------------------------------------------

    async def chat(self, model: str, body: dict[str, Any]) -> Result:
        payload = {**body, "model": model}
        payload.pop("stream", None)
        payload.pop("stream_options", None)
        response = await self._send(self._url(model, "chat/completions"), payload, stream=False)
        parsed = _json_dict(response.content)
        usage = usage_from(parsed.get("usage")) or Usage(
            prompt_tokens=estimate_prompt_tokens(body),
            completion_tokens=estimate_tokens(_completion_text(parsed)),
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

    def _sdk(self) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=self.config.secrets.get("api_key") or "no-key",
            base_url=self.base_url,
            organization=self.config.options.get("organization"),
            project=self.config.options.get("project"),
            timeout=self.config.timeout_seconds,
            max_retries=0,
        )

    def sdk_error(self, exc: Exception) -> ProviderError:
        if isinstance(exc, openai.APITimeoutError):
            return timeout_error()
        if isinstance(exc, openai.APIConnectionError):
            return transport_error(exc)
        if isinstance(exc, openai.APIStatusError):
            response = exc.response
            return error_for_status(
                response.status_code, response.headers, response.content, self.config
            )
        return ProviderError("The provider call failed.", status=502)

    def list_models(self) -> list[DiscoveredModel]:
        try:
            names = sorted({model.id for model in self._sdk().models.list()})
        except openai.OpenAIError as exc:
            raise self.sdk_error(exc)
        found = []
        for name in names:
            lowered = name.lower()
            if any(family in lowered for family in _NOT_TEXT):
                continue
            found.append(DiscoveredModel(name=name, kind=model_kind(name)))
        return found

    def test(self) -> str:
        try:
            count = len(self._sdk().models.list().data)
        except openai.OpenAIError as exc:
            raise self.sdk_error(exc)
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
