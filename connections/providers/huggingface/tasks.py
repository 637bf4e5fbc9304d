"""The work done in worker threads: chat, streamed chat, embeddings, classification, summaries.

Each function takes a loaded model and the request body and returns an
OpenAI-style dict with exact token counts from the model's own tokenizer.
Generations check a `threading.Event` between tokens, so a cancelled call
(a client that hung up) stops its generation at the next token.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..base import ProviderError
from .runtime import Loaded

DEFAULT_MAX_TOKENS = 512
DEFAULT_SUMMARY_TOKENS = 128


def bad_request(
    message: str, param: str | None = None, code: str = "invalid_request"
) -> ProviderError:
    return ProviderError(
        message, status=400, code=code, error_type="invalid_request_error", param=param
    )


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        else:
            raise bad_request("Local models take text only.", "messages", "unsupported_content")
    return "".join(parts)


def _stop_criteria(cancel: threading.Event):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

    return StoppingCriteriaList([Cancelled()])


def _eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, list) else {eos}


def chat_inputs(loaded: Loaded, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tokenized prompt, generate() arguments) for an OpenAI chat request."""
    if body.get("n") not in (None, 1):
        raise bad_request("Local models answer with one choice ('n' must be 1).", "n")
    tokenizer = loaded.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise bad_request(
            f"The model '{loaded.name}' has no chat template: it cannot serve chat completions.",
            "model",
            "model_not_supported",
        )
    messages = [
        {"role": m.get("role"), "content": _text(m.get("content"))} for m in body["messages"]
    ]
    try:
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
    except Exception as exc:  # jinja2's TemplateError: the template's own words on the roles
        raise bad_request(
            f"The model's chat template refused these messages: {str(exc)[:200]}",
            "messages",
        )
    prompt_tokens = int(inputs["input_ids"].shape[1])
    room = (loaded.context_window or 10**9) - prompt_tokens
    if room < 1:
        raise bad_request(
            f"The prompt has {prompt_tokens} tokens; the model's context holds "
            f"{loaded.context_window}.",
            "messages",
            "context_length_exceeded",
        )
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    max_new = min(asked or DEFAULT_MAX_TOKENS, room)
    options: dict[str, Any] = {"max_new_tokens": max_new}
    temperature = body.get("temperature")
    if temperature:  # absent or 0: greedy, so answers repeat
        options.update(do_sample=True, temperature=float(temperature))
        if body.get("top_p") is not None:
            options["top_p"] = float(body["top_p"])
    else:
        options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if loaded.tokenizer.pad_token_id is not None:
        options["pad_token_id"] = loaded.tokenizer.pad_token_id
    inputs = {key: value.to(loaded.device) for key, value in inputs.items()}
    return inputs, options


def _finish_reason(
    loaded: Loaded, new_ids: list[int], max_new: int, cancel: threading.Event
) -> str:
    if new_ids and new_ids[-1] in _eos_ids(loaded.model):
        return "stop"
    if len(new_ids) >= max_new:
        return "length"
    return "stop"


def chat(loaded: Loaded, body: dict[str, Any], cancel: threading.Event) -> dict[str, Any]:
    import torch

    inputs, options = chat_inputs(loaded, body)
    with torch.inference_mode():
        output = loaded.model.generate(
            **inputs, **options, stopping_criteria=_stop_criteria(cancel)
        )
    prompt_tokens = int(inputs["input_ids"].shape[1])
    new_ids = output[0][prompt_tokens:].tolist()
    text = loaded.tokenizer.decode(new_ids, skip_special_tokens=True)
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": loaded.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _finish_reason(loaded, new_ids, options["max_new_tokens"], cancel),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(new_ids),
            "total_tokens": prompt_tokens + len(new_ids),
        },
    }


def stream_chat(
    loaded: Loaded,
    body: dict[str, Any],
    cancel: threading.Event,
    emit: Callable[[str, Any], None],
) -> None:
    """Generate: emit("start", prompt tokens), emit("text", (piece, tokens so far)) per
    decoded piece, then emit("end", counts and finish reason).

    `emit` hands each piece to the event loop (call_soon_threadsafe); this thread
    never waits for the client.
    """
    import torch
    from transformers.generation.streamers import BaseStreamer

    inputs, options = chat_inputs(loaded, body)
    prompt_tokens = int(inputs["input_ids"].shape[1])
    tokenizer = loaded.tokenizer
    emit("start", prompt_tokens)

    class Handoff(BaseStreamer):
        """TextStreamer's incremental decoding, handing text over instead of printing it."""

        def __init__(self) -> None:
            self.prompt_seen = False
            self.ids: list[int] = []
            self.sent = 0

        def put(self, value) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            self.ids.extend(int(i) for i in value.reshape(-1).tolist())
            text = tokenizer.decode(self.ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half a multi-byte character: wait for the rest
                return
            if len(text) > self.sent:
                emit("text", (text[self.sent :], len(self.ids)))
                self.sent = len(text)

        def end(self) -> None:
            text = tokenizer.decode(self.ids, skip_special_tokens=True)
            if len(text) > self.sent:
                emit("text", (text[self.sent :], len(self.ids)))
                self.sent = len(text)

    streamer = Handoff()
    with torch.inference_mode():
        loaded.model.generate(
            **inputs, **options, streamer=streamer, stopping_criteria=_stop_criteria(cancel)
        )
    emit(
        "end",
        {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(streamer.ids),
            "finish_reason": _finish_reason(
                loaded, streamer.ids, options["max_new_tokens"], cancel
            ),
        },
    )


def _texts(body: dict[str, Any], *, allow_tokens: bool = False) -> list[str]:
    value = body.get("input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise bad_request("'input' must be a string or a non-empty list of strings.", "input")
    if not all(isinstance(item, str) and item for item in items):
        raise bad_request(
            "'input' items must be non-empty strings (local models take no token lists).", "input"
        )
    return items


def _token_counts(loaded: Loaded, texts: list[str], limit: int | None) -> list[int]:
    encoded = loaded.tokenizer(
        texts, truncation=limit is not None, max_length=limit, add_special_tokens=True
    )
    return [len(ids) for ids in encoded["input_ids"]]


def embed(loaded: Loaded, body: dict[str, Any], cancel: threading.Event) -> dict[str, Any]:
    import numpy as np
    import torch

    texts = _texts(body)
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise bad_request("'encoding_format' must be float or base64.", "encoding_format")
    limit = loaded.context_window
    counts = _token_counts(loaded, texts, limit)
    if loaded.sentence_transformers:
        vectors = loaded.model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
    else:
        batch = loaded.tokenizer(
            texts, padding=True, truncation=limit is not None, max_length=limit, return_tensors="pt"
        ).to(loaded.device)
        with torch.inference_mode():
            hidden = loaded.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vectors = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy()
    data = []
    for index, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
        value: Any = (
            base64.b64encode(vector.tobytes()).decode() if fmt == "base64" else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": value})
    total = sum(counts)
    return {
        "object": "list",
        "data": data,
        "model": loaded.name,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


def classify(loaded: Loaded, body: dict[str, Any], cancel: threading.Event) -> dict[str, Any]:
    import torch

    texts = _texts(body)
    limit = loaded.context_window
    batch = loaded.tokenizer(
        texts, padding=True, truncation=limit is not None, max_length=limit, return_tensors="pt"
    ).to(loaded.device)
    with torch.inference_mode():
        logits = loaded.model(**batch).logits.float()
    config = loaded.model.config
    multi = getattr(config, "problem_type", None) == "multi_label_classification"
    scores = logits.sigmoid() if multi or logits.shape[-1] == 1 else logits.softmax(-1)
    labels = config.id2label or {}
    data = []
    for index, row in enumerate(scores.cpu().tolist()):
        ranked = sorted(
            ({"label": str(labels.get(i, f"LABEL_{i}")), "score": s} for i, s in enumerate(row)),
            key=lambda item: item["score"],
            reverse=True,
        )
        data.append(
            {
                "object": "classification",
                "index": index,
                "label": ranked[0]["label"],
                "score": ranked[0]["score"],
                "labels": ranked,
            }
        )
    tokens = int(batch["attention_mask"].sum())
    return {
        "id": "cls-" + uuid.uuid4().hex,
        "object": "list",
        "created": int(time.time()),
        "model": loaded.name,
        "multi_label": multi,
        "data": data,
        "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
    }


def summarize(loaded: Loaded, body: dict[str, Any], cancel: threading.Event) -> dict[str, Any]:
    import torch

    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("'input' must be a non-empty string.", "input")
    limit = loaded.context_window
    inputs = loaded.tokenizer(
        [text], truncation=limit is not None, max_length=limit, return_tensors="pt"
    ).to(loaded.device)
    max_new = body.get("max_tokens") or DEFAULT_SUMMARY_TOKENS
    with torch.inference_mode():
        output = loaded.model.generate(
            **inputs, max_new_tokens=max_new, stopping_criteria=_stop_criteria(cancel)
        )
    # The decoder's first id is its start token, given, not generated.
    new_ids = output[0][1:].tolist()
    prompt_tokens = int(inputs["input_ids"].shape[1])
    return {
        "id": "sum-" + uuid.uuid4().hex,
        "object": "summary",
        "created": int(time.time()),
        "model": loaded.name,
        "summary": loaded.tokenizer.decode(new_ids, skip_special_tokens=True).strip(),
        "finish_reason": _finish_reason(loaded, new_ids, max_new, cancel),
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(new_ids),
            "total_tokens": prompt_tokens + len(new_ids),
        },
    }
