"""`{% load money %}{{ amount|usd }}`: the one way pages show an amount (audit.money.usd)."""

from __future__ import annotations

from django import template

from audit.money import usd as format_usd

register = template.Library()


@register.filter
def usd(value) -> str:
    return format_usd(value)
