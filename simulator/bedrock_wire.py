"""Bedrock in the simulator: Converse, ConverseStream, InvokeModel and ListFoundationModels.

ConverseStream answers in real AWS event-stream frames (prelude, headers, CRCs),
which botocore's parser reads. Requests must be SigV4-signed; with expected AWS
credentials (`Simulator(aws_credentials=(key_id, secret))`) the signature is
checked too. Usage follows Bedrock: `inputTokens` excludes the cached part, which
is reported as `cacheReadInputTokens`. Token rules are the OpenAI ones (see
`openai_wire`), applied to the request translated to OpenAI's shape.
"""

from __future__ import annotations

import hmac
import re
import struct
import zlib
from itertools import pairwise
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from . import openai_wire
from .asgi import Request, respond, respond_faulty, stream
from .text import count_tokens, embedding

if TYPE_CHECKING:
    from .app import Simulator

EVENT_STREAM = [(b"content-type", b"application/vnd.amazon.eventstream")]
JSON = [(b"content-type", b"application/json")]
PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke)$")
CREDENTIAL = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$"
)
ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
FOUNDATION_MODELS = (
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", "Anthropic", "Claude 3.5 Sonnet v2", "TEXT"),
    ("anthropic.claude-3-haiku-20240307-v1:0", "Anthropic", "Claude 3 Haiku", "TEXT"),
    ("amazon.nova-lite-v1:0", "Amazon", "Nova Lite", "TEXT"),
    ("amazon.nova-pro-v1:0", "Amazon", "Nova Pro", "TEXT"),
    ("meta.llama3-1-8b-instruct-v1:0", "Meta", "Llama 3.1 8B Instruct", "TEXT"),
    ("amazon.titan-embed-text-v2:0", "Amazon", "Titan Text Embeddings V2", "EMBEDDING"),
    ("cohere.embed-english-v3", "Cohere", "Embed English", "EMBEDDING"),
    ("stability.sd3-large-v1:0", "Stability AI", "SD3 Large", "IMAGE"),
)


# --- event-stream encoding ----------------------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    # value type 7 = string, with a 2-byte length
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + b"\x07"
        + struct.pack(">H", len(raw_value))
        + raw_value
    )


def event_frame(event_type: str, payload: dict[str, Any], message_type: str = "event") -> bytes:
    """One AWS event-stream message: prelude + prelude CRC, headers, payload, message CRC."""
    type_header = ":exception-type" if message_type == "exception" else ":event-type"
    headers = (
        _header(type_header, event_type)
        + _header(":content-type", "application/json")
        + _header(":message-type", message_type)
    )
    body = orjson.dumps(payload)
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + headers + body
    return message + struct.pack(">I", zlib.crc32(message) & 0xFFFFFFFF)


# --- request translation (Converse -> the OpenAI shape the planner reads) ------------------


def _text_blocks(blocks: list[Any]) -> str:
    return " ".join(b["text"] for b in blocks if isinstance(b, dict) and "text" in b)


def openai_view(request: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    system = request.get("system") or []
    if system:
        messages.append({"role": "system", "content": _text_blocks(system)})
    for message in request.get("messages") or []:
        content = message.get("content") or []
        calls = [
            {
                "function": {
                    "name": b["toolUse"].get("name", ""),
                    "arguments": orjson.dumps(b["toolUse"].get("input", {})).decode(),
                }
            }
            for b in content
            if isinstance(b, dict) and "toolUse" in b
        ]
        results = [b["toolResult"] for b in content if isinstance(b, dict) and "toolResult" in b]
        for result in results:
            parts = result.get("content") or []
            text = " ".join(
                p["text"] if "text" in p else orjson.dumps(p.get("json")).decode() for p in parts
            )
            messages.append({"role": "tool", "content": text})
        text = _text_blocks(content)
        if text or calls or not results:
            entry: dict[str, Any] = {"role": message.get("role"), "content": text}
            if calls:
                entry["tool_calls"] = calls
            messages.append(entry)
    view: dict[str, Any] = {"messages": messages}
    config = request.get("inferenceConfig") or {}
    if isinstance(config.get("maxTokens"), int):
        view["max_tokens"] = config["maxTokens"]
    if config.get("stopSequences"):
        view["stop"] = config["stopSequences"]
    tools = (request.get("toolConfig") or {}).get("tools") or []
    view["tools"] = [
        {
            "type": "function",
            "function": {
                "name": t["toolSpec"].get("name"),
                "description": t["toolSpec"].get("description", ""),
                "parameters": (t["toolSpec"].get("inputSchema") or {}).get("json") or {},
            },
        }
        for t in tools
        if isinstance(t, dict) and "toolSpec" in t
    ]
    choice = (request.get("toolConfig") or {}).get("toolChoice") or {}
    if "tool" in choice:
        view["tool_choice"] = {"type": "function", "function": {"name": choice["tool"]["name"]}}
    elif "any" in choice:
        view["tool_choice"] = "required"
    return view


def _usage(plan: openai_wire.ChatPlan) -> dict[str, int]:
    output = sum(c.completion_tokens for c in plan.choices)
    fresh = plan.prompt_tokens - plan.cached_tokens
    return {
        "inputTokens": fresh,
        "outputTokens": output,
        "totalTokens": plan.prompt_tokens + output,
        "cacheReadInputTokens": plan.cached_tokens,
        "cacheWriteInputTokens": 0,
    }


def converse_body(plan: openai_wire.ChatPlan) -> bytes:
    choice = plan.choices[0]
    if choice.tool_call:
        function = choice.tool_call["function"]
        block = {
            "toolUse": {
                "toolUseId": choice.tool_call["id"],
                "name": function["name"],
                "input": orjson.loads(function["arguments"]),
            }
        }
    else:
        block = {"text": "".join(choice.pieces)}
    return orjson.dumps(
        {
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": STOP_REASONS[choice.finish_reason],
            "usage": _usage(plan),
            "metrics": {"latencyMs": 1},
        }
    )


def converse_frames(plan: openai_wire.ChatPlan) -> list[bytes]:
    choice = plan.choices[0]
    frames = [event_frame("messageStart", {"role": "assistant"})]
    if choice.tool_call:
        call = choice.tool_call
        start = {"toolUse": {"toolUseId": call["id"], "name": call["function"]["name"]}}
        frames.append(event_frame("contentBlockStart", {"contentBlockIndex": 0, "start": start}))
        for piece in choice.arguments_pieces:
            delta = {"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}
            frames.append(event_frame("contentBlockDelta", delta))
    else:
        for piece in choice.pieces:
            delta = {"contentBlockIndex": 0, "delta": {"text": piece}}
            frames.append(event_frame("contentBlockDelta", delta))
    frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(event_frame("messageStop", {"stopReason": STOP_REASONS[choice.finish_reason]}))
    frames.append(event_frame("metadata", {"usage": _usage(plan), "metrics": {"latencyMs": 1}}))
    return frames


# --- embeddings (InvokeModel) ------------------------------------------------------------------


def invoke_embeddings(model: str, request: dict[str, Any]) -> tuple[bytes, int] | None:
    if model.startswith("amazon.titan-embed"):
        text = request.get("inputText")
        if not isinstance(text, str):
            return None
        dims = request.get("dimensions") if request.get("dimensions") in (256, 512, 1024) else 1024
        tokens = count_tokens(text)
        body = {"embedding": embedding(text, dims), "inputTextTokenCount": tokens}
        return orjson.dumps(body), tokens
    if model.startswith("cohere.embed"):
        texts = request.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return None
        vectors = [embedding(t, 1024) for t in texts]
        body = {
            "id": "sim-embed",
            "embeddings": vectors,
            "texts": texts,
            "response_type": "embeddings_floats",
        }
        return orjson.dumps(body), sum(count_tokens(t) for t in texts)
    return None


# --- the handler -------------------------------------------------------------------------------


def converse_problem(request: dict[str, Any]) -> str | None:
    """The ValidationException Bedrock would raise for this Converse request, if any."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return "A conversation must start with a user message."
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if roles[0] != "user":
        return "A conversation must start with a user message. Try again with a user message."
    alternating = all(a != b for a, b in pairwise(roles))
    if not alternating or not set(roles) <= {"user", "assistant"}:
        return "A conversation must alternate between user and assistant roles."
    blocks = [b for m in messages for b in m.get("content") or []]
    if any(not isinstance(b, dict) or not b for b in blocks):
        return "Malformed input request: every content block needs a type."
    uses_tools = any("toolUse" in b or "toolResult" in b for b in blocks)
    if uses_tools and not (request.get("toolConfig") or {}).get("tools"):
        return (
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    max_tokens = (request.get("inferenceConfig") or {}).get("maxTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return "The maximum tokens you requested must be at least 1."
    return None


def bedrock_error(status: int, message: str, fault: dict[str, Any] | None = None):
    error_type = (fault or {}).get("code") or ERROR_TYPES.get(status, "InternalServerException")
    headers = [*JSON, (b"x-amzn-errortype", f"{error_type}:http://internal.amazon.com/".encode())]
    return orjson.dumps({"message": message}), headers


def signature_problem(sim: Simulator, request: Request) -> str | None:
    """Why the SigV4 signature is not acceptable, or None."""
    match = CREDENTIAL.match(request.header(b"authorization") or "")
    if not match or not request.header(b"x-amz-date"):
        return "Missing Authentication Token"
    if sim.aws_credentials is None:
        return None
    key_id, _day, region, service, signed, signature = match.groups()
    expected_key, secret = sim.aws_credentials
    if key_id != expected_key:
        return "The security token included in the request is invalid."
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    names = signed.split(";")
    headers = {name: request.header(name.encode()) or "" for name in names}
    url = "http://" + headers.get("host", "localhost") + request.raw_path.decode()
    if request.query:
        url += "?" + request.query.decode()
    aws_request = AWSRequest(method=request.method, url=url, data=request.body, headers=headers)
    aws_request.context["timestamp"] = request.header(b"x-amz-date")
    token = request.header(b"x-amz-security-token")
    auth = SigV4Auth(Credentials(key_id, secret, token), service, region)
    canonical = auth.canonical_request(aws_request)
    expected = auth.signature(auth.string_to_sign(aws_request, canonical), aws_request)
    if not hmac.compare_digest(expected, signature):
        return "The request signature we calculated does not match the signature you provided."
    return None


async def handle(sim: Simulator, request: Request, send) -> None:
    if request.path == "/foundation-models" and request.method == "GET":
        sim.record(request, None)
        problem = signature_problem(sim, request)
        if problem:
            body, headers = bedrock_error(403, problem, {"code": "UnrecognizedClientException"})
            return await respond(send, 403, body, headers)
        return await respond(send, 200, foundation_models())
    match = PATH.match(request.path)
    if request.method != "POST" or not match:
        body, headers = bedrock_error(404, "Not found.", {"code": "UnknownOperationException"})
        return await respond(send, 404, body, headers)
    model, operation = unquote(match.group(1)), match.group(2)
    sim.record(request, model)
    problem = signature_problem(sim, request)
    if problem:
        body, headers = bedrock_error(403, problem, {"code": "UnrecognizedClientException"})
        return await respond(send, 403, body, headers)
    try:
        payload = orjson.loads(request.body)
        assert isinstance(payload, dict)
    except (orjson.JSONDecodeError, AssertionError):
        body, headers = bedrock_error(400, "Malformed input request, please reformat your input.")
        return await respond(send, 400, body, headers)
    fault = sim.next_fault(model)
    if await sim.apply_fault(fault, send, bedrock_error):
        return
    if operation == "invoke":
        answer = invoke_embeddings(model, payload)
        if answer is None:
            body, headers = bedrock_error(
                400, "The simulator's InvokeModel serves Titan and Cohere embedding models."
            )
            return await respond(send, 400, body, headers)
        body, tokens = answer
        headers = [*JSON, (b"x-amzn-bedrock-input-token-count", str(tokens).encode())]
        return await respond_faulty(send, body, fault, headers)
    problem = converse_problem(payload)
    if problem:
        body, headers = bedrock_error(400, problem)
        return await respond(send, 400, body, headers)
    plan = openai_wire.ChatPlan(openai_view(payload), model, sim.seen_system_prompts)
    if operation == "converse":
        return await respond_faulty(send, converse_body(plan), fault)
    frames = converse_frames(plan)
    if fault.get("malformed_sse"):
        # A frame whose CRC does not match: the event-stream parser must refuse it.
        broken = bytearray(frames[1])
        broken[-1] ^= 0xFF
        frames[1] = bytes(broken)
        fault = {k: v for k, v in fault.items() if k != "malformed_sse"}
    if fault.get("error_after_chunks") is not None:
        # Bedrock reports a failure after the stream started as an exception message.
        kind = fault.get("code") or "modelStreamErrorException"
        message = {"message": fault.get("message") or "The model stream failed."}
        error = event_frame(kind, message, message_type="exception")
        frames = [*frames[: fault["error_after_chunks"]], error]
    await stream(send, frames, fault, EVENT_STREAM)


def foundation_models() -> bytes:
    summaries = [
        {
            "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
            "modelId": model_id,
            "modelName": name,
            "providerName": provider,
            "inputModalities": ["TEXT"],
            "outputModalities": [modality],
            "responseStreamingSupported": modality == "TEXT",
            "customizationsSupported": [],
            "inferenceTypesSupported": ["ON_DEMAND"],
            "modelLifecycle": {"status": "ACTIVE"},
        }
        for model_id, provider, name, modality in FOUNDATION_MODELS
    ]
    return orjson.dumps({"modelSummaries": summaries})
