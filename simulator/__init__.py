"""A provider simulator: an ASGI app speaking the OpenAI, Azure OpenAI and Bedrock wire formats.

It is a test and demo double for real providers, and the instant upstream in
benchmarks. Run it with `python -m simulator --port 8001` or mount
`simulator:app` in any ASGI server. It imports nothing from Django.

Paths
- OpenAI: `POST /v1/chat/completions` (plain and SSE streamed, with
  `stream_options.include_usage`, tools, `n`, `stop`, `response_format`),
  `POST /v1/embeddings` (string, strings or token lists; `encoding_format`
  float or base64; `dimensions`, default 64), `GET /v1/models`, `GET /v1/models/{id}`.
- Azure OpenAI: `POST /openai/deployments/{deployment}/chat/completions` and
  `.../embeddings`; an `api-version` query parameter is required (404 without,
  as Azure does) and the key is read from the `api-key` header.
- Bedrock runtime: `POST /model/{modelId}/converse`, `/converse-stream` (real AWS
  event-stream binary frames), `/invoke` (Titan and Cohere embeddings, token
  count in `x-amzn-bedrock-input-token-count`); control plane
  `GET /foundation-models` (ListFoundationModels). Point boto3's `bedrock` and
  `bedrock-runtime` clients at the simulator's URL with `endpoint_url`.

Text and usage
Replies are a few sentences from a small word list, seeded by the prompt, so the
same request gives the same answer; `max_tokens`/`max_completion_tokens` cut
them (finish reason `length`). Tokens are words and single punctuation marks,
counted the same way for prompts and replies, and a stream carries one token per
chunk, so reported usage is exactly what was emitted. A conversation opening
with a system message the simulator has already seen reports that message's
tokens as `prompt_tokens_details.cached_tokens`. A tool call is answered when
`tool_choice` names a function (or is "required"), or when the last user message
names one of the tools or says "tool"; its arguments fit the function's schema.

Authentication
With an expected key (constructor `api_key=`, or `MESHGATE_SIMULATOR_API_KEY`
for the command line), OpenAI paths need `Authorization: Bearer <key>` and Azure
paths `api-key: <key>`, else 401 in the provider's error shape. Without one, any
key is accepted. Bedrock requests need a SigV4 `Authorization` header; with
expected AWS credentials (constructor `aws_credentials=(key_id, secret)`, or
`MESHGATE_SIMULATOR_AWS_ACCESS_KEY_ID` / `..._SECRET_ACCESS_KEY`) the signature
is verified with botocore's signer, else 403 as AWS answers.

Faults by model name (anywhere in the name, between separators)
- `fail-<status>`: answer that HTTP status with the provider's error shape
  (`fail-429` adds `Retry-After: 1`);
- `slow-<ms>`: wait that long before answering;
- `drip-<ms>`: wait that long between streamed chunks;
- `drop-<n>`: drop the connection after n streamed chunks (a plain answer is cut
  in the middle).
e.g. `gpt-4o-slow-1000`, `fail-503`, `sim-drip-20-drop-3`.

Faults by script (control API; per process)
- `POST /_sim/script {"model": "gpt-4o", "responses": [{"status": 429, "retry_after": 1},
  {"status": 503}, {"delay_ms": 1000}, {"drop_after_chunks": 3}, {"malformed_sse": true},
  {"chunk_interval_ms": 200}, {"error_after_chunks": 2}, {}]}`: the next requests
  for that model (`"*"` for any) take these in order, then behaviour returns to
  normal. An entry may also carry `"message"` and `"code"` for the error body, or
  `"content"`: the text of the chat answer instead of the seeded sentences (e.g. a
  reply full of personal data, to test redaction).
  `error_after_chunks` ends a stream with the provider's mid-stream error (an
  OpenAI `data: {"error": ...}` event; a Bedrock exception frame whose type is
  `code`, e.g. `throttlingException`).
- `GET /_sim/requests`: the log of received requests (method, path, query, model,
  headers with `Authorization`, `api-key` and `x-amz-security-token` replaced by
  their SHA-256, body), the last 2,000.
- `POST /_sim/reset`: clear scripts, the log and the prompt cache.
"""

from __future__ import annotations

from .app import Simulator, app_from_env, create_app

app = app_from_env()

__all__ = ["Simulator", "app", "create_app"]
