"""AWS Bedrock: OpenAI-shaped calls translated to Converse, ConverseStream and InvokeModel.

Hot path: requests are signed with botocore's SigV4 signer (service `bedrock`,
credentials from the connection's secrets, or the host's AWS credential chain
when none are set, resolved and refreshed in a worker thread: `credentials.py`)
and sent over one pooled `http.Client` to
`https://bedrock-runtime.{region}.amazonaws.com`, or the connection's base URL.
ConverseStream's event-stream frames are decoded with botocore's parser and
re-emitted as OpenAI `chat.completion.chunk` frames.

Translation, both ways: system/developer messages -> `system`; user/assistant
turns (text parts; images as inline `data:` URLs) -> `messages`, consecutive
turns of one role merged as Converse requires; assistant tool calls ->
`toolUse`; tool messages -> `toolResult`; `tools`/`tool_choice` -> `toolConfig`
(`tool_choice: "none"` drops the tools unless the conversation already used
them, since Converse has no "none"; a conversation with tool calls but no
`tools` declares the tools it used, since Converse refuses tool blocks without);
`max_tokens`/`max_completion_tokens`, `temperature`, `top_p`, `stop` ->
`inferenceConfig`. Back: text and `toolUse`
blocks -> message content and `tool_calls`; stop reasons -> finish reasons;
usage -> prompt tokens = input + cache read + cache write, cached = cache read.

Embeddings go through InvokeModel for Titan (one call per input, concurrently)
and Cohere (one call), answered in OpenAI's shape (float or base64).

Off the hot path, discovery and tests call ListFoundationModels through the same
client (SigV4-signed), so they meet the same proxy, trust and address rules as calls.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
from typing import Any
from urllib.parse import quote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from meshsite.lib import http

from ...validators import AWS_REGION
from ..base import Adapter, DiscoveredModel, ProviderError, Result, Stream, Usage
from ..openai import (
    PooledClients,
    error_for_status,
    estimate_prompt_tokens,
    malformed_error,
    post_checked,
)
from .credentials import ChainCredentials
from .credentials import static as static_credentials
from .stream import ConverseStream
from .translate import completion_from, converse_request, invalid

__all__ = ["BedrockAdapter", "ConverseStream", "converse_request"]


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

    @classmethod
    def default_url(cls, region: str = "") -> str:
        return f"https://bedrock-runtime.{region or 'us-east-1'}.amazonaws.com"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.region = config.region or "us-east-1"
        # Saved before regions were validated, perhaps: it would become the endpoint's host.
        self._region_ok = bool(AWS_REGION.fullmatch(self.region))
        default = f"https://bedrock-runtime.{self.region}.amazonaws.com"
        self.endpoint = (config.base_url or default).rstrip("/")
        self._pool = PooledClients(config)
        # The connection's own keys, or else the host's credential chain (see credentials.py).
        self._static = static_credentials(config.secrets)
        self._chain = ChainCredentials()

    def credentials(self) -> Credentials | ReadOnlyCredentials:
        """Off the event loop only (Discover, Test connection): may fetch from the chain."""
        return self._static or self._chain.sync()

    async def _signing_credentials(self) -> Credentials | ReadOnlyCredentials:
        """On the loop: the connection's keys, or the chain's, resolved in a thread."""
        return self._static or await self._chain.get()

    def _check_region(self) -> None:
        if not self._region_ok:
            raise ProviderError(
                "This Bedrock connection's region is not an AWS region; an administrator "
                "must correct it.",
                status=502,
                code="invalid_connection",
            )

    async def _send(self, model: str, operation: str, payload: dict, *, stream=False):
        self._check_region()
        url = f"{self.endpoint}/model/{quote(model, safe='')}/{operation}"
        body = orjson.dumps(payload)
        accept = "application/vnd.amazon.eventstream" if stream else "application/json"
        signed = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={
                **self._pool.transport.headers,
                "content-type": "application/json",
                "accept": accept,
            },
        )
        SigV4Auth(await self._signing_credentials(), "bedrock", self.region).add_auth(signed)
        headers = {k: v for k, v in signed.headers.items() if k.lower() != "host"}
        return await post_checked(
            self._pool.get(),
            url,
            body,
            http.encode_headers(headers),
            stream=stream,
            status_error=self._status_error,
            slug=self.config.slug,
        )

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
        await self._pool.aclose()

    # --- off the hot path -------------------------------------------------------------------

    def _control_endpoint(self) -> str:
        chosen = self.config.options.get("control_endpoint_url") or self.config.base_url
        return (chosen or f"https://bedrock.{self.region}.amazonaws.com").rstrip("/")

    def _foundation_models(self) -> list[dict[str, Any]]:
        """ListFoundationModels, signed with SigV4 and sent through the same client as calls
        (proxy, trust, headers, address rules)."""
        self._check_region()
        url = f"{self._control_endpoint()}/foundation-models"
        credentials = self.credentials()

        async def work(client: http.Client) -> dict[str, Any]:
            signed = AWSRequest(method="GET", url=url, headers={**self._pool.transport.headers})
            SigV4Auth(credentials, "bedrock", self.region).add_auth(signed)
            headers = {k: v for k, v in signed.headers.items() if k.lower() != "host"}
            response = await post_checked(
                client,
                url,
                b"",
                http.encode_headers(headers),
                stream=False,
                status_error=self._status_error,
                slug=self.config.slug,
                method="GET",
            )
            return _json(response.content)

        summaries = self._pool.run(work, url).get("modelSummaries")
        if not isinstance(summaries, list):
            raise malformed_error()
        return [s for s in summaries if isinstance(s, dict)]

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
