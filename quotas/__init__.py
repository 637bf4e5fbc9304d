"""Cost control: spending quotas and rate limits, admitted before every upstream call.

The gateway calls `admit(...)` between "authorize" and "call" and settles or
releases the returned `Admission` on every exit path; `error_response` turns a
refusal into the OpenAI-shaped 429 a client gets.
"""

from __future__ import annotations

from .admission import Admission, admit, estimate_prompt_tokens
from .errors import error_response
from .ledger import QuotaExceeded, QuotaUnavailable
from .ratelimit import RateLimited

__all__ = [
    "Admission",
    "QuotaExceeded",
    "QuotaUnavailable",
    "RateLimited",
    "admit",
    "error_response",
    "estimate_prompt_tokens",
]
