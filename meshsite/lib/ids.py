"""Unique ids for requests and quota reservations, without a system call each.

`uuid.uuid4()` reads the kernel's random source on every call: measurable at a
thousand calls a second. These ids need to be unique, not secret, so they come
from a generator seeded from the kernel once per process, and again in a forked
child (`os.register_at_fork`), so two workers never share a sequence.
"""

from __future__ import annotations

import os
import random

_generator = random.Random()


def _seed() -> None:
    _generator.seed(os.urandom(32))


_seed()
os.register_at_fork(after_in_child=_seed)


def unique_hex() -> str:
    """32 hex digits (128 random bits), like `uuid.uuid4().hex`."""
    return f"{_generator.getrandbits(128):032x}"
