"""Request and reservation ids: unique, and never shared by a forked worker."""

from __future__ import annotations

import os

from meshsite.lib import ids


def test_ids_are_32_hex_digits_and_do_not_repeat():
    seen = {ids.unique_hex() for _ in range(100_000)}
    assert len(seen) == 100_000
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in list(seen)[:100])


def test_a_forked_worker_does_not_continue_its_parents_sequence():
    ids.unique_hex()  # seeded in this process
    state = ids._generator.getstate()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a worker forked now would use first
        os.write(write, ids.unique_hex().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_first = os.read(read, 64).decode()
    ids._generator.setstate(state)
    assert child_first != ids.unique_hex()  # the parent's next id, from the same state
