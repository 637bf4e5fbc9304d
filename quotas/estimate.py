"""A call's worst case before it runs: its prompt tokens estimated, its cost at most."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from connections.tokens import estimate_prompt_tokens

from .periods import to_nanos

__all__ = ["estimate_prompt_tokens", "worst_case_nanos"]


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
