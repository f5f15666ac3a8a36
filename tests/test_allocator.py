"""The serving process keeps big freed blocks for the next answer instead of faulting in fresh pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")

# Answer-sized blocks made and freed, as a pass-through does per request; prints the page faults it took.
_CHURN = """
import resource, sys
from allm_proxy.server.allocator import keep_answer_blocks
print(keep_answer_blocks())
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(500):
    answer = b"x" * 230_000
    chunk = b"y" * 300_000
    joined = answer + chunk
    del answer, chunk, joined
print(faults() - before)
"""


def _churn(env: dict[str, str]) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _CHURN],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    kept, faults = done.stdout.split()
    return kept, int(faults)


def test_answer_sized_blocks_are_reused_not_faulted_in_again() -> None:
    kept, faults = _churn({"GLIBC_TUNABLES": ""})
    assert kept == "True"
    # The first round grows the heap once (~130 pages); untuned glibc faults ~230 pages every round.
    assert faults < 500, f"{faults} page faults for 500 rounds of answer-sized blocks"


def test_the_operators_own_malloc_tunables_win() -> None:
    kept, faults = _churn({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert kept == "False"
    assert faults > 5000, "trim_threshold=0 gives every freed top block back, so each round faults again"
