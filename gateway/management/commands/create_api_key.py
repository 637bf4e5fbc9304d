"""`manage.py create_api_key --user U --department D --purpose P [--expires DAYS]`.

Prints the key alone on stdout (so `KEY=$(manage.py create_api_key ...)` works);
anything else goes to stderr with a non-zero exit.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from connections.models import Department
from gateway.keys import apikey_create


def positive_days(value: str) -> int:
    days = int(value)
    if days < 1:
        raise ValueError(value)
    return days


class Command(BaseCommand):
    help = "Create an API key for a user and print it (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Username of the key's owner.")
        parser.add_argument(
            "--department",
            required=True,
            help="Department (group name or cost-center code) charged for the key's calls.",
        )
        parser.add_argument("--purpose", required=True, help="What the key is for.")
        parser.add_argument(
            "--expires", type=positive_days, metavar="DAYS", help="Expire after DAYS days."
        )

    def handle(self, *args, user: str, department: str, purpose: str, expires, **options):
        owner = get_user_model().objects.filter(username=user, is_active=True).first()
        if owner is None:
            raise CommandError(f"No active user {user!r}.")
        charged = (
            Department.objects.filter(group__name=department).first()
            or Department.objects.filter(cost_center=department).first()
        )
        if charged is None:
            raise CommandError(f"No department {department!r}.")
        expires_at = timezone.now() + timedelta(days=expires) if expires else None
        try:
            _, raw_key = apikey_create(
                owner=owner, department=charged, purpose=purpose, expires_at=expires_at
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages))
        self.stdout.write(raw_key)
