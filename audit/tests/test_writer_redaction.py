"""Payload policies: full, metadata, redacted (e-mails, phones, Luhn-valid cards, IBANs)."""

from __future__ import annotations

from audit.redaction import apply_policy, redact_text, strictest


def test_redaction_replaces_personal_data_and_keeps_the_rest():
    text = (
        "Write to jane.doe@example.com or call +33 1 42 68 53 00. Card 4111-1111-1111-1111, "
        "IBAN DE89 3704 0044 0532 0130 00. Order 1234 5678 9012 3456 on 2024-05-01, 12 units."
    )
    out = redact_text(text)
    assert "[EMAIL]" in out and "jane.doe" not in out
    assert "[PHONE]" in out and "42 68" not in out
    assert "[CARD]" in out and "4111" not in out
    assert "[IBAN]" in out and "DE89" not in out
    assert "1234 5678 9012 3456" in out  # fails the Luhn check: not a card
    assert "2024-05-01" in out and "12 units" in out


def test_policies_apply_recursively_or_drop_bodies():
    body = {"messages": [{"role": "user", "content": ["a@b.co", {"text": "x@y.org"}]}]}
    redacted = apply_policy("redacted", body)
    assert redacted == {"messages": [{"role": "user", "content": ["[EMAIL]", {"text": "[EMAIL]"}]}]}
    assert apply_policy("metadata", body) is None
    assert apply_policy("full", body) is body


def test_the_strictest_policy_of_an_alias_wins():
    assert strictest(["full", "redacted"]) == "redacted"
    assert strictest(["redacted", "metadata", "full"]) == "metadata"
    assert strictest([]) == "full"


def test_the_length_bounds_of_cards_ibans_and_phones_are_exact():
    cases = {
        "card 4222222222222 ok": "card [CARD] ok",  # 13 digits, the shortest card
        "card 4111111111111111110 ok": "card [CARD] ok",  # 19 digits, the longest
        "ref 411111111117 ok": "ref [PHONE] ok",  # 12 Luhn-valid digits: not a card
        "card 4111 1111 1111 1112 ok": "card 4111 1111 1111 1112 ok",  # fails the Luhn check
        "NO93 8601 1117 947": "[IBAN]",  # 15 characters, the shortest IBAN
        "call 555 0147 now": "call [PHONE] now",  # 7 digits, the shortest phone number
        "code 12 34 56 now": "code 12 34 56 now",  # 6 digits: not a phone number
        "x 123456789012345 y": "x [PHONE] y",  # 15 digits, the longest (E.164)
        "x 1234567890123456 y": "x 1234567890123456 y",  # 16 digits, no Luhn: kept
    }
    assert {text: redact_text(text) for text in cases} == cases
