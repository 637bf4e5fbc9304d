"""Unique ids for requests and quota reservations, without a system call each.

`uuid.uuid4()` reads the kernel's random source on every call: measurable at a
thousand calls a second. These ids need to be unique, not secret, so they come
from a generator seeded from the kernel once per process (and again after a
fork, so two workers never share a sequence).
"""

from __future__ import annotations

import os
import random

_pid = -1
_generator = random.Random()


def unique_hex() -> str:
    """32 hex digits (128 random bits), like `uuid.uuid4().hex`."""
    global _pid
    if _pid != os.getpid():
        _pid = os.getpid()
        _generator.seed(os.urandom(32))
    return f"{_generator.getrandbits(128):032x}"
