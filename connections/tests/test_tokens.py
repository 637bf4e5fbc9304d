"""The one token estimator, shared by the gateway and quotas."""

from connections.tokens import estimate_prompt_tokens, estimate_text_tokens
from quotas import admission, estimate


def test_quotas_and_the_gateway_share_one_estimator():
    assert admission.estimate_prompt_tokens is estimate_prompt_tokens
    assert estimate.estimate_prompt_tokens is estimate_prompt_tokens


def test_about_four_characters_a_token_plus_the_messages_overhead():
    body = {"messages": [{"role": "user", "content": "x" * 40}]}
    # "user" + 40 characters = 44 -> 11 tokens, + 4 for the message, + 3 for the priming.
    assert estimate_prompt_tokens(body) == 18
    assert estimate_prompt_tokens({"input": "x" * 8}) == 3
    assert estimate_text_tokens(9) == 3 and estimate_text_tokens(0) == 0
