"""What the playground page may ask the gateway for, checked before it gets there.

The page posts JSON: model, department, messages and three sampling settings.
Only those reach the gateway's chat completion body, so the page cannot be
used to send fields (tools, n, logit_bias, ...) the playground does not offer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ROLES = frozenset({"system", "user", "assistant"})
MAX_MESSAGES = 200
MAX_MESSAGE_CHARS = 200_000
MAX_TOKENS_LIMIT = 1_000_000


class PayloadError(ValueError):
    """The page sent something the playground does not accept; the text is shown to the user."""


@dataclass(frozen=True)
class ChatRequest:
    model: str
    department_id: int
    messages: list[dict[str, str]]
    temperature: float | None
    max_tokens: int | None
    top_p: float | None

    def gateway_body(self) -> dict[str, Any]:
        """The OpenAI-shaped chat completion body, always streamed with usage."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.top_p is not None:
            body["top_p"] = self.top_p
        return body


def _number(data: dict, name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError(f"{name} must be a number.")
    try:
        number = float(value)
    except ValueError:
        raise PayloadError(f"{name} must be a number.")
    if not low <= number <= high:
        raise PayloadError(f"{name} must be between {low:g} and {high:g}.")
    return number


def parse_chat_request(raw: bytes) -> ChatRequest:
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise PayloadError("The request is not JSON.")
    if not isinstance(data, dict):
        raise PayloadError("The request must be a JSON object.")

    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise PayloadError("Pick a model.")
    try:
        department_id = int(data.get("department"))
    except (TypeError, ValueError):
        raise PayloadError("Pick the department to charge.")

    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise PayloadError("The conversation is empty.")
    if len(messages) > MAX_MESSAGES:
        raise PayloadError(f"A conversation holds at most {MAX_MESSAGES} messages.")
    clean: list[dict[str, str]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise PayloadError("Each message must be an object with a role and a content.")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise PayloadError("Each message needs a role (system, user, assistant) and a text.")
        if len(content) > MAX_MESSAGE_CHARS:
            raise PayloadError(f"A message holds at most {MAX_MESSAGE_CHARS} characters.")
        if role == "system" and not content.strip():
            continue  # an empty system prompt box means "no system prompt"
        clean.append({"role": role, "content": content})
    if not clean or clean[-1]["role"] != "user":
        raise PayloadError("The conversation must end with your message.")

    max_tokens = _number(data, "max_tokens", 1, MAX_TOKENS_LIMIT)
    return ChatRequest(
        model=model.strip(),
        department_id=department_id,
        messages=clean,
        temperature=_number(data, "temperature", 0, 2),
        max_tokens=int(max_tokens) if max_tokens is not None else None,
        top_p=_number(data, "top_p", 0, 1),
    )
