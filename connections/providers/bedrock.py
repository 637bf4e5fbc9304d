"""AWS Bedrock: OpenAI-shaped calls translated to Converse, ConverseStream and InvokeModel.

Hot path: requests are signed with botocore's SigV4 signer (service `bedrock`,
credentials from the connection's secrets, or the host's AWS credential chain
when none are set) and sent over one pooled `httpx.AsyncClient` to
`https://bedrock-runtime.{region}.amazonaws.com`, or the connection's base URL.
ConverseStream's event-stream frames are decoded with botocore's parser and
re-emitted as OpenAI `chat.completion.chunk` frames.

Translation, both ways: system/developer messages -> `system`; user/assistant
turns (text parts; images as inline `data:` URLs) -> `messages`, consecutive
turns of one role merged as Converse requires; assistant tool calls ->
`toolUse`; tool messages -> `toolResult`; `tools`/`tool_choice` -> `toolConfig`
(`tool_choice: "none"` drops the tools unless the conversation already used
them, since Converse has no "none"); `max_tokens`/`max_completion_tokens`,
`temperature`, `top_p`, `stop` -> `inferenceConfig`. Back: text and `toolUse`
blocks -> message content and `tool_calls`; stop reasons -> finish reasons;
usage -> prompt tokens = input + cache read + cache write, cached = cache read.

Embeddings go through InvokeModel for Titan (one call per input, concurrently)
and Cohere (one call), answered in OpenAI's shape (float or base64).

Off the hot path, discovery and tests use boto3's `bedrock` client.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, ParserError

from .base import Adapter, DiscoveredModel, ProviderError, Result, Stream, Usage
from .openai import (
    error_for_status,
    estimate_prompt_tokens,
    malformed_error,
    sanitize,
    timeout_error,
    transport_error,
)

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


def invalid(message: str, param: str | None = None) -> ProviderError:
    return ProviderError(
        message, status=400, code="invalid_request", error_type="invalid_request_error", param=param
    )


# --- OpenAI -> Converse ----------------------------------------------------------------------


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"text": part.get("text", "")})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            head, _, data = url.partition(",")
            media = head[5:].split(";")[0] if head.startswith("data:") else ""
            if media not in IMAGE_FORMATS or ";base64" not in head:
                raise invalid("Bedrock takes images inline, as base64 data: URLs.", "messages")
            blocks.append({"image": {"format": IMAGE_FORMATS[media], "source": {"bytes": data}}})
        else:
            raise invalid(f"Message content of type {kind!r} is not supported here.", "messages")
    return blocks


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        raise invalid("A tool call's arguments are not valid JSON.", "messages")
    return {
        "toolUse": {
            "toolUseId": call.get("id") or "",
            "name": function.get("name", ""),
            "input": arguments,
        }
    }


def converse_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Converse request for an OpenAI chat completion request."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    used_tools = False
    for message in body.get("messages") or []:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.extend(_blocks(message.get("content")))
            continue
        if role == "user":
            turn, blocks = "user", _blocks(message.get("content"))
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            used_tools = used_tools or bool(calls)
            turn, blocks = "assistant", _blocks(message.get("content"))
            blocks += [_tool_use(c) for c in calls]
        elif role == "tool":
            used_tools = True
            content = message.get("content")
            text = (
                content
                if isinstance(content, str)
                else " ".join(b.get("text", "") for b in _blocks(content))
            )
            result = {"toolUseId": message.get("tool_call_id") or "", "content": [{"text": text}]}
            turn, blocks = "user", [{"toolResult": result}]
        else:
            raise invalid(f"Messages with role {role!r} are not supported here.", "messages")
        if messages and messages[-1]["role"] == turn:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": turn, "content": blocks})
    request: dict[str, Any] = {"messages": messages}
    if system:
        request["system"] = system
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        config["maxTokens"] = limit
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        request["inferenceConfig"] = config
    tool_config = _tool_config(body, used_tools)
    if tool_config:
        request["toolConfig"] = tool_config
    return request


def _tool_config(body: dict[str, Any], used_tools: bool) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or (choice == "none" and not used_tools):
        return None
    specs = []
    for tool in tools:
        function = (tool or {}).get("function") or {}
        spec = {
            "name": function.get("name", ""),
            "inputSchema": {"json": function.get("parameters") or {"type": "object"}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict):
        config["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name", "")}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


# --- Converse -> OpenAI ----------------------------------------------------------------------


def usage_of(data: Any) -> Usage:
    data = data if isinstance(data, dict) else {}
    cache_read = int(data.get("cacheReadInputTokens") or 0)
    cache_write = int(data.get("cacheWriteInputTokens") or 0)
    return Usage(
        prompt_tokens=int(data.get("inputTokens") or 0) + cache_read + cache_write,
        completion_tokens=int(data.get("outputTokens") or 0),
        cached_tokens=cache_read,
    )


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def completion_from(data: dict[str, Any], model: str, request_id: str) -> tuple[dict, Usage]:
    blocks = ((data.get("output") or {}).get("message") or {}).get("content") or []
    text = "".join(b["text"] for b in blocks if isinstance(b, dict) and "text" in b)
    calls = [
        {
            "id": b["toolUse"].get("toolUseId", ""),
            "type": "function",
            "function": {
                "name": b["toolUse"].get("name", ""),
                "arguments": orjson.dumps(b["toolUse"].get("input", {})).decode(),
            },
        }
        for b in blocks
        if isinstance(b, dict) and "toolUse" in b
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    usage = usage_of(data.get("usage"))
    completion = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(data.get("stopReason"), "stop"),
            }
        ],
        "usage": usage_json(usage),
    }
    return completion, usage


class ConverseStream(Stream):
    """ConverseStream frames in, OpenAI chunk frames out. `first_byte_at` is monotonic."""

    def __init__(self, response: httpx.Response, *, model: str, include_usage: bool) -> None:
        self._response = response
        self._include_usage = include_usage
        self._closed = False
        self._envelope = {
            "id": f"chatcmpl-{response.headers.get('x-amzn-requestid') or uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._tool_index: dict[int, int] = {}
        self._content: list[str] = []
        self._calls: list[dict[str, Any]] = []
        self.usage = Usage()
        self.message: dict[str, Any] = {"role": "assistant", "content": None}
        self.finish_reason: str | None = None
        self.first_byte_at: float | None = None

    def _frame(self, delta: dict | None, finish: str | None = None, usage=None) -> bytes:
        chunk: dict[str, Any] = dict(self._envelope)
        chunk["choices"] = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        if self._include_usage:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def __aiter__(self):
        parser = EventStreamBuffer()
        sent = 0
        got_metadata = False
        try:
            async for data in self._response.aiter_bytes():
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                parser.add_data(data)
                for message in parser:
                    frame = self._translate(message)
                    if frame is not None:
                        got_metadata = got_metadata or frame is _METADATA
                        if frame is _METADATA:
                            if not self._include_usage:
                                continue
                            frame = self._frame(None, usage=usage_json(self.usage))
                        sent += 1
                        yield frame
        except ProviderError as exc:
            exc.retryable = exc.retryable and sent == 0
            raise
        except ParserError:
            raise malformed_error("event stream")
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
        if self.finish_reason is None or not got_metadata:
            raise ProviderError(
                "The provider's stream ended early.", status=502, code="upstream_stream_broken"
            )
        self.message = {"role": "assistant", "content": "".join(self._content) or None}
        if self._calls:
            self.message["tool_calls"] = self._calls

    def _translate(self, message) -> bytes | object | None:
        headers = message.headers
        kind = headers.get(":message-type")
        if kind != "event":
            raise _stream_exception(headers.get(":exception-type") or "", message.payload)
        event = headers.get(":event-type")
        try:
            payload = orjson.loads(message.payload) if message.payload else {}
        except orjson.JSONDecodeError:
            raise malformed_error("event stream")
        if event == "messageStart":
            return self._frame({"role": "assistant", "content": ""})
        if event == "contentBlockStart":
            use = (payload.get("start") or {}).get("toolUse")
            if not use:
                return None
            index = len(self._calls)
            self._tool_index[payload.get("contentBlockIndex", 0)] = index
            call = {"id": use.get("toolUseId", ""), "type": "function"}
            call["function"] = {"name": use.get("name", ""), "arguments": ""}
            self._calls.append(call)
            return self._frame({"tool_calls": [{"index": index, **call}]})
        if event == "contentBlockDelta":
            delta = payload.get("delta") or {}
            if "text" in delta:
                self._content.append(delta["text"])
                return self._frame({"content": delta["text"]})
            if "toolUse" in delta:
                index = self._tool_index.get(payload.get("contentBlockIndex", 0), 0)
                piece = delta["toolUse"].get("input", "")
                if index < len(self._calls):
                    self._calls[index]["function"]["arguments"] += piece
                return self._frame(
                    {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                )
            return None  # reasoning content and the like are not part of OpenAI's shape
        if event == "messageStop":
            self.finish_reason = FINISH_REASONS.get(payload.get("stopReason"), "stop")
            return self._frame({}, self.finish_reason)
        if event == "metadata":
            self.usage = usage_of(payload.get("usage"))
            return _METADATA
        return None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()


_METADATA = object()


def _stream_exception(kind: str, payload: bytes) -> ProviderError:
    if kind.lower().startswith("throttling"):
        return ProviderError(
            "The provider is rate limiting requests; try again later.",
            status=429,
            code="rate_limited",
            error_type="rate_limit_error",
            retryable=True,
        )
    return ProviderError("The provider failed mid-stream.", status=502, code="upstream_error")


# --- the adapter ------------------------------------------------------------------------------


class BedrockAdapter(Adapter):
    kind = "bedrock"
    unsupported_fields = frozenset(
        {
            "n",
            "logprobs",
            "top_logprobs",
            "seed",
            "logit_bias",
            "presence_penalty",
            "frequency_penalty",
            "response_format",
            "functions",
            "function_call",
            "audio",
            "modalities",
            "prediction",
            "reasoning_effort",
            "web_search_options",
            "service_tier",
        }
    )

    def __init__(self, config) -> None:
        super().__init__(config)
        self.region = config.region or "us-east-1"
        default = f"https://bedrock-runtime.{self.region}.amazonaws.com"
        self.endpoint = (config.base_url or default).rstrip("/")
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._credentials: Credentials | None = None

    def credentials(self) -> Credentials:
        secrets = self.config.secrets
        if secrets.get("aws_access_key_id") and secrets.get("aws_secret_access_key"):
            return Credentials(
                secrets["aws_access_key_id"],
                secrets["aws_secret_access_key"],
                secrets.get("aws_session_token") or None,
            )
        if self._credentials is None:
            # No keys on the connection: the host's credential chain (instance role, env, ...).
            import botocore.session

            found = botocore.session.get_session().get_credentials()
            if found is None:
                raise ProviderError(
                    "This Bedrock connection has no AWS credentials.",
                    status=502,
                    code="upstream_auth_failed",
                )
            self._credentials = found
        return self._credentials.get_frozen_credentials()

    def _http_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            timeout = self.config.timeout_seconds
            max_connections = int(self.config.options.get("max_connections", 1000))
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=min(max_connections, 256),
                    keepalive_expiry=30,
                ),
                follow_redirects=False,
                trust_env=False,
            )
            self._loop = loop
        return self._http

    async def _send(self, model: str, operation: str, payload: dict, *, stream=False):
        url = f"{self.endpoint}/model/{quote(model, safe='')}/{operation}"
        body = orjson.dumps(payload)
        accept = "application/vnd.amazon.eventstream" if stream else "application/json"
        signed = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={"content-type": "application/json", "accept": accept},
        )
        SigV4Auth(self.credentials(), "bedrock", self.region).add_auth(signed)
        client = self._http_client()
        request = client.build_request("POST", url, content=body, headers=dict(signed.headers))
        try:
            response = await client.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise transport_error(exc)
        if response.status_code >= 300:
            try:
                raw = await response.aread() if stream else response.content
            except httpx.TransportError:
                raw = b""
            finally:
                await response.aclose()
            raise self._status_error(response.status_code, response.headers, raw)
        return response

    def _status_error(self, status: int, headers, raw: bytes) -> ProviderError:
        if status == 424:  # ModelErrorException: the model failed; another try may not
            return ProviderError(
                "The model failed to answer.", status=502, retryable=True, upstream_status=status
            )
        return error_for_status(status, headers, raw, self.config)

    # --- hot path ---------------------------------------------------------------------------

    async def chat(self, model: str, body: dict[str, Any]) -> Result:
        response = await self._send(model, "converse", converse_request(body))
        data = _json(response.content)
        request_id = response.headers.get("x-amzn-requestid") or uuid.uuid4().hex
        completion, usage = completion_from(data, model, request_id)
        return Result(body=orjson.dumps(completion), usage=usage, parsed=completion)

    async def open_stream(self, model: str, body: dict[str, Any]) -> Stream:
        options = body.get("stream_options") or {}
        response = await self._send(model, "converse-stream", converse_request(body), stream=True)
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        return ConverseStream(response, model=model, include_usage=include_usage)

    async def embed(self, model: str, body: dict[str, Any]) -> Result:
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise invalid("Bedrock embeddings take a string or a list of strings.", "input")
        if model.startswith("amazon.titan-embed"):
            vectors, tokens = await self._titan(model, texts, body.get("dimensions"))
        elif model.startswith("cohere.embed"):
            vectors, tokens = await self._cohere(model, texts)
        else:
            raise invalid("This Bedrock model does not serve embeddings here.", "model")
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _b64(v) if as_base64 else v,
            }
            for i, v in enumerate(vectors)
        ]
        usage = (
            Usage(prompt_tokens=tokens)
            if tokens is not None
            else Usage(prompt_tokens=estimate_prompt_tokens(body), estimated=True)
        )
        answer = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
        }
        return Result(body=orjson.dumps(answer), usage=usage, parsed=answer)

    async def _titan(self, model, texts, dimensions) -> tuple[list[list[float]], int | None]:
        async def one(text: str) -> tuple[list[float], int | None]:
            payload: dict[str, Any] = {"inputText": text}
            if "v2" in model:
                payload["normalize"] = True
                if dimensions:
                    payload["dimensions"] = dimensions
            data = _json((await self._send(model, "invoke", payload)).content)
            if not isinstance(data.get("embedding"), list):
                raise malformed_error()
            return data["embedding"], data.get("inputTextTokenCount")

        results = await asyncio.gather(*(one(t) for t in texts))
        counts = [count for _, count in results]
        total = sum(counts) if all(isinstance(c, int) for c in counts) else None
        return [vector for vector, _ in results], total

    async def _cohere(self, model, texts) -> tuple[list[list[float]], int | None]:
        payload = {
            "texts": texts,
            "input_type": self.config.options.get("cohere_input_type", "search_document"),
            "truncate": "END",
        }
        response = await self._send(model, "invoke", payload)
        data = _json(response.content)
        vectors = data.get("embeddings")
        if isinstance(vectors, dict):  # asked with embedding_types: {"float": [...]}
            vectors = vectors.get("float")
        if not isinstance(vectors, list):
            raise malformed_error()
        count = response.headers.get("x-amzn-bedrock-input-token-count")
        return vectors, int(count) if count and count.isdigit() else None

    async def aclose(self) -> None:
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()

    # --- off the hot path -------------------------------------------------------------------

    def _control_client(self):
        import boto3
        from botocore.config import Config

        credentials = self.credentials()
        timeout = self.config.timeout_seconds
        return boto3.client(
            "bedrock",
            region_name=self.region,
            endpoint_url=self.config.options.get("control_endpoint_url")
            or self.config.base_url
            or None,
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            aws_session_token=credentials.token,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=min(10.0, timeout),
                read_timeout=timeout,
            ),
        )

    def _foundation_models(self) -> list[dict[str, Any]]:
        import botocore.exceptions

        try:
            return self._control_client().list_foundation_models()["modelSummaries"]
        except botocore.exceptions.ClientError as exc:
            meta = exc.response.get("ResponseMetadata") or {}
            message = (exc.response.get("Error") or {}).get("Message") or ""
            raw = orjson.dumps({"message": sanitize(message, self.config)})
            raise self._status_error(meta.get("HTTPStatusCode") or 500, {}, raw)
        except (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError):
            raise timeout_error()
        except botocore.exceptions.BotoCoreError:
            raise ProviderError(
                "The provider could not be reached.",
                status=502,
                code="upstream_unreachable",
                retryable=True,
            )

    def list_models(self) -> list[DiscoveredModel]:
        found = []
        for summary in self._foundation_models():
            outputs = summary.get("outputModalities") or []
            kind = "embedding" if "EMBEDDING" in outputs else "chat" if "TEXT" in outputs else None
            if kind is None or not summary.get("modelId"):
                continue
            name = f"{summary.get('providerName', '')} {summary.get('modelName', '')}".strip()
            found.append(DiscoveredModel(name=summary["modelId"], kind=kind, description=name))
        return found

    def test(self) -> str:
        count = len(self._foundation_models())
        return f"Connected: {count} foundation models available in {self.region}."


def _json(content: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise malformed_error()
    if not isinstance(data, dict):
        raise malformed_error()
    return data


def _b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
