"""Random hex ids for the hot path: request ids.

A generator of their own, seeded from os.urandom: these ids name things and guard nothing, and
uuid4's getrandom() was a syscall on every request. Not the `random` module's shared generator,
which a test (or Hypothesis, for every example) reseeds, and the pytest plugin serves in the
test's process: ids would repeat, and the journal keys its entries by them. Mersenne Twister:
anyone who sees enough ids can predict the next ones, so nothing secret may come from here.
"""

from __future__ import annotations

import os
import random

_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # a forked child gets its own sequence


def random_hex() -> str:
    """128 random bits as 32 hex digits."""
    return f"{_ids.getrandbits(128):032x}"
