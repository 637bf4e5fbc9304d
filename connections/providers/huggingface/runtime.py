"""Loaded models, once per process: lazy loading under a lock, LRU and idle unloading,
and the bounded worker pool generations run in.

Everything here blocks (torch) and runs in worker threads, never on the event loop.
A `ModelHost` is shared by every adapter with the same settings, so a connection
whose version moves keeps its loaded models; the process's `ModelHosts` (`hosts`) holds them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..base import ProviderError
from .folders import is_sentence_transformers, task_of
from .options import LocalOptions, ModelPathError, model_path

logger = logging.getLogger(__name__)


@dataclass
class Loaded:
    """One model in memory: the task it serves, its tokenizer and model objects."""

    name: str
    kind: str
    model: Any
    tokenizer: Any
    device: str
    context_window: int | None
    sentence_transformers: bool = False
    last_used: float = field(default_factory=time.monotonic)


def path_error(exc: ModelPathError) -> ProviderError:
    if exc.missing:
        # Retryable: an alias's next target may have the model; nothing is ever downloaded.
        return ProviderError(str(exc), status=503, code="model_not_on_disk", retryable=True)
    return ProviderError(
        str(exc), status=400, code="invalid_model", error_type="invalid_request_error"
    )


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ProviderError(
            "This connection asks for device 'cuda' but torch sees no CUDA device here.",
            status=503,
            code="device_unavailable",
        )
    return device


def _context(config: Any, tokenizer: Any) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10_000_000 else None


def load_model(options: LocalOptions, name: str) -> Loaded:
    """Load `name` from disk only (local_files_only); ProviderError if it is not there."""
    try:
        path = model_path(options.models_dir, name)
    except ModelPathError as exc:
        raise path_error(exc)
    kind, description = task_of(path)
    if kind is None:
        raise ProviderError(
            f"The model '{name}' is {description}.",
            status=400,
            code="model_not_supported",
            error_type="invalid_request_error",
        )
    device = resolve_device(options.device)
    try:
        return _load(path, name, kind, device)
    except ProviderError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("local model %s could not be loaded: %s", name, type(exc).__name__)
        raise ProviderError(
            f"The model '{name}' could not be loaded from its folder ({type(exc).__name__}).",
            status=503,
            code="model_load_failed",
        )


def _load(path, name: str, kind: str, device: str) -> Loaded:
    import transformers

    if kind == "embedding" and is_sentence_transformers(path):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        return Loaded(name, kind, model, model.tokenizer, device, model.max_seq_length, True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    auto = {
        "chat": transformers.AutoModelForCausalLM,
        "classification": transformers.AutoModelForSequenceClassification,
        "summarization": transformers.AutoModelForSeq2SeqLM,
        "embedding": transformers.AutoModel,
    }[kind]
    model = auto.from_pretrained(path, local_files_only=True)
    model.to(device)
    model.eval()
    return Loaded(name, kind, model, tokenizer, device, _context(model.config, tokenizer))


# The event loop shares the interpreter lock with the generation threads, which spend much of
# each token in Python: at the default 5 ms switch interval a request waited up to ~150 ms for
# the lock behind two generations; at 1 ms, /v1/models stays well under 100 ms during them.
SWITCH_INTERVAL = 0.001


def tune_process(options: LocalOptions) -> None:
    """Share the CPU between generations and the event loop (process-wide settings)."""
    import torch

    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    # Each generation gets its share of the cores instead of every one spinning on all of them.
    threads = max(1, (os.cpu_count() or 1) // options.max_concurrent_generations)
    if torch.get_num_threads() > threads:
        torch.set_num_threads(threads)


_warm = threading.Lock()
_warmed = False


def warm_up() -> None:
    """Import what a first load and generation use, then take it out of the garbage collector.

    torch, transformers and sentence-transformers bring ~0.5M long-lived objects: a full
    collection then takes ~350 ms (measured on this 2-core machine) holding the interpreter
    lock, and every request on the event loop would wait it out. Frozen, they are skipped;
    what is created later (models, requests) is collected as usual.
    """
    global _warmed
    with _warm:
        if _warmed:
            return
        import sentence_transformers  # noqa: F401
        import transformers
        from transformers import generation  # noqa: F401

        for name in (
            "AutoTokenizer",
            "AutoModel",
            "AutoModelForCausalLM",
            "AutoModelForSequenceClassification",
            "AutoModelForSeq2SeqLM",
            "StoppingCriteria",
        ):
            getattr(transformers, name)
        gc.collect()
        gc.freeze()
        _warmed = True


def _release(models: list[Loaded]) -> None:
    """Give an unloaded model's GPU memory back (a generation in flight keeps its reference)."""
    if any(model.device != "cpu" for model in models):
        import torch

        models.clear()
        gc.collect()
        torch.cuda.empty_cache()


GENERATION_NICENESS = 10


def _lower_priority() -> None:
    """Worker threads yield the CPU to the event loop's thread when the cores are busy."""
    # On Linux a thread id names one thread: only this worker is reniced.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), GENERATION_NICENESS)


class ModelHost:
    """The models one set of settings has loaded, and its worker pool."""

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        warm_up()
        tune_process(options)
        self.pool = ThreadPoolExecutor(
            max_workers=options.max_concurrent_generations,
            thread_name_prefix="hf-generate",
            initializer=_lower_priority,
        )
        self.loads = 0  # how many times a model was read from disk (tests, logs)
        self._models: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._closed = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="hf-idle-unload", daemon=True)
        self._sweeper.start()

    def get(self, name: str) -> Loaded:
        """The loaded model, loading it once however many callers ask at the same time."""
        with self._lock:
            loaded = self._touch(name)
            if loaded is not None:
                return loaded
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:
            with self._lock:
                loaded = self._touch(name)
                if loaded is not None:
                    return loaded
            started = time.monotonic()
            loaded = load_model(self.options, name)
            logger.info("local model %s loaded in %.1f s", name, time.monotonic() - started)
            with self._lock:
                self.loads += 1
                self._models[name] = loaded
                evicted = []
                while len(self._models) > self.options.max_loaded_models:
                    evicted.append(self._models.popitem(last=False)[1])
                self._loading.pop(name, None)
        for model in evicted:
            logger.info("local model %s unloaded (least recently used)", model.name)
        _release(evicted)
        return loaded

    def cached(self, name: str) -> Loaded | None:
        """The model if it is loaded (never blocks for long: the lock guards dict updates only)."""
        with self._lock:
            return self._touch(name)

    def _touch(self, name: str) -> Loaded | None:
        loaded = self._models.get(name)
        if loaded is not None:
            loaded.last_used = time.monotonic()
            self._models.move_to_end(name)
        return loaded

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Drop models unused for idle_unload_seconds (a generation in flight keeps its own)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [
                name
                for name, loaded in self._models.items()
                if now - loaded.last_used >= self.options.idle_unload_seconds
            ]
            dropped = [self._models.pop(name) for name in idle]
        for name in idle:
            logger.info("local model %s unloaded (idle)", name)
        _release(dropped)
        return idle

    def _sweep(self) -> None:
        interval = max(0.5, min(60.0, self.options.idle_unload_seconds / 4))
        while not self._closed.wait(interval):
            self.unload_idle()

    def close(self) -> None:
        self._closed.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._models.clear()


class ModelHosts:
    """The process's loaded models: one `ModelHost` per set of settings, counted by the
    adapters using it and closed when the last lets go. One object, `hosts`, made when this
    module is first imported (the first local model's adapter asks for it); a test gets a
    fresh one from the `model_hosts` fixture (conftest.py)."""

    def __init__(self) -> None:
        self._hosts: dict[LocalOptions, tuple[ModelHost, int]] = {}
        self._lock = threading.Lock()

    def acquire(self, options: LocalOptions) -> ModelHost:
        """The host for these settings (shared, counted)."""
        with self._lock:
            host, users = self._hosts.get(options, (None, 0))
            if host is None:
                host = ModelHost(options)
            self._hosts[options] = (host, users + 1)
            return host

    def release(self, options: LocalOptions) -> None:
        with self._lock:
            host, users = self._hosts.get(options, (None, 0))
            if host is None:
                return
            if users <= 1:
                del self._hosts[options]
                host.close()
            else:
                self._hosts[options] = (host, users - 1)

    def users(self, options: LocalOptions) -> int:
        with self._lock:
            return self._hosts.get(options, (None, 0))[1]

    def close(self) -> None:
        """Close every host, whoever still holds it (the end of a test)."""
        with self._lock:
            held, self._hosts = list(self._hosts.values()), {}
        for host, _users in held:
            host.close()


hosts = ModelHosts()
