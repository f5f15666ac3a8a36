"""`scripts/bench --instructions`: instructions per request, counted under callgrind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import bodies as B
from bench import instructions
from bench.procs import Processes, free_port, python
from bench.targets import start_http, stop_proxy
from tests.support.serve_process import processes_mentioning

ROOT = Path(__file__).resolve().parent.parent


class _Emitted(SimpleNamespace):
    def emit(self, record: dict[str, Any], *, show: bool = True) -> dict[str, Any]:
        self.records.append(record)
        return record


def test_the_table_and_the_checks_give_each_count_as_a_ratio() -> None:
    counted = {
        ("passthrough", "small"): 3.0e6,
        ("passthrough-then", "small"): 6.0e6,
        ("reference", "small"): 4.0e6,
        ("passthrough", "large"): 8.0e6,
        ("reference", "large"): 40.0e6,
    }
    text = instructions.table(counted, ["passthrough", "passthrough-then", "reference"])
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in text.splitlines()[2:]}
    assert rows[("passthrough", "small")] == ["3.00", "0.75", "0.50"]
    assert rows[("passthrough", "large")] == ["8.00", "0.20", "-"]  # then measured no large
    assert rows[("reference", "small")] == ["4.00", "-", "-"]
    bench = _Emitted(records=[])
    checks = instructions._checks(bench, counted)  # type: ignore[arg-type]
    assert [(c["name"].rsplit("/ ", 1)[1], c["value"], c["ok"]) for c in checks] == [
        ("reference's", 0.75, False),
        ("then's", 0.5, True),
    ]
    assert bench.records == checks


@pytest.mark.slow  # a server under valgrind
@pytest.mark.skipif(instructions.callgrind() is None, reason="needs valgrind: apt-get install valgrind")
def test_a_count_is_per_request_and_repeats(tmp_path: Path) -> None:
    """The bench upstream under callgrind: counted twice over different numbers of requests, the
    instructions per request agree, so the zero and the dump bracket exactly the counted requests."""
    bodies = B.build(tmp_path / "bodies")
    out = tmp_path / "callgrind-upstream.out"
    port = free_port()
    valgrind = instructions.callgrind()
    assert valgrind is not None
    argv = [
        valgrind,
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        python(),
        "-m",
        "bench.upstream",
        "--bodies",
        str(bodies.root),
        "--port",
        str(port),
    ]
    procs = Processes(tmp_path / "logs")
    try:
        server = start_http(
            procs,
            "upstream",
            argv,
            port,
            cpus=None,
            env=dict(os.environ),
            probe=bodies.request_spec("small"),
            timeout=instructions.STARTUP_TIMEOUT,
            what="the bench upstream",
        )
        assert server.ok, server.probe_error
        bench = SimpleNamespace(bodies=bodies, time_left=lambda what: True)
        crashed: list[str] = []
        few = instructions._count(bench, server, out, "small", 5, 10, crashed)  # type: ignore[arg-type]
        many = instructions._count(bench, server, out, "small", 0, 40, crashed)  # type: ignore[arg-type]
        assert crashed == []
        assert few is not None and many is not None
        assert few > 10_000 and abs(many - few) / few < 0.15, (few, many)
        assert not list(tmp_path.glob("callgrind-upstream.out.*"))  # each dump read, then removed
        stop_proxy(procs, server, timeout=60)
    finally:
        procs.close()


@pytest.mark.slow  # two servers under valgrind, about 45 s
@pytest.mark.skipif(instructions.callgrind() is None, reason="needs valgrind: apt-get install valgrind")
def test_a_quick_run_counts_both_proxies_and_leaves_no_process(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.run", "--instructions", "--quick", "--workloads", "small"]
    ran = subprocess.run(
        [*command, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (jsonl,) = tmp_path.glob("bench-*.jsonl")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    counts = {r["target"]: r for r in records if r["kind"] == "instructions"}
    assert sorted(counts) == ["passthrough", "reference"]
    assert all(r["workload"] == "small" and r["requests"] == 30 for r in counts.values())
    assert all(r["instructions_per_request"] > 1e6 for r in counts.values())  # a whole request, not a wake-up
    (check,) = [r for r in records if r["kind"] == "check"]  # no --then: only the reference's
    ratio = counts["passthrough"]["instructions_per_request"] / counts["reference"]["instructions_per_request"]
    assert check["value"] == round(ratio, 2)
    assert "pass-through instructions/req small C=1 / reference's" in ran.stdout
    assert processes_mentioning(str(tmp_path)) == []
