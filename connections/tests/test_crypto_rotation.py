from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from connections import crypto, services
from connections.models import ChangeEvent, Connection


@pytest.fixture
def old_key(settings):
    key = Fernet.generate_key().decode()
    settings.MESHGATE_ENCRYPTION_KEYS = [key]
    return key


def make_connection(secret: str) -> Connection:
    connection = Connection(name="Rotating", slug="rot", kind=Connection.Kind.OPENAI)
    connection.set_secrets({"api_key": secret})
    connection.save()
    return connection


def stored(connection: Connection) -> Connection:
    return Connection.objects.get(pk=connection.pk)


def test_secrets_are_stored_encrypted_and_read_back(db, old_key):
    connection = make_connection("sk-plain-value-1")
    assert "sk-plain-value-1" not in stored(connection).secrets_ciphertext
    assert stored(connection).get_secrets() == {"api_key": "sk-plain-value-1"}


def test_old_rows_decrypt_with_new_and_old_keys_before_rotation_and_new_alone_after(
    db, old_key, settings, django_user_model
):
    django_user_model.objects.create_superuser("admin", "admin@example.com", "x")
    connection = make_connection("sk-rotate-me-42")
    new_key = Fernet.generate_key().decode()
    before = stored(connection).secrets_ciphertext

    settings.MESHGATE_ENCRYPTION_KEYS = [new_key]
    with pytest.raises(crypto.SecretDecryptionError):
        stored(connection).get_secrets()

    settings.MESHGATE_ENCRYPTION_KEYS = [new_key, old_key]
    assert stored(connection).get_secrets() == {"api_key": "sk-rotate-me-42"}
    out = StringIO()
    call_command("rotate_encryption_key", "--actor", "admin", stdout=out)
    assert "1 connection(s)" in out.getvalue()
    after = stored(connection).secrets_ciphertext
    assert after != before
    assert "sk-rotate-me-42" not in after

    settings.MESHGATE_ENCRYPTION_KEYS = [new_key]
    assert stored(connection).get_secrets() == {"api_key": "sk-rotate-me-42"}
    settings.MESHGATE_ENCRYPTION_KEYS = [old_key]
    with pytest.raises(crypto.SecretDecryptionError):
        stored(connection).get_secrets()

    (event,) = ChangeEvent.objects.filter(event_type=ChangeEvent.Type.KEY_ROTATED)
    assert event.actor.username == "admin"
    assert event.details == {"connections": 1, "keys_configured": 2}
    assert new_key not in str(event.details) and old_key not in str(event.details)


def test_rotation_without_the_old_key_fails_and_changes_nothing(db, old_key, settings):
    connection = make_connection("sk-keep-me")
    before = stored(connection).secrets_ciphertext
    settings.MESHGATE_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError) as info:
        call_command("rotate_encryption_key", stdout=StringIO())
    assert old_key not in str(info.value)
    assert stored(connection).secrets_ciphertext == before
    assert not ChangeEvent.objects.exists()


def test_the_rotation_service_records_the_acting_user(cast):
    assert services.encryption_key_rotate(actor=cast.admin) == 1
    assert ChangeEvent.objects.get().actor == cast.admin
    assert cast.connection.get_secrets() == {"api_key": "sim-secret-key-not-real"}


def test_a_connection_whose_key_was_lost_reports_it_and_can_be_given_new_secrets(
    cast, settings, client
):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    settings.MESHGATE_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    result = services.connection_test(connection=cast.connection)
    assert not result.ok and "cannot be decrypted" in result.message
    assert not services.models_discover(connection=cast.connection, actor=cast.admin).ok
    # Settings still editable, then the secret typed again.
    services.connection_update(connection=cast.connection, actor=cast.admin, timeout_seconds=3)
    services.connection_set_secrets(
        connection=cast.connection, actor=cast.admin, secrets={"api_key": "typed-again"}
    )
    assert stored(cast.connection).get_secrets() == {"api_key": "typed-again"}
