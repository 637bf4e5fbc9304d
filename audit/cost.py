"""What a call cost, from the answering LLM's prices at call time (USD per million tokens)."""

from __future__ import annotations

from decimal import Decimal

from .money import money_round

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)


def call_cost(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    input_price: Decimal | None,
    output_price: Decimal | None,
    cached_input_price: Decimal | None,
) -> Decimal:
    """(prompt - cached) x input + cached x cached input + completion x output, per million.

    Cached tokens are part of the prompt count (as OpenAI reports them), so they are
    charged once, at the cached price. Exact Decimal arithmetic, rounded once, half up, to
    the money unit (1e-10 USD, see audit.money): the one place money is rounded.
    """
    input_price = input_price or ZERO
    output_price = output_price or ZERO
    cached_input_price = cached_input_price if cached_input_price is not None else input_price
    cached = max(0, min(cached_tokens, prompt_tokens))
    uncached = max(0, prompt_tokens - cached)
    total = uncached * input_price + cached * cached_input_price + completion_tokens * output_price
    return money_round(total / MILLION)
