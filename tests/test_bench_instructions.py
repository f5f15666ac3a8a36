"""`scripts/bench --instructions`: instructions per request, counted under callgrind."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import bodies as B
from bench import instructions
from bench.procs import Processes, free_port, python
from bench.targets import start_http, stop_proxy


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
    argv = [
        "valgrind",
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
        bench = SimpleNamespace(bodies=bodies)
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
