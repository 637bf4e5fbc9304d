"""Stored responses on PostgreSQL: written by the loop writer's batches, read by another worker."""

from __future__ import annotations

import os
import time
import uuid
from urllib.parse import urlsplit

import openai
import psycopg
import pytest
from django.db import connection

from gateway.tests.test_e2e_support import make_gateway

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the PostgreSQL loop writer needs PostgreSQL"
)


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory):
    server = urlsplit(os.environ["DATABASE_URL"])
    name = f"e2e_responses_{uuid.uuid4().hex[:8]}"
    admin = server._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        gw = make_gateway(
            simulator,
            tmp_path_factory.mktemp("gw-pg-responses"),
            DATABASE_URL=server._replace(path=f"/{name}").geturl(),
        )
        gw.start()
        yield gw
        gw.stop()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_stored_response_lands_in_postgresql_and_another_worker_chains_from_it(gateway):
    first_worker = openai.OpenAI(api_key=gateway.keys["alice"], base_url=gateway.url, max_retries=0)
    first = first_worker.responses.create(model="sim/gpt-4o", input="My name is Zora.")
    deadline = time.monotonic() + 5
    with psycopg.connect(gateway.env["DATABASE_URL"], autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT user_id, model FROM gateway_storedresponse WHERE id = %s", (first.id,)
            ).fetchall()
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert rows and rows[0][1] == "sim/gpt-4o"
    _, port = gateway.start()  # a second worker: it knows the response from the database only
    other = openai.OpenAI(
        api_key=gateway.keys["alice"], base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
    )
    assert other.responses.retrieve(first.id).output_text == first.output_text
    second = other.responses.create(
        model="sim/gpt-4o", input="And my name?", previous_response_id=first.id
    )
    assert second.output_text
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(
            api_key=gateway.keys["bob"], base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
        ).responses.retrieve(first.id)
