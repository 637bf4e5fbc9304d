"""A read that meets SQLite's lock held by another connection waits for it (`run_guarded`).

The lock is busy, not lost: closing the connection and answering 503 "database unreachable"
(what happened before) refused a call the database could serve a few milliseconds later.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from django.contrib.auth.models import User
from django.db import connection

from connections.dbguard import DatabaseUnavailable, run_guarded

pytestmark = pytest.mark.django_db(transaction=True)


def writer_holding_the_lock(seconds: float) -> threading.Thread:
    """Another connection of this process writes to auth_user and commits `seconds` later."""
    name = connection.settings_dict["NAME"]
    other = sqlite3.connect(name, uri=True, check_same_thread=False, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
        " is_staff, is_active, date_joined) VALUES ('', 0, 'lock', '', '', '', 0, 1, '2026-12-06')"
    )
    done = threading.Timer(seconds, lambda: (other.execute("COMMIT"), other.close()))
    done.start()
    return done


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's own lock")
def test_a_read_waits_for_a_short_write_lock_instead_of_answering_unavailable():
    User.objects.exists()  # this thread's connection is open (a reused one, as on the hot path)
    if "mode=memory" not in str(connection.settings_dict["NAME"]):
        pytest.skip("a file database waits for the lock in SQLite itself (its busy timeout)")
    done = writer_holding_the_lock(0.2)
    try:
        assert run_guarded(lambda: User.objects.filter(username="lock").exists()) is True
    finally:
        done.join()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's own lock")
def test_a_lock_held_past_the_bound_is_still_unavailable(monkeypatch):
    from connections import dbguard

    User.objects.exists()
    if "mode=memory" not in str(connection.settings_dict["NAME"]):
        pytest.skip("a file database waits for the lock in SQLite itself (its busy timeout)")
    monkeypatch.setattr(dbguard, "BUSY_SECONDS", 0.05)
    done = writer_holding_the_lock(0.5)
    try:
        with pytest.raises(DatabaseUnavailable):
            run_guarded(lambda: User.objects.filter(username="lock").exists())
    finally:
        done.join()
