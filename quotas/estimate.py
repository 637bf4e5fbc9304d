"""A call's worst case before it runs: its prompt tokens estimated, its cost at most."""

from __future__ import annotations

import math
from decimal import Decimal
from functools import lru_cache
from typing import Any

from .periods import to_nanos


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(item) for item in value)
    if isinstance(value, dict):
        return sum(_text_length(v) for k, v in value.items() if k not in {"image_url", "type"})
    if isinstance(value, int):
        return 4  # a token id in a pre-tokenized embedding input
    return 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens, estimated without a tokenizer: ~4 characters per token (OpenAI's
    rule of thumb for English) plus 4 per message and 3 for the reply's priming.
    The reservation is corrected by `settle`; a prompt denser than that (code,
    non-Latin scripts) can make the actual cost exceed the reservation."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(_text_length(message) for message in messages)
        return math.ceil(chars / 4) + 4 * len(messages) + 3
    return math.ceil(_text_length(body.get("input", "")) / 4) + 1


def worst_case_nanos(
    prices: tuple[Decimal, Decimal, Decimal], prompt_tokens: int, output_tokens: int
) -> int:
    micro = _micro_prices(*prices)
    if micro is not None:
        # USD per million tokens in millionths: nanos = tokens * price * 1000 / 1e6, rounded up.
        per_input, per_output = micro
        return -(-(prompt_tokens * per_input + output_tokens * per_output) // 1000)
    input_price, output_price, cached_price = prices
    per_input = max(Decimal(input_price), Decimal(cached_price or 0))
    cost = (prompt_tokens * per_input + output_tokens * Decimal(output_price)) / 1_000_000
    return to_nanos(cost, round_up=True)


@lru_cache(maxsize=1024)
def _micro_prices(input_price, output_price, cached_price) -> tuple[int, int] | None:
    """Prices as integer millionths of a USD (what the catalog stores), or None if finer."""
    per_input = max(Decimal(input_price), Decimal(cached_price or 0)) * 1_000_000
    per_output = Decimal(output_price) * 1_000_000
    if per_input != per_input.to_integral_value() or per_output != per_output.to_integral_value():
        return None
    return int(per_input), int(per_output)
