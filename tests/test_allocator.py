"""The serving process keeps big freed blocks for the next answer instead of faulting in fresh pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable

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


@pytest.mark.parametrize(
    "env",
    [{"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, {"GLIBC_TUNABLES": "", "MALLOC_TRIM_THRESHOLD_": "0"}],
    ids=["tunable", "older-variable"],
)
def test_the_operators_own_thresholds_win(env: dict[str, str]) -> None:
    kept, faults = _churn(env)
    assert kept == "False"
    assert faults > 5000, "trim_threshold=0 gives every freed top block back, so each round faults again"


def test_other_malloc_tunables_leave_the_thresholds_to_the_proxy() -> None:
    kept, faults = _churn({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept == "True" and faults < 500


def test_serve_and_every_worker_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from allm_proxy import Engine, ProxyConfig
    from allm_proxy.config_codec import config_to_json
    from allm_proxy.server import runner, workers

    applied: list[str] = []

    def applies(where: str) -> Callable[[], bool]:
        def keep_answer_blocks() -> bool:
            applied.append(where)
            return True

        return keep_answer_blocks

    monkeypatch.setattr(runner, "keep_answer_blocks", applies("serve"))
    monkeypatch.setattr(workers, "keep_answer_blocks", applies("worker"))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    monkeypatch.setattr(workers, "setup_logging", lambda level, worker=False: None)  # this process's logging stays
    runner.run_server(Engine(), ProxyConfig())
    monkeypatch.setenv(workers.WORKER_CONFIG_VARIABLE, config_to_json(ProxyConfig()))
    workers.worker_app()
    assert applied == ["serve", "worker"]
