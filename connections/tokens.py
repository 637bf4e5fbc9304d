"""Token counts estimated without a tokenizer: ~4 characters a token (OpenAI's rule of thumb
for English). The one estimator the gateway (a cut stream's partial usage, a cut call's
prompt) and quotas (a call's reserved worst case) share; it sits below both."""

from __future__ import annotations

import math
from typing import Any

_SKIPPED = frozenset({"image_url", "type"})


def text_length(value: Any) -> int:
    """Characters of text in a JSON value (an image's URL and part types are not text)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_length(item) for item in value)
    if isinstance(value, dict):
        return sum(text_length(v) for k, v in value.items() if k not in _SKIPPED)
    if isinstance(value, int):
        return 4  # a token id in a pre-tokenized embedding input
    return 0


def estimate_text_tokens(characters: int) -> int:
    """Tokens in `characters` characters of generated text, rounded up."""
    return -(-characters // 4)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens: ~4 characters per token plus 4 per message and 3 for the reply's
    priming. A quota reservation made from it is corrected when the call settles; a prompt
    denser than that (code, non-Latin scripts) can make the actual cost exceed it."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(text_length(message) for message in messages)
        return math.ceil(chars / 4) + 4 * len(messages) + 3
    return math.ceil(text_length(body.get("input", "")) / 4) + 1
