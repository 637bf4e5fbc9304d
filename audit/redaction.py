"""Per-connection payload policy for the bodies kept in a CallRecord.

`full` keeps bodies, `metadata` keeps none, `redacted` keeps them with personal
data replaced by placeholders: e-mail addresses, phone numbers, card numbers
(only digit runs passing the Luhn check, so order numbers survive) and IBANs
(checked with their mod-97 checksum). Applied recursively to every string in the JSON.
"""

from __future__ import annotations

import re
from typing import Any

FULL = "full"
METADATA = "metadata"
REDACTED = "redacted"
_STRICTNESS = {FULL: 0, REDACTED: 1, METADATA: 2}

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ()./-]{6,}\d(?!\w)")


def strictest(policies: list[str]) -> str:
    return max(policies, key=lambda policy: _STRICTNESS.get(policy, 0), default=FULL)


def apply_policy(policy: str, data: Any) -> Any:
    if data is None or policy == FULL:
        return data
    if policy == METADATA:
        return None
    return redact(data)


def redact(data: Any) -> Any:
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, dict):
        return {key: redact(value) for key, value in data.items()}
    if isinstance(data, list):
        return [redact(item) for item in data]
    return data


def redact_text(text: str) -> str:
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub(_iban_or_keep, text)
    text = _CARD.sub(_card_or_keep, text)
    return _PHONE.sub(_phone_or_keep, text)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _card_or_keep(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group()


def _iban_or_keep(match: re.Match) -> str:
    iban = match.group().replace(" ", "")
    if not 15 <= len(iban) <= 34:
        return match.group()
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return "[IBAN]" if int(number) % 97 == 1 else match.group()


def _phone_or_keep(match: re.Match) -> str:
    text = match.group()
    digits = re.sub(r"\D", "", text)
    # Phone numbers have 7 to 15 digits (E.164); dates look alike, so they are kept.
    if _DATE.fullmatch(text.strip()) or not 7 <= len(digits) <= 15:
        return text
    return "[PHONE]"
