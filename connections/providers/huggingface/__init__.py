"""`huggingface_local`: models served in-process from folders on this server's disk.

Chat (with the model's chat template, streamed token by token), embeddings
(sentence-transformers folders or mean-pooled encoders), text classification and
summarization, through `transformers`. Nothing is ever downloaded: the Hub is
switched off before `transformers` is imported and every load is
`local_files_only`. The heavy packages are an optional extra (deps.py); without
them this module still imports, and tests and discovery refuse with the reason.

Work runs in a bounded pool of worker threads (`max_concurrent_generations`);
the event loop only awaits futures and receives streamed text through
`loop.call_soon_threadsafe`, so a slow generation never blocks other requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

# Before transformers or huggingface_hub is imported anywhere through this package.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ..base import (
    Adapter,
    ConnectionConfig,
    DiscoveredModel,
    ProviderError,
    Result,
    Stream,
    Usage,
)
from . import deps
from .options import LocalOptions, parse_options

if TYPE_CHECKING:
    from .runtime import ModelHosts

logger = logging.getLogger(__name__)

ENDPOINT_PATHS = {
    "chat": "/v1/chat/completions",
    "embedding": "/v1/embeddings",
    "classification": "/v1/classifications",
    "summarization": "/v1/summaries",
}


def _not_installed() -> ProviderError:
    return ProviderError(
        deps.missing() or deps.EXPLANATION, status=503, code="local_models_unavailable"
    )


class HuggingFaceLocalAdapter(Adapter):
    kind = "huggingface_local"
    # Not implemented for local models: refused with a 400 naming the field.
    unsupported_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "tools",
            "tool_choice",
            "functions",
            "function_call",
            "logprobs",
            "top_logprobs",
            "response_format",
            "stop",
            "dimensions",
            "audio",
            "modalities",
            "prediction",
        }
    )

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self._options: LocalOptions | None = None
        self._host = None
        self._hosts: ModelHosts | None = None
        self._host_lock = threading.Lock()

    @classmethod
    def preload(cls) -> None:
        # torch and transformers take seconds to import, holding the interpreter lock; done
        # at startup, a first call does not stall the event loop behind them.
        if deps.available():
            from . import runtime, tasks  # noqa: F401
            from .runtime import warm_up

            warm_up()

    # --- set-up -----------------------------------------------------------------------------

    def options(self, *, for_admin: bool = True) -> LocalOptions:
        try:
            return parse_options(self.config.options)
        except ValueError as exc:
            # The details name server paths: for the admin's test and discovery, not API clients.
            detail = f": {exc}" if for_admin else "; an administrator can test the connection."
            raise ProviderError(
                f"This local models connection is misconfigured{detail}",
                status=503,
                code="misconfigured",
            )

    def host(self):
        """The shared ModelHost for this connection's settings (blocking: call off the loop)."""
        with self._host_lock:
            if self._host is None:
                if not deps.available():
                    raise _not_installed()
                from . import runtime

                self._options = self.options(for_admin=False)
                # Released where it was acquired, should the process's registry be replaced.
                self._hosts = runtime.hosts
                self._host = self._hosts.acquire(self._options)
            return self._host

    async def _loaded(self, model: str, wanted: str):
        loop = asyncio.get_running_loop()
        # The first call imports torch (seconds): off the event loop like everything heavy.
        host = self._host or await loop.run_in_executor(None, self.host)
        # A loaded model is found without leaving the loop; a load runs in a worker thread.
        loaded = host.cached(model) or await loop.run_in_executor(None, host.get, model)
        if loaded.kind != wanted:
            raise ProviderError(
                f"The model '{model}' is {'an' if loaded.kind[0] in 'aeiou' else 'a'} "
                f"{loaded.kind} model and cannot serve "
                f"{ENDPOINT_PATHS[wanted]}.",
                status=400,
                code="model_not_supported",
                error_type="invalid_request_error",
                param="model",
            )
        return host, loaded

    async def _run(self, model: str, wanted: str, work: Callable, body: dict[str, Any]) -> Result:
        host, loaded = await self._loaded(model, wanted)
        cancel = threading.Event()
        future = host.pool.submit(work, loaded, body, cancel)
        try:
            answer = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancel.set()
            future.cancel()
            raise
        except Exception as exc:
            raise _as_provider_error(exc)
        usage = answer["usage"]
        return Result(
            body=orjson.dumps(answer),
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
            ),
            parsed=answer,
        )

    # --- hot path ---------------------------------------------------------------------------

    async def chat(self, model: str, body: dict[str, Any]) -> Result:
        from .tasks import chat

        return await self._run(model, "chat", chat, body)

    async def embed(self, model: str, body: dict[str, Any]) -> Result:
        from .tasks import embed

        return await self._run(model, "embedding", embed, body)

    async def classify(self, model: str, body: dict[str, Any]) -> Result:
        from .tasks import classify

        return await self._run(model, "classification", classify, body)

    async def summarize(self, model: str, body: dict[str, Any]) -> Result:
        from .tasks import summarize

        return await self._run(model, "summarization", summarize, body)

    async def open_stream(self, model: str, body: dict[str, Any]) -> Stream:
        host, loaded = await self._loaded(model, "chat")
        stream = LocalStream(model, body)
        await stream.start(host, loaded)
        return stream

    async def aclose(self) -> None:
        if self._host is not None and self._options is not None and self._hosts is not None:
            self._host = None
            self._hosts.release(self._options)

    # --- off the hot path -------------------------------------------------------------------

    def _scan(self):
        from .folders import scan

        options = self.options()
        return options, scan(options.models_dir)

    def list_models(self) -> list[DiscoveredModel]:
        if not deps.available():
            raise _not_installed()
        _, folders = self._scan()
        return [
            DiscoveredModel(
                name=folder.name,
                kind=folder.kind,
                context_window=folder.context_window,
                description=folder.description,
            )
            for folder in folders
            if folder.kind is not None
        ]

    def test(self) -> str:
        if not deps.available():
            raise _not_installed()
        options, folders = self._scan()
        from .runtime import resolve_device

        device = resolve_device(options.device)
        servable = [f"{f.name} ({f.kind})" for f in folders if f.kind]
        other = [f.name for f in folders if not f.kind]
        message = (
            f"{len(servable)} model folder(s) found on device {device}"
            + (": " + ", ".join(servable[:20]) if servable else "")
            + "."
        )
        if other:
            message += f" Not servable: {', '.join(other[:10])}."
        import torch
        import transformers

        return message + f" torch {torch.__version__}, transformers {transformers.__version__}."


class LocalStream(Stream):
    """A generation in a worker thread, its text handed to the loop as it is decoded."""

    def __init__(self, model: str, body: dict[str, Any]) -> None:
        self.model = model
        self.body = body
        self.usage = Usage()
        self.message: dict[str, Any] = {"role": "assistant", "content": ""}
        self.first_byte_at: float | None = None
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.cancel = threading.Event()
        self.future = None
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._id = "chatcmpl-" + uuid.uuid4().hex
        self._created = int(time.time())

    async def start(self, host, loaded) -> None:
        """Start generating; a failure before the first token is raised here (so fallback works)."""
        from .tasks import stream_chat

        loop = asyncio.get_running_loop()
        queue = self._queue

        def emit(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            try:
                stream_chat(loaded, self.body, self.cancel, emit)
            except BaseException as exc:
                emit("error", exc)

        self.future = host.pool.submit(work)
        try:
            kind, value = await queue.get()
        except asyncio.CancelledError:  # the caller went away while the call waited for a worker
            await self.aclose()
            raise
        if kind == "error":
            raise _as_provider_error(value)
        self.usage.prompt_tokens = value

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        yield self._chunk({"role": "assistant", "content": ""})
        parts: list[str] = []
        while True:
            kind, value = await self._queue.get()
            if kind == "text":
                piece, generated = value
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                parts.append(piece)
                # Counted as delivered, so a stream cut short is charged its real tokens.
                self.usage.completion_tokens = generated
                self.message["content"] = "".join(parts)
                yield self._chunk({"content": piece})
            elif kind == "error":
                raise _as_provider_error(value)
            else:  # end
                self.usage = Usage(
                    prompt_tokens=value["prompt_tokens"],
                    completion_tokens=value["completion_tokens"],
                )
                yield self._chunk({}, value["finish_reason"])
                if self.include_usage:
                    usage = {
                        "prompt_tokens": self.usage.prompt_tokens,
                        "completion_tokens": self.usage.completion_tokens,
                        "total_tokens": self.usage.prompt_tokens + self.usage.completion_tokens,
                    }
                    chunk = {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage,
                    }
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                return

    async def aclose(self) -> None:
        # Stops the generation at its next token (or before it starts, if still queued).
        self.cancel.set()
        if self.future is not None:
            self.future.cancel()


def _as_provider_error(exc: BaseException) -> ProviderError:
    """A failure inside a worker, in the adapter's terms (its text may quote the input)."""
    if isinstance(exc, ProviderError):
        return exc
    logger.warning("local model call failed: %s", type(exc).__name__)
    return ProviderError(
        f"The local model failed on this request ({type(exc).__name__}).",
        status=500,
        code="local_model_error",
    )


__all__ = ["HuggingFaceLocalAdapter", "LocalOptions", "parse_options"]
