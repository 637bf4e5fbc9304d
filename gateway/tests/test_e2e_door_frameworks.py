"""Frameworks as their users point them at Meshgate: only the base URL and a Meshgate key.

LangChain's `ChatOpenAI(use_responses_api=True)` speaks the Responses door; llama-index's
`OpenAILike` in its default completion mode speaks legacy completions. Each is skipped
when its package is not installed: requirements-dev.txt lists langchain-openai, not
llama-index-llms-openai-like, whose `openai<3` pin would make pip take the project's openai
back a major version (installed by hand with `--no-deps` beside openai 3, it passes)."""

from __future__ import annotations

import pytest

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

MODELS = ["kind-openai/gpt-4o-mini", "kind-bedrock/anthropic.claude-3-haiku-20240307-v1:0"]


@pytest.mark.parametrize("model", MODELS)
def test_langchain_chat_openai_on_the_responses_api(gateway, model):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        model=model,
        api_key=gateway.keys["alice"],
        base_url=gateway.url,
        use_responses_api=True,
        max_retries=0,
    )
    answer = llm.invoke("Say something about Paris")
    assert answer.text
    streamed = "".join(chunk.text for chunk in llm.stream("Say something about Paris"))
    assert streamed == answer.text
    records = gateway.records(f"endpoint = 'responses' AND model_requested = '{model}'")
    assert len(records) == 2 and all(r["outcome"] == "ok" for r in records)


@pytest.mark.parametrize("model", MODELS)
def test_llama_index_openai_like_in_its_default_completion_mode(gateway, model):
    openai_like = pytest.importorskip("llama_index.llms.openai_like")
    llm = openai_like.OpenAILike(
        model=model, api_key=gateway.keys["alice"], api_base=gateway.url, max_retries=0
    )
    answer = llm.complete("Say something about Paris")
    assert answer.text
    streamed = "".join(piece.delta or "" for piece in llm.stream_complete("Say something"))
    assert streamed
    records = gateway.records(f"endpoint = 'completions' AND model_requested = '{model}'")
    assert len(records) == 2 and all(r["outcome"] == "ok" for r in records)
