"""The loop writer (PostgreSQL): audit writes from the event loop, against the real database.

Each test attaches an AuditWriter to its own loop, as the gateway's lifespan does,
and checks what PostgreSQL holds afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import uvloop
from django.db import connection

from audit import loopwriter
from audit.models import CallRecord
from audit.tests.test_writer import closing, opening
from audit.writer import AuditUnavailable, AuditWriter

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the loop writer serves PostgreSQL only"
    ),
]


@pytest.fixture
def writer():
    instance = AuditWriter()
    yield instance
    instance.stop()


def run_attached(writer: AuditWriter, body, loop_factory=None, attach=None):
    """Run `body(loop_writer)` on a new loop with `writer` attached to it, then detach."""

    async def main():
        await (attach or writer.attach_loop)()
        loop_writer = writer._loop_writer
        assert loop_writer is not None and loop_writer.usable
        try:
            return await body(loop_writer)
        finally:
            await writer.detach_loop()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def test_inserts_completions_and_key_touches_are_written_in_a_few_groups(writer, cast):
    from gateway.keys import apikey_create
    from gateway.lastused import apikey_touch
    from gateway.models import ApiKey

    api_key, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="loop")
    started = datetime(2026, 11, 27, 10, 30, 15, 123456, tzinfo=UTC)
    latest = datetime.now(UTC).replace(microsecond=0)

    async def call(index: int) -> int:
        pk = await writer.insert(
            opening(
                purpose=f"call {index}",
                started_at=started,
                streamed=index % 2 == 0,
                client_ip="2001:db8::1" if index == 3 else "10.0.0.7",
                request_body={"messages": [{"role": "user", "content": f"héllo {index}"}]},
                user_id=cast.alice.pk,
            )
        )
        writer.complete(pk, closing(latency_ms=index, cost=Decimal("0.0000123456")))
        apikey_touch(api_key.pk, latest - timedelta(seconds=index), writer=writer)
        return pk

    async def body(loop_writer):
        pks = await asyncio.gather(*(call(index) for index in range(100)))
        await writer.flush()
        return pks, loop_writer.groups_sent

    pks, groups = run_attached(writer, body)
    assert len(set(pks)) == 100
    assert CallRecord.objects.filter(pk__in=pks, outcome="ok").count() == 100
    # 100 inserts, 100 completions and 100 touches, in far fewer transactions; none
    # went through the writer thread.
    assert groups < 60
    assert writer.batches == 0
    record = CallRecord.objects.get(purpose="call 3")
    assert record.started_at == started
    assert record.streamed is False and record.client_ip == "2001:db8::1"
    assert record.request_body == {"messages": [{"role": "user", "content": "héllo 3"}]}
    assert record.latency_ms == 3 and record.cost == Decimal("0.0000123456")
    assert record.attempts == [{"llm": "sim/gpt-4o", "status": 200}]
    assert record.response_body == {"content": "hello"}
    assert record.input_price == Decimal("2.5") and record.user_id == cast.alice.pk
    assert CallRecord.objects.get(purpose="call 4").streamed is True
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == latest


def test_an_opened_record_is_committed_before_its_insert_returns(writer):
    async def body(_loop_writer):
        pk = await writer.insert(opening())
        # Another connection sees it at once: the insert's group committed.
        return pk, await asyncio.to_thread(_outcome_elsewhere, pk)

    pk, outcome = run_attached(writer, body)
    assert outcome == CallRecord.Outcome.INTERRUPTED
    assert CallRecord.objects.get(pk=pk).ended_at is None


def _outcome_elsewhere(pk: int) -> str:
    try:
        return CallRecord.objects.get(pk=pk).outcome
    finally:
        connection.close()


def test_one_failing_insert_does_not_sink_the_others_in_its_group(writer):
    duplicate = opening()

    async def body(_loop_writer):
        await writer.insert(duplicate)
        return await asyncio.gather(
            *(writer.insert(opening()) for _ in range(3)),
            writer.insert(dict(duplicate)),
            *(writer.insert(opening()) for _ in range(3)),
            return_exceptions=True,
        )

    results = run_attached(writer, body)
    assert isinstance(results[3], AuditUnavailable)
    assert all(isinstance(pk, int) for pk in results[:3] + results[4:])
    assert CallRecord.objects.count() == 7


def test_a_value_the_database_cannot_take_fails_its_insert_alone(writer):
    async def body(loop_writer):
        pid = loop_writer._pgconn.backend_pid
        results = await asyncio.gather(
            writer.insert(opening(purpose="fine")),
            writer.insert(opening(user_agent="lone \ud800 surrogate")),
            writer.insert(opening(purpose="also fine")),
            return_exceptions=True,
        )
        return results, loop_writer._pgconn.backend_pid == pid

    results, same_connection = run_attached(writer, body)
    assert isinstance(results[1], AuditUnavailable)
    assert all(isinstance(pk, int) for pk in (results[0], results[2]))
    assert same_connection  # a bad value is not a broken connection
    assert sorted(CallRecord.objects.values_list("purpose", flat=True)) == ["also fine", "fine"]


def test_nul_characters_are_recorded_as_replacement_characters(writer):
    """PostgreSQL's text and jsonb cannot hold NUL: the call is still recorded."""
    prompt = {"messages": [{"role": "user", "content": "a\x00b", "name\x00": ["\x00"]}]}

    async def body(_loop_writer):
        pk = await writer.insert(opening(user_agent="agent\x00", request_body=prompt))
        writer.complete(pk, closing(response_body={"content": "c\x00d"}))
        return pk

    record = CallRecord.objects.get(pk=run_attached(writer, body))
    assert record.user_agent == "agent\ufffd"
    assert record.request_body == {
        "messages": [{"role": "user", "content": "a\ufffdb", "name\ufffd": ["\ufffd"]}]
    }
    assert record.response_body == {"content": "c\ufffdd"}


def test_an_unwritable_trail_refuses_the_insert_and_recovers(writer):
    table = CallRecord._meta.db_table

    def block(on: bool) -> None:
        with connection.cursor() as cursor:
            if on:
                cursor.execute(
                    f"ALTER TABLE {table} ADD CONSTRAINT no_writes CHECK (false) NOT VALID"
                )
            else:
                cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT no_writes")
        connection.close()

    async def body(_loop_writer):
        await writer.insert(opening())  # connected and prepared before the table changes
        await asyncio.to_thread(block, True)
        try:
            refused = await asyncio.gather(writer.insert(opening()), return_exceptions=True)
        finally:
            await asyncio.to_thread(block, False)
        return refused[0], await writer.insert(opening())

    refused, later = run_attached(writer, body)
    assert isinstance(refused, AuditUnavailable)
    assert CallRecord.objects.filter(pk=later).exists()
    assert CallRecord.objects.count() == 2


@pytest.mark.parametrize("loop_factory", [None, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_lost_connection_hands_its_work_to_the_thread_and_reconnects(
    writer, monkeypatch, loop_factory
):
    monkeypatch.setattr(loopwriter, "RECONNECT_SECONDS", 0.2)

    async def body(loop_writer):
        first = await writer.insert(opening(purpose="before"))
        pid = loop_writer._pgconn.backend_pid
        await asyncio.to_thread(_terminate, pid)
        # Sent on the dead connection: the thread takes it over and writes it.
        second = await writer.insert(opening(purpose="during"))
        writer.complete(second, closing())
        deadline = time.monotonic() + 10
        while not loop_writer.usable and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert loop_writer.usable, "the loop writer did not reconnect"
        assert loop_writer._pgconn.backend_pid != pid
        groups = loop_writer.groups_sent
        third = await writer.insert(opening(purpose="after"))
        await writer.flush()
        return first, second, third, loop_writer.groups_sent - groups

    first, second, third, groups = run_attached(writer, body, loop_factory)
    assert groups == 1  # the third went through the reconnected loop writer
    assert writer.batches >= 1  # the second through the thread
    records = {r.purpose: r for r in CallRecord.objects.all()}
    assert set(records) == {"before", "during", "after"}
    assert records["during"].pk == second and records["during"].outcome == "ok"
    assert records["before"].pk == first and records["after"].pk == third


def _terminate(pid: int) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        connection.close()


def test_calls_from_another_loop_use_the_thread(writer):
    async def body(loop_writer):
        groups = loop_writer.groups_sent
        other = await asyncio.to_thread(asyncio.run, writer.insert(opening(purpose="other")))
        return other, loop_writer.groups_sent - groups

    other, groups = run_attached(writer, body)
    assert groups == 0 and writer.batches == 1
    assert CallRecord.objects.get(pk=other).purpose == "other"


class _AnswerLosingProxy:
    """A TCP relay to PostgreSQL that can stop passing the server's answers on, then cut
    the connections: a connection lost after the server committed, before the answer came.

    `swallow` drops every answer from then on (the loop writer sends a group and its Sync
    at once). `swallow_from_commit` passes answers on until COMMIT's own, and drops that
    and the rest: the writer thread's psycopg pipeline sends its COMMIT only once it has
    read the statements' results."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.swallow = threading.Event()
        self.swallow_from_commit = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source, sink, answers: bool) -> None:
        pending = b""
        try:
            while data := source.recv(65536):
                if not answers or not (self.swallow.is_set() or self.swallow_from_commit.is_set()):
                    sink.sendall(data)  # as it comes (the handshake has a one-byte answer)
                    continue
                pending += data  # set while the connection was idle: at a message boundary
                # Whole protocol messages: a type byte, then a length that counts itself.
                while len(pending) >= 5 and len(pending) > (
                    length := int.from_bytes(pending[1:5], "big")
                ):
                    message, pending = pending[: 1 + length], pending[1 + length :]
                    if (
                        self.swallow_from_commit.is_set()
                        and message.startswith(b"C")
                        and (message[5:].startswith(b"COMMIT"))
                    ):
                        self.swallow.set()
                    if not self.swallow.is_set():
                        sink.sendall(message)
        except OSError:
            pass

    def cut(self) -> None:
        """Cut both sides: the client sees its connection lost, the server its client gone."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.fixture
def proxy():
    """A relay to the test database that can lose its answers; the settings' HOST and PORT,
    as they were, are in `proxy.direct`."""
    settings = connection.settings_dict
    direct = {key: settings[key] for key in ("HOST", "PORT")}
    relay = _AnswerLosingProxy(direct["HOST"] or "127.0.0.1", int(direct["PORT"] or 5432))
    relay.direct = direct
    yield relay
    settings.update(direct)
    relay.cut()


def _through(proxy: _AnswerLosingProxy) -> None:
    """New connections go through the proxy (those made already stay as they are)."""
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(proxy.port))


def _direct(proxy: _AnswerLosingProxy) -> None:
    connection.settings_dict.update(proxy.direct)


def _committed(request_id: str) -> bool:
    """Whether PostgreSQL holds the record (over a connection of its own)."""
    import psycopg

    params = connection.get_connection_params()
    libpq = {k: v for k, v in params.items() if k not in loopwriter._NOT_LIBPQ}
    with psycopg.connect(**libpq) as other:
        query = f"SELECT count(*) FROM {CallRecord._meta.db_table} WHERE request_id = %s"
        return other.execute(query, [request_id]).fetchone()[0] == 1


async def _until_committed(request_id: str) -> None:
    deadline = time.monotonic() + 10
    while not await asyncio.to_thread(_committed, request_id):
        assert time.monotonic() < deadline, "the insert was never committed"


def test_an_insert_committed_before_its_connection_broke_keeps_its_record(
    writer, monkeypatch, proxy
):
    """The loop writer's connection breaks after PostgreSQL committed an insert, before its
    answer came: the thread's retry takes the committed record, and the call goes on with
    one record instead of getting 503 on a duplicate request id."""
    monkeypatch.setattr(loopwriter, "RECONNECT_SECONDS", 60)  # not back through the proxy
    fields = opening(purpose="lost answer")

    async def attach_through_proxy():
        _through(proxy)
        try:
            await writer.attach_loop()  # the loop writer's connection goes through the proxy
        finally:
            _direct(proxy)  # the thread's does not

    async def body(loop_writer):
        await writer.insert(opening(purpose="before"))
        proxy.swallow.set()
        pending = writer.insert_soon(fields)
        await _until_committed(fields["request_id"])
        assert not pending.done()  # its answer is lost
        proxy.cut()
        pk = await asyncio.wait_for(asyncio.shield(pending), 10)
        writer.complete(pk, closing())
        await writer.flush()
        return pk

    pk = run_attached(writer, body, attach=attach_through_proxy)
    record = CallRecord.objects.get(request_id=fields["request_id"])
    assert record.pk == pk and record.outcome == "ok"
    assert CallRecord.objects.count() == 2


def test_the_threads_retry_after_a_lost_answer_keeps_the_committed_record(writer, proxy):
    """The same, on the writer thread's own connection: its batch fails with the connection,
    and the one-by-one retry takes the committed record."""
    fields = opening(purpose="lost answer")

    async def body():
        _through(proxy)
        await writer.insert(opening(purpose="before"))  # the thread connects through it
        _direct(proxy)  # its retries connect directly
        proxy.swallow_from_commit.set()
        pending = writer.insert_soon(fields)
        await _until_committed(fields["request_id"])
        assert not pending.done()
        proxy.cut()
        return await asyncio.wait_for(asyncio.shield(pending), 10)

    pk = asyncio.run(body())  # no loop writer attached: every write goes through the thread
    assert CallRecord.objects.get(request_id=fields["request_id"]).pk == pk
    assert CallRecord.objects.count() == 2
