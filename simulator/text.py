"""Deterministic text, tokens and vectors for the simulator.

One tokenizer serves prompts and completions alike: a token is a run of word
characters or a single punctuation character (`\\w+|[^\\w\\s]`); whitespace is
not a token. Replies are built from whole tokens and streamed one token per
chunk, so the usage the simulator reports is exactly what it emitted.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import struct
from typing import Any

TOKEN = re.compile(r"\w+|[^\w\s]")
# A token with the whitespace before it: concatenating pieces gives the text back.
PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")

EMBEDDING_DIMENSIONS = 64

WORDS = (  # noqa: SIM905 (reads as prose)
    "the gateway routes each request to an approved model and records usage for "
    "the department that made the call while keeping provider keys out of reach "
    "teams reuse one stable alias so the model behind it can change without any "
    "application release budgets are checked before the call and settled after it "
    "streamed answers arrive token by token with usage at the end latency stays low "
    "because connections are pooled and reused across calls every answer is audited "
    "reports summarise spend per cost center each month simple clear reliable fast"
).split()


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def pieces(text: str) -> list[str]:
    """Split text into one-token pieces that keep their leading whitespace."""
    return PIECE.findall(text)


def seed_of(*parts: Any) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def reply_pieces(seed: int, limit: int | None) -> tuple[list[str], bool]:
    """A few plausible sentences, as one-token pieces; True when cut short by `limit`."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(rng.randint(2, 4)):
        words = rng.choices(WORDS, k=rng.randint(6, 14))
        words[0] = words[0].capitalize()
        for word in words:
            out.append(word if not out else " " + word)
        out.append(".")
    if limit is not None and len(out) > limit:
        return out[: max(limit, 0)], True
    return out, False


def content_text(content: Any) -> str:
    """The text of an OpenAI message content: a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return " ".join(texts)
    return str(content)


def embedding(text: str | list[int], dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector derived from the input's hash: same input, same vector."""
    rng = random.Random(seed_of("embedding", text))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def as_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
