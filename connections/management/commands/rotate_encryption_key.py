"""Re-encrypt every stored secret under the primary key of MESHGATE_ENCRYPTION_KEYS."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from connections import services
from connections.crypto import SecretDecryptionError


class Command(BaseCommand):
    help = (
        "Re-encrypt every connection secret under the first key of MESHGATE_ENCRYPTION_KEYS. "
        "Put the new key first and keep the old ones after it; once this has run, the old keys "
        "can be removed."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--actor", help="Username recorded as having rotated the key (default: nobody)."
        )

    def handle(self, *args, **options) -> None:
        keys = settings.MESHGATE_ENCRYPTION_KEYS
        actor = None
        if options.get("actor"):
            actor = User.objects.filter(username=options["actor"]).first()
            if actor is None:
                raise CommandError(f"No user named {options['actor']!r}.")
        try:
            count = services.encryption_key_rotate(actor=actor)
        except SecretDecryptionError as exc:
            raise CommandError(
                f"{exc} Keep every old key after the new one in MESHGATE_ENCRYPTION_KEYS "
                "until the rotation has run. Nothing was changed."
            )
        self.stdout.write(
            f"Re-encrypted the secrets of {count} connection(s) under the primary key "
            f"({len(keys)} key(s) configured). The other keys may now be removed."
        )
