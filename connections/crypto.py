"""Encryption of provider secrets at rest (Fernet, rotated with MultiFernet).

Keys come from settings.MESHGATE_ENCRYPTION_KEYS; the first one encrypts, all
of them decrypt. A decrypted secret lives only in memory, in the adapter that
uses it.
"""

from __future__ import annotations

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretDecryptionError(Exception):
    """A stored secret cannot be read with any configured key."""


@lru_cache(maxsize=4)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        # Never echo the key material itself.
        raise ImproperlyConfigured(
            "MESHGATE_ENCRYPTION_KEYS holds a value that is not a valid Fernet key."
        )


def fernet() -> MultiFernet:
    return _fernet_for(tuple(settings.MESHGATE_ENCRYPTION_KEYS))


def encrypt_json(data: dict[str, str]) -> str:
    return fernet().encrypt(json.dumps(data, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict[str, str]:
    if not token:
        return {}
    try:
        return json.loads(fernet().decrypt(token.encode()))
    except InvalidToken:
        raise SecretDecryptionError("Stored secret cannot be decrypted with the configured keys.")


def rotate_token(token: str) -> str:
    """Re-encrypt a token under the primary key (MultiFernet.rotate)."""
    if not token:
        return token
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError("Stored secret cannot be decrypted with the configured keys.")


def generate_key() -> str:
    return Fernet.generate_key().decode()
