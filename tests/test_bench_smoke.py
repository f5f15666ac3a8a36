"""The benchmark harness itself (scripts/bench): a tiny run writes complete JSON lines and leaves no process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.serve_process import processes_mentioning

pytestmark = pytest.mark.slow  # the benchmark's subprocesses

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT_FIELDS = {
    "run",
    "kind",
    "target",
    "workload",
    "concurrency",
    "rps",
    "p50_ms",
    "p99_ms",
    "errors",
    "requests",
    "verify",
    "identical",
    "server_cpu_ms_per_req",
    "server_peak_rss_mb",
    "response_bytes",
    "gzip_responses",
}


def _bench(out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _records(out: Path) -> list[dict]:
    (jsonl,) = out.glob("bench-*.jsonl")
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


def test_tiny_run_writes_throughput_and_startup_records_for_direct_and_fake(tmp_path: Path) -> None:
    proc = _bench(
        tmp_path,
        "--targets",
        "direct,fake",
        "--workloads",
        "small",
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.2",
    )
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    records = _records(tmp_path)
    rows = {r["target"]: r for r in records if r["kind"] == "throughput"}
    assert set(rows) == {"direct", "fake"}, output
    for row in rows.values():
        assert row.keys() >= THROUGHPUT_FIELDS, sorted(THROUGHPUT_FIELDS - row.keys())
        assert row["errors"] == 0 and row["requests"] > 0 and row["rps"] > 0
        assert row["workload"] == "small" and row["concurrency"] == 2
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert rows["direct"]["identical"] is True and rows["direct"]["verify"] == "exact"
    assert rows["fake"]["ratio_to_direct"] > 0
    (startup,) = [r for r in records if r["kind"] == "startup"]
    assert startup["target"] == "fake" and startup["startup_ms"] > 0
    assert any(r["kind"] == "check" for r in records)
    assert "req/s" in output and "p99 ms" in output
    assert processes_mentioning(str(tmp_path)) == []


def test_interrupted_run_ends_every_process_it_started(tmp_path: Path) -> None:
    proc = _bench(
        tmp_path,
        "--targets",
        "direct",
        "--workloads",
        "small",
        "--concurrency",
        "2",
        "--duration",
        "30",
        "--warmup",
        "0",
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(processes_mentioning(str(tmp_path))) < 2:
            time.sleep(0.1)  # wait for the upstream and the load generator
        assert len(processes_mentioning(str(tmp_path))) >= 2
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired as exc:
            left = {}
            for pid in processes_mentioning(str(tmp_path)):
                with contextlib.suppress(OSError):  # it may end while we look
                    left[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()[:200]
            pytest.fail(f"no exit 20 s after SIGINT; it printed {exc.output!r}; still running: {left}")
        assert proc.returncode == 130
        deadline = time.monotonic() + 5
        while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_mentioning(str(tmp_path)) == []
    finally:
        # A failure above must not leave the run behind for the next test: each by its PID.
        for pid in processes_mentioning(str(tmp_path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
