"""The gateway's process state is one object (`gateway.runtime`): a fresh one replaces the old
one in the versioning registry, and the signals of an admin's change still reach the object in
place (a revoked key refused, a withdrawn grant refused)."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from guardian.shortcuts import remove_perm

from connections import versioning
from gateway import auth, directory, runtime
from gateway.errors import GatewayError
from gateway.keys import apikey_create, apikey_revoke

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_fresh_runtime_takes_the_old_ones_place_in_the_registry(gateway_runtime):
    old = gateway_runtime
    assert runtime.current is old
    assert {id(old.keys), id(old.catalog)} <= {id(memo) for memo in versioning.memos.memos}
    new = runtime.start()
    held = {id(memo) for memo in versioning.memos.memos}
    assert runtime.current is new and new is not old
    assert id(old.keys) not in held and id(old.catalog) not in held
    assert id(new.keys) in held and id(new.catalog) in held


def test_what_a_runtime_learns_stays_in_it(cast):
    key, raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="t")
    async_to_sync(auth.authenticate)(f"Bearer {raw}".encode())
    async_to_sync(directory.snapshot)()
    state = runtime.current
    assert len(state.keys.data) == 1 and "snapshot" in state.catalog.data
    assert list(state.touched) == [key.pk]
    fresh = runtime.start()
    assert fresh.keys.data == {} and fresh.catalog.data == {} and fresh.touched == {}


def test_a_revoked_key_is_refused_by_the_running_runtime(cast, settings):
    settings.MESHGATE_CACHE_CHECK_SECONDS = 0
    key, raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="t")
    header = f"Bearer {raw}".encode()
    assert async_to_sync(auth.authenticate)(header).user_id == cast.alice.pk
    apikey_revoke(api_key=key, actor=cast.admin)
    with pytest.raises(GatewayError) as refused:
        async_to_sync(auth.authenticate)(header)
    assert refused.value.status == 401


def test_a_withdrawn_grant_is_refused_by_the_running_runtime(cast, settings):
    settings.MESHGATE_CACHE_CHECK_SECONDS = 0

    def targets() -> list[str]:
        async def go() -> list[str]:
            snap = await directory.snapshot()
            user = await directory.user_info(cast.bob.pk)
            return [
                t.mesh_id
                for t in directory.resolve(snap, user, "chat-default", "chat.completions")[1]
            ]

        return async_to_sync(go)()

    assert targets() == ["sim/gpt-4o-mini"]
    remove_perm("connections.use_llm", cast.finance.group, cast.gpt4o_mini)
    with pytest.raises(GatewayError) as refused:
        targets()
    assert refused.value.status == 404
