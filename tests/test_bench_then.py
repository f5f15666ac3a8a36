"""`scripts/bench --then REV` measures that revision's own build, and a recording sends each request once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bodies as B
from bench.procs import Processes
from bench.targets import exported_proxy, start_upstream, upstream_served

ROOT = Path(__file__).resolve().parent.parent


def test_then_runs_the_revisions_own_allm_proxy_not_the_checkout(tmp_path: Path) -> None:
    command = exported_proxy("HEAD", tmp_path)
    (tree,) = tmp_path.glob("then-*")
    assert (tree / "allm_proxy" / "cli.py").exists() and not (tree / ".git").exists()
    # Run from the repository root, where `-c` would otherwise import the checkout's allm_proxy.
    probe = [
        *command[:-1],
        command[-1].replace("from allm_proxy.cli import main; main()", "print(allm_proxy.__file__)"),
    ]
    ran = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().startswith(str(tree.resolve()))
    assert exported_proxy("HEAD", tmp_path) == command  # exported once, then reused


def test_then_names_a_revision_git_does_not_know(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="git does not know the revision 'no-such-rev'"):
        exported_proxy("no-such-rev", tmp_path)


def test_a_bounded_load_sends_exactly_max_requests_calibration_included(tmp_path: Path) -> None:
    """A recording of N requests must hold each once: a second copy makes its replay take a cursor."""
    bodies = B.build(tmp_path / "bodies")
    procs = Processes(tmp_path / "logs")
    upstream = start_upstream(procs, bodies, cpus=None)
    try:
        request = {
            "method": "POST",
            "path": "/v1/images/generations",
            "content_type": "application/json",
            "body_file": str(bodies.request("small")),
        }
        spec = tmp_path / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "port": upstream.port,
                    "requests": [request, request],
                    "concurrency": 1,
                    "duration": 30,
                    "max_requests": 2,
                    "verify": "status",
                }
            )
        )
        ran = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", str(spec)], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["completed"] == 2
        assert upstream_served(upstream) == 2
    finally:
        procs.close()
        if upstream.proc.stdout is not None:
            upstream.proc.stdout.close()


def test_rounds_judge_each_check_by_its_median() -> None:
    from bench import report

    name = "replay small C=16 / direct"

    def run(value: float | None) -> list[dict]:
        return [{"kind": "check", "name": name, "goal": ">= 0.35x", "value": value, "issue": 15}]

    (judged,) = report.median_checks([run(0.2), run(0.5), run(0.4), run(None)])
    assert judged["value"] == 0.4 and judged["ok"] is True  # the median of the rounds that measured it
    assert judged["each"] == "0.20 0.50 0.40 -"
    table = report.checks_table([judged])
    assert "median" in table and "each round" in table and "0.20 0.50 0.40 -" in table
