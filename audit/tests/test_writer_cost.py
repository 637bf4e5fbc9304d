"""Cost from tokens and the prices stored on the record: exact decimals."""

from __future__ import annotations

from decimal import Decimal

from audit.cost import call_cost


def test_cached_input_tokens_are_charged_once_at_the_cached_price():
    cost = call_cost(
        prompt_tokens=1000,
        completion_tokens=200,
        cached_tokens=400,
        input_price=Decimal("2.50"),
        output_price=Decimal("10.00"),
        cached_input_price=Decimal("1.25"),
    )
    # 600 x 2.50 + 400 x 1.25 + 200 x 10.00, per million
    assert cost == Decimal("0.0040")


def test_cost_is_exact_for_a_single_token():
    cost = call_cost(
        prompt_tokens=1,
        completion_tokens=0,
        cached_tokens=0,
        input_price=Decimal("0.15"),
        output_price=Decimal("0.60"),
        cached_input_price=Decimal("0.075"),
    )
    assert cost == Decimal("0.00000015")


def test_no_prices_cost_nothing_and_no_cached_price_falls_back_to_input():
    assert call_cost(
        prompt_tokens=10,
        completion_tokens=10,
        cached_tokens=0,
        input_price=None,
        output_price=None,
        cached_input_price=None,
    ) == Decimal(0)
    assert call_cost(
        prompt_tokens=10,
        completion_tokens=0,
        cached_tokens=10,
        input_price=Decimal("1"),
        output_price=Decimal("0"),
        cached_input_price=None,
    ) == Decimal("0.00001")


def test_cached_tokens_above_the_prompt_count_are_capped_at_it():
    # A provider reporting more cached tokens than prompt tokens must not lower the bill below
    # "the whole prompt at the cached price", nor charge the excess as extra cached input.
    cost = call_cost(
        prompt_tokens=100,
        completion_tokens=10,
        cached_tokens=250,
        input_price=Decimal("2.00"),
        output_price=Decimal("8.00"),
        cached_input_price=Decimal("1.00"),
    )
    # 0 x 2.00 + 100 x 1.00 + 10 x 8.00, per million
    assert cost == Decimal("0.00018")


def test_negative_cached_tokens_count_as_none():
    cost = call_cost(
        prompt_tokens=100,
        completion_tokens=0,
        cached_tokens=-50,
        input_price=Decimal("2.00"),
        output_price=Decimal("8.00"),
        cached_input_price=Decimal("1.00"),
    )
    assert cost == Decimal("0.0002")
