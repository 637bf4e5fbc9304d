import pytest
from django.core.exceptions import ValidationError

from gateway.keys import apikey_create, apikey_revoke
from gateway.models import ApiKey, hash_key


def test_a_key_is_stored_as_a_hash_and_shown_once(cast):
    api_key, raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="tests")
    assert raw.startswith(api_key.prefix + "-")
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert stored.key_hash == hash_key(raw)
    assert raw not in {str(v) for v in ApiKey.objects.values_list(flat=False).get(pk=api_key.pk)}


def test_it_refuses_a_department_the_owner_is_not_in(cast):
    with pytest.raises(ValidationError):
        apikey_create(owner=cast.alice, department=cast.finance, purpose="tests")


def test_it_refuses_a_key_without_purpose(cast):
    with pytest.raises(ValidationError):
        apikey_create(owner=cast.alice, department=cast.marketing, purpose="  ")


def test_revoking_is_recorded_and_idempotent(cast):
    api_key, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="tests")
    apikey_revoke(api_key=api_key, actor=cast.admin)
    first = ApiKey.objects.get(pk=api_key.pk).revoked_at
    apikey_revoke(api_key=api_key, actor=cast.admin)
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at == first
    assert not ApiKey.objects.get(pk=api_key.pk).is_active
