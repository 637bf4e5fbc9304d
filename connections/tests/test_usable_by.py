from connections.models import LLM


def mesh_ids(user):
    return set(LLM.objects.usable_by(user).values_list("mesh_id", flat=True))


def test_alice_uses_what_marketing_was_granted_and_approved(cast):
    assert mesh_ids(cast.alice) == {"sim/gpt-4o", "sim/gpt-4o-mini", "sim/text-embedding-3-small"}


def test_bob_uses_only_what_finance_was_granted(cast):
    assert mesh_ids(cast.bob) == {"sim/gpt-4o-mini", "sim/text-embedding-3-small"}


def test_charlie_with_no_group_uses_nothing(cast):
    assert mesh_ids(cast.charlie) == set()


def test_a_superuser_gets_no_model_through_superuser_status(cast):
    assert mesh_ids(cast.admin) == set()


def test_a_disabled_connection_hides_its_models(cast):
    cast.connection.enabled = False
    cast.connection.save()
    assert mesh_ids(cast.alice) == set()


def test_an_inactive_user_uses_nothing(cast):
    cast.alice.is_active = False
    cast.alice.save()
    assert mesh_ids(cast.alice) == set()
