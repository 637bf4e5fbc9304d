"""A connection holding a unique canary secret: the canary must never leave its ciphertext.

Every admin page of the connection and of its models, the actions' results, the
change log, the log output and every text column of every table are searched.
"""

import logging
import secrets

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection as db
from django.urls import reverse

from connections import services
from connections.models import LLM, ChangeEvent, Connection


@pytest.fixture
def canary():
    return "sk-canary-" + secrets.token_hex(16)


def all_text_in_database() -> list[tuple[str, str]]:
    """(table, value) for every non-null value of every column of every table."""
    found = []
    with db.cursor() as cursor:
        for table in db.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {db.ops.quote_name(table)}")
            for row in cursor.fetchall():
                found.extend((table, str(value)) for value in row if value is not None)
    return found


def assert_clean(text: str, canary: str, where: str) -> None:
    for needle in (canary, canary[len("sk-canary-") :]):
        assert needle not in text, f"the canary leaked into {where}"


KINDS = {
    "openai_compatible": {
        "secret": "api_key",
        "models": ("gpt-4o", "text-embedding-3-small"),
        "form": {"region": ""},
    },
    # Bedrock signs with the secret and sends the session token as a header.
    "bedrock": {
        "secret": "aws_secret_access_key",
        "models": ("anthropic.claude-3-haiku-20240307-v1:0", "amazon.titan-embed-text-v2:0"),
        "form": {"region": "us-east-1", "aws_access_key_id": "AKIA" + "CANARY0000000001"},
    },
}


def debug_everywhere(caplog, settings) -> None:
    """DEBUG on every logger but those the project's LOGGING pins higher.

    The pinned ones stay as configured: botocore at DEBUG prints request headers,
    X-Amz-Security-Token included (botocore's own behaviour), which is why the
    settings keep it at WARNING.
    """
    pinned = tuple(settings.LOGGING.get("loggers", {}))
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        if not any(name == p or name.startswith(p + ".") for p in pinned):
            caplog.set_level(logging.DEBUG, logger=name)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_canary_secret_appears_in_no_page_log_or_plaintext_column(
    client, cast, settings, simulator, canary, caplog, capsys, kind
):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    debug_everywhere(caplog, settings)
    secret_field = KINDS[kind]["secret"]
    client.force_login(cast.admin)
    pages: dict[str, str] = {}

    def get(name: str, url: str, **params) -> None:
        response = client.get(url, params, follow=True)
        assert response.status_code == 200, name
        pages[name] = response.content.decode()

    def post(name: str, url: str, data: dict, expect=(200,)) -> None:
        response = client.post(url, data, follow=True)
        assert response.status_code in expect, name
        pages[name] = response.content.decode()

    form = {
        "name": "Canary",
        "slug": "canary",
        "kind": kind,
        "base_url": simulator.openai_base if kind == "openai_compatible" else simulator.url,
        **KINDS[kind]["form"],
        "options": "{}",
        "enabled": "on",
        "timeout_seconds": "5",
        "max_retries": "0",
        "payload_policy": "full",
    }
    # Refused first (bad URL) with the canary typed in: the error page must not echo it.
    post(
        "add refused",
        reverse("admin:connections_connection_add"),
        {**form, "base_url": "ftp://x", secret_field: canary},
    )
    secrets_typed = {secret_field: canary}
    if kind == "bedrock":
        secrets_typed["aws_session_token"] = canary + "-token"
    post("add", reverse("admin:connections_connection_add"), {**form, **secrets_typed})
    connection = Connection.objects.get(slug="canary")
    assert connection.get_secrets()[secret_field] == canary  # it is there, encrypted
    # Its own models (the simulator refuses the canary key, so discovery cannot add them).
    for name in KINDS[kind]["models"]:
        llm = services.llm_create(actor=cast.admin, connection=connection, name=name)
        services.llm_grant(llm=llm, group=cast.marketing.group, actor=cast.admin)

    change = reverse("admin:connections_connection_change", args=[connection.pk])
    changelist = reverse("admin:connections_connection_changelist")
    get("connection changelist", changelist)
    get("connection search", changelist, q="canary")
    get("connection change", change)
    get("connection add", reverse("admin:connections_connection_add"))
    get("connection history", reverse("admin:connections_connection_history", args=[connection.pk]))
    get("connection delete", reverse("admin:connections_connection_delete", args=[connection.pk]))
    post("edit", change, {**form, "description": "edited", "timeout_seconds": "6"})
    selected = {ACTION_CHECKBOX_NAME: [connection.pk]}
    post("test action", changelist, {"action": "test_connection", **selected})
    post("discover action", changelist, {"action": "discover_models", **selected})
    assert "failed" in pages["test action"] and "failed" in pages["discover action"]
    post("delete selected", changelist, {"action": "delete_selected", **selected})

    llm_changelist = reverse("admin:connections_llm_changelist")
    get("llm changelist", llm_changelist, connection__id__exact=connection.pk)
    get("llm search", llm_changelist, q="canary")
    for llm in LLM.objects.filter(connection=connection):
        get(f"llm {llm.name}", reverse("admin:connections_llm_change", args=[llm.pk]))
        get(f"llm history {llm.name}", reverse("admin:connections_llm_history", args=[llm.pk]))
    post(
        "grant page",
        llm_changelist,
        {
            "action": "grant_to_groups",
            ACTION_CHECKBOX_NAME: list(connection.llms.values_list("pk", flat=True)),
        },
    )

    events = reverse("admin:connections_changeevent_changelist")
    get("change log", events)
    for event in ChangeEvent.objects.all():
        get(f"event {event.pk}", reverse("admin:connections_changeevent_change", args=[event.pk]))

    # The same secret replaced by a new canary, then the connection deleted through the admin.
    second = canary + "-2"
    post(
        "replace",
        change,
        {**form, "description": "edited", "timeout_seconds": "6", secret_field: second},
    )
    connection.refresh_from_db()
    assert connection.get_secrets()[secret_field] == second
    get("connection change after replace", change)
    get("event list after replace", events)

    for name, body in pages.items():
        assert_clean(body, canary, f"the page {name!r}")
    captured = capsys.readouterr()
    assert_clean(caplog.text, canary, "the log records")
    assert_clean(captured.out + captured.err, canary, "stdout/stderr")
    rows = all_text_in_database()
    assert any(table == "connections_connection" for table, _ in rows)
    for table, value in rows:
        assert_clean(value, canary, f"the table {table}")

    post(
        "delete",
        reverse("admin:connections_connection_delete", args=[connection.pk]),
        {"post": "yes"},
    )
    assert not Connection.objects.filter(slug="canary").exists()
    for table, value in all_text_in_database():
        assert_clean(value, canary, f"the table {table} after deletion")
    assert_clean(pages["delete"], canary, "the deletion page")
    assert_clean(caplog.text, canary, "the log records")
