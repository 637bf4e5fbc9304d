"""Pointing a connection elsewhere clears its secrets unless they are typed again."""

from __future__ import annotations

import pytest

from connections import services
from connections.services.discovery import connection_test, models_discover
from connections.tests.upstreams import RawUpstream, models_answer

OLD_KEY = "old-secret-for-the-first-host"  # not shaped like a real key: no scanner alarm


@pytest.fixture
def hosts():
    first, second = (
        RawUpstream(lambda r, n: models_answer()),
        RawUpstream(lambda r, n: models_answer()),
    )
    yield first, second
    first.close()
    second.close()


def authorizations(upstream: RawUpstream) -> list[str]:
    return [r.headers.get("authorization", "") for r in upstream.requests]


@pytest.mark.django_db
def test_a_new_base_url_without_the_secret_never_receives_the_old_one(cast, hosts):
    first, second = hosts
    connection = services.connection_create(
        actor=cast.admin,
        secrets={"api_key": OLD_KEY},
        name="Repointed",
        slug="repointed",
        kind="openai_compatible",
        base_url=first.base_url,
    )
    assert connection_test(connection=connection).ok
    assert authorizations(first) == [f"Bearer {OLD_KEY}"]
    services.connection_update(connection=connection, actor=cast.admin, base_url=second.base_url)
    connection.refresh_from_db()
    assert connection.get_secrets() == {} and not connection.enabled
    connection_test(connection=connection)
    models_discover(connection=connection, actor=cast.admin)
    assert all(OLD_KEY not in value for value in authorizations(second))
    # Typed again in the same change: kept, and the connection stays as it was.
    services.connection_update(
        connection=connection,
        actor=cast.admin,
        base_url=first.base_url,
        secrets={"api_key": "sk-new-secret-typed-again"},
    )
    connection.refresh_from_db()
    assert connection.get_secrets() == {"api_key": "sk-new-secret-typed-again"}


@pytest.mark.django_db
def test_a_changed_endpoint_option_or_region_clears_the_aws_secrets(cast):
    connection = services.connection_create(
        actor=cast.admin,
        secrets={"aws_access_key_id": "AKIA" + "Y" * 16, "aws_secret_access_key": "z" * 40},
        name="Aws",
        slug="aws",
        kind="bedrock",
        region="us-east-1",
    )
    services.connection_update(
        connection=connection, actor=cast.admin, options={"cohere_input_type": "search_query"}
    )
    connection.refresh_from_db()
    assert connection.get_secrets() and connection.enabled  # not where it points: kept
    services.connection_update(connection=connection, actor=cast.admin, region="eu-west-3")
    connection.refresh_from_db()
    assert connection.get_secrets() == {} and not connection.enabled
