"""Both PostgreSQL pipelines behind the one interface, against a real server: groups answered in
order with their values, a failing statement failing its group alone, a closed pipeline refusing
to send, an unreachable server named alike. Runs where TEST_DATABASE_URL names a PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from psycopg.conninfo import conninfo_to_dict

from meshsite.lib import pgpipeline
from meshsite.lib.pgpipeline import StatementResult

URL = os.environ.get("TEST_DATABASE_URL", "")
pytestmark = pytest.mark.skipif(
    not URL.startswith("postgres"), reason="TEST_DATABASE_URL names no PostgreSQL"
)
PREPARED = {"add": "SELECT %s::int + %s::int", "fail": "SELECT 1 / %s::int"}


def run(implementation: str, body):
    groups: list[list[StatementResult]] = []
    broken: list[BaseException] = []

    async def main():
        done = asyncio.Event()

        def on_group(results: list[StatementResult]) -> None:
            groups.append(results)

        pipe = pgpipeline.pipeline(
            asyncio.get_running_loop(),
            on_group,
            done.set,
            broken.append,
            connect_seconds=5,
            implementation=implementation,
        )
        try:
            return await body(pipe, done)
        finally:
            pipe.close()

    return asyncio.run(main()), groups, broken


async def answered(pipe, done: asyncio.Event) -> None:
    while pipe.in_flight:
        done.clear()
        await asyncio.wait_for(done.wait(), 5)


@pytest.mark.parametrize("implementation", pgpipeline.IMPLEMENTATIONS)
def test_groups_are_answered_in_order_and_a_failure_stays_in_its_group(implementation):
    async def body(pipe, done):
        await pipe.connect(conninfo_to_dict(URL), ["SET application_name = 'pgpipeline'"], PREPARED)
        assert pipe.can_send and pipe.backend_pid > 0
        pipe.send_group([("add", [b"1", b"2"]), ("add", [b"40", b"2"])])
        pipe.send_group([("fail", [b"0"])])
        pipe.send_group([("add", [b"5", None])])
        await answered(pipe, done)

    _, groups, broken = run(implementation, body)
    assert broken == []
    assert [[r.ok for r in group] for group in groups] == [[True, True], [False], [True]]
    assert [r.value for r in groups[0]] == [b"3", b"42"] and groups[2][0].value is None
    assert groups[1][0].error.startswith("22012")  # division_by_zero


@pytest.mark.parametrize("implementation", pgpipeline.IMPLEMENTATIONS)
def test_a_closed_pipeline_refuses_to_send(implementation):
    async def body(pipe, done):
        await pipe.connect(conninfo_to_dict(URL), [], PREPARED)
        pipe.close()
        assert not pipe.can_send
        with pytest.raises(ConnectionError, match="the pipeline is closed"):
            pipe.send_group([("add", [b"1", b"1"])])

    run(implementation, body)


@pytest.mark.parametrize("implementation", pgpipeline.IMPLEMENTATIONS)
def test_a_server_that_is_not_there_is_a_connection_error(implementation):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it

    async def body(pipe, done):
        params = {**conninfo_to_dict(URL), "host": "127.0.0.1", "port": str(port)}
        with pytest.raises(ConnectionError, match="cannot connect to PostgreSQL"):
            await pipe.connect(params, [], PREPARED)

    run(implementation, body)
