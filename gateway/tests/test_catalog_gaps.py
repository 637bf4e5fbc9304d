"""`gateway.directory` in process, on the real database: what the catalog snapshot says.

Each test here kills mutants of `gateway/directory.py` that the door-level tests left alive
(see docs/MUTATION.md, catalog): a connection's payload policy reaching its models, an alias
described by its first usable target, a deactivated user granted nothing, and the exact 400s.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm

from connections.models import LLM, AliasTarget, Connection
from gateway import directory, runtime
from gateway.errors import GatewayError

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(cast):
    return cast  # the gateway's memory is fresh already (conftest's gateway_runtime)


def snap() -> directory.Snapshot:
    runtime.start()  # a fresh process's memory: what the database holds now
    return async_to_sync(directory.snapshot)()


def info(user) -> directory.UserInfo:
    return async_to_sync(directory.user_info)(user.pk)


def error_of(snapshot, user_info, model, endpoint) -> tuple:
    with pytest.raises(GatewayError) as raised:
        directory.resolve(snapshot, user_info, model, endpoint)
    e = raised.value
    return e.status, e.message, e.code, e.param


@pytest.mark.parametrize("policy", ["metadata", "redacted"])
def test_a_connections_payload_policy_reaches_its_models(catalog, policy):
    # Read from the enabled connections: reading the disabled ones (`enabled=False`) would
    # leave every model on the default, `full`, and store bodies the policy forbids.
    Connection.objects.filter(pk=catalog.connection.pk).update(payload_policy=policy)
    other = Connection.objects.create(
        name="Off", slug="off", kind=Connection.Kind.OPENAI_COMPATIBLE, enabled=False
    )
    Connection.objects.filter(pk=other.pk).update(payload_policy="full")
    targets = snap().llms
    assert {t.payload_policy for t in targets.values()} == {policy}
    assert targets["sim/gpt-4o"].payload_policy == policy


def test_an_alias_is_described_by_its_first_usable_target(catalog):
    # chat-default -> [gpt-4o (0), gpt-4o-mini (1)], and a summarization model appended (2),
    # each created at a different time: what /v1/models shows comes from the first usable one.
    summarizer = LLM.objects.create(
        connection=catalog.connection,
        name="summarizer",
        kind="summarization",
        approved=True,
        input_price=1,
        output_price=1,
        cached_input_price=1,
    )
    AliasTarget.objects.create(alias=catalog.alias, llm=summarizer, position=2)
    for group in (catalog.marketing.group, catalog.finance.group):
        assign_perm("connections.use_llm", group, summarizer)
    stamps = {
        catalog.gpt4o.pk: datetime(2021, 1, 1, tzinfo=UTC),
        catalog.gpt4o_mini.pk: datetime(2022, 1, 1, tzinfo=UTC),
        summarizer.pk: datetime(2023, 1, 1, tzinfo=UTC),
    }
    for pk, stamp in stamps.items():
        LLM.objects.filter(pk=pk).update(created_at=stamp)
    snapshot = snap()

    def alias_item(user):
        items = directory.usable_models(snapshot, info(user))
        return next(item for item in items if item["id"] == "chat-default")

    alice = alias_item(catalog.alice)  # granted all three
    assert alice["created"] == int(stamps[catalog.gpt4o.pk].timestamp())
    assert alice["meshgate"] == {
        "alias": True,
        "description": "Default chat model",
        "kind": "chat",
        "targets": ["sim/gpt-4o", "sim/gpt-4o-mini", "sim/summarizer"],
    }
    bob = alias_item(catalog.bob)  # not granted gpt-4o: gpt-4o-mini comes first for him
    assert bob["created"] == int(stamps[catalog.gpt4o_mini.pk].timestamp())
    assert bob["meshgate"]["targets"] == ["sim/gpt-4o-mini", "sim/summarizer"]
    # The same first usable target names the kind in the 400 for an endpoint none serves.
    assert error_of(snapshot, info(catalog.alice), "chat-default", "embeddings") == (
        400,
        "The model 'chat-default' is a chat model and cannot serve /v1/embeddings.",
        "model_not_supported",
        "model",
    )
    # Bob's usable targets are [gpt-4o-mini (chat), summarizer]: the first names the kind.
    assert error_of(snapshot, info(catalog.bob), "chat-default", "embeddings")[1] == (
        "The model 'chat-default' is a chat model and cannot serve /v1/embeddings."
    )
    name, targets = directory.resolve(snapshot, info(catalog.bob), "chat-default", "summaries")
    assert (name, [t.mesh_id for t in targets]) == ("chat-default", ["sim/summarizer"])


def test_a_deactivated_or_unknown_user_is_granted_nothing(catalog):
    snapshot = snap()
    assert info(catalog.alice) == directory.UserInfo(
        active=True,
        department_ids=frozenset({catalog.marketing.pk}),
        # Grants as given (the unapproved model too: `resolve` finds it in no snapshot).
        usable=frozenset(
            m.pk for m in (catalog.gpt4o, catalog.gpt4o_mini, catalog.embedding, catalog.unapproved)
        ),
    )
    User.objects.filter(pk=catalog.alice.pk).update(is_active=False)
    runtime.start()  # a fresh process's memory: what the database holds now
    nothing = directory.UserInfo(active=False, department_ids=frozenset(), usable=frozenset())
    assert info(catalog.alice) == nothing
    missing = User(pk=catalog.alice.pk + 1000)
    assert info(missing) == nothing
    snapshot = snap()
    assert directory.usable_models(snapshot, info(catalog.alice)) == []
    assert error_of(snapshot, info(catalog.alice), "sim/gpt-4o", "chat.completions") == (
        404,
        "The model 'sim/gpt-4o' does not exist or you do not have access to it.",
        "model_not_found",
        "model",
    )


def test_the_wrong_kind_and_a_bad_model_name_are_exact_400s(catalog):
    snapshot = snap()
    alice = info(catalog.alice)
    assert error_of(snapshot, alice, "sim/text-embedding-3-small", "chat.completions") == (
        400,
        "The model 'sim/text-embedding-3-small' is an embedding model and cannot serve "
        "/v1/chat/completions.",
        "model_not_supported",
        "model",
    )
    assert error_of(snapshot, alice, "sim/gpt-4o", "classifications") == (
        400,
        "The model 'sim/gpt-4o' is a chat model and cannot serve /v1/classifications.",
        "model_not_supported",
        "model",
    )
    for bad in ("", None, 42, ["sim/gpt-4o"]):
        assert error_of(snapshot, alice, bad, "chat.completions") == (
            400,
            "'model' must be a non-empty string.",
            "invalid_model",
            "model",
        ), bad


def test_users_are_remembered_until_the_bound_and_a_new_one_forgets_nobody(catalog):
    # Steady state reads nothing: a user seen once costs no query again, even after others
    # were seen (the memo is emptied only at _MAX_USERS entries, not on every new user).
    snap()
    for user in (catalog.alice, catalog.bob, catalog.charlie):
        info(user)
    with CaptureQueriesContext(connection) as queries:
        for user in (catalog.alice, catalog.bob, catalog.charlie):
            info(user)
    assert len(queries) == 0, [q["sql"] for q in queries.captured_queries]
