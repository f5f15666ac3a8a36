"""The benchmark's yardsticks (issue 15): the reference target, ratios per cell, the LiteLLM peer, --memory."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bench import bodies as B
from bench import memory, peers, report
from bench.run import Bench, Plan, parse_args
from bench.targets import BENCH_CLIENT_KEY, Server

ROOT = Path(__file__).resolve().parent.parent


def _bench(out: Path, *args: str, timeout: float = 120) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout


def _records(out: Path) -> list[dict]:
    (jsonl,) = out.glob("bench-*.jsonl")
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


def test_reference_target_relays_upstream_bytes_and_every_cell_gets_its_ratio_to_it(tmp_path: Path) -> None:
    code, output = _bench(
        tmp_path,
        "--targets",
        "direct,reference,fake",
        "--workloads",
        "small",
        "--concurrency",
        "2",
        "--duration",
        "0.8",
        "--warmup",
        "0.1",
    )
    assert code == 0, output
    rows = {r["target"]: r for r in _records(tmp_path) if r["kind"] == "throughput"}
    assert set(rows) == {"direct", "reference", "fake"}, output
    reference, fake = rows["reference"], rows["fake"]
    assert reference["errors"] == 0 and reference["requests"] > 0
    assert reference["identical"] is True and reference["verify"] == "exact"  # streamed through untouched
    assert reference["ratio_to_direct"] == pytest.approx(reference["rps"] / rows["direct"]["rps"])
    assert fake["ratio_to_reference"] == pytest.approx(fake["rps"] / reference["rps"])
    assert fake["cpu_ratio_to_reference"] == pytest.approx(
        fake["server_cpu_ms_per_req"] / reference["server_cpu_ms_per_req"]
    )
    assert "ratio_to_reference" not in rows["direct"]
    assert "x ref" in output and "x litellm" not in output  # no peer, no peer column


def test_memory_scenario_at_tiny_sizes_prints_each_figure_and_exits_zero(tmp_path: Path) -> None:
    # The edit cell needs a window long enough for C=16 edits to complete even on a loaded machine.
    code, output = _bench(
        tmp_path, "--memory", "--memory-sizes", "0.05,0.2", "--duration", "2", "--warmup", "0.2", timeout=240
    )
    assert code == 0, output
    records = _records(tmp_path)
    figures = [r for r in records if r["kind"] == "memory"]
    assert [f["name"] for f in figures] == [
        "peak RSS, 16 concurrent 0.05 MB edits at C=16",
        "peak RSS, 4 concurrent 0.2 MB edits",
        "edit req/s at C=16 / reference's",
    ]
    assert all(f["value"] is not None and f["reference"] for f in figures), figures
    assert all(f["value"] > 0 for f in figures[:2]), figures
    assert [f["ok"] for f in figures[:2]] == [None, None]  # not the issue's sizes: no verdict
    assert figures[2]["ok"] in (True, False)
    cells = [r for r in records if r["kind"] == "memory_cell"]
    assert {(c["target"], c["concurrency"]) for c in cells} == {
        (t, c) for t in ("passthrough", "reference") for c in (16, 4)
    }
    assert all(c["errors"] == 0 and c["peak_rss_mb"] >= c["idle_rss_mb"] * 0.9 for c in cells), cells
    assert "PASS" in output or "FAIL" in output


def test_relate_gives_ratios_to_each_baseline_of_the_cell_and_none_to_direct() -> None:
    direct = {"target": "direct", "rps": 1000.0, "p50_ms": 0.5, "server_cpu_ms_per_req": 0.1}
    reference = {"target": "reference", "rps": 200.0, "p50_ms": 4.0, "server_cpu_ms_per_req": 4.0}
    litellm = {"target": "litellm", "rps": 40.0, "p50_ms": 20.0, "server_cpu_ms_per_req": 25.0}
    ours = {"target": "passthrough", "rps": 300.0, "p50_ms": 3.0, "server_cpu_ms_per_req": 3.0}
    baselines = {"direct": direct, "reference": reference, "litellm": litellm}
    for record in (direct, reference, ours):
        report.relate(record, baselines)
    assert (ours["ratio_to_direct"], ours["ratio_to_reference"], ours["ratio_to_litellm"]) == (0.3, 1.5, 7.5)
    assert ours["added_p50_ms"] == 2.5 and ours["cpu_ratio_to_reference"] == 0.75
    assert reference["ratio_to_litellm"] == 5.0 and "ratio_to_reference" not in reference
    assert not any(key.startswith("ratio_") for key in direct)


def test_issue_15_checks_read_ratios_within_the_run() -> None:
    cells = [
        {"kind": "throughput", "target": "reference", "workload": "small", "concurrency": 1, "added_p50_ms": 2.0},
        {
            "kind": "throughput",
            "target": "passthrough",
            "workload": "small",
            "concurrency": 1,
            "ratio_to_reference": 1.4,
            "added_p50_ms": 2.4,
            "cpu_ratio_to_reference": 0.5,
        },
        {
            "kind": "throughput",
            "target": "passthrough",
            "workload": "large",
            "concurrency": 16,
            "ratio_to_reference": 2.5,
            "ratio_to_litellm": 4.0,
        },
    ]
    checks = {c["name"]: c for c in report.evaluate(cells) if c["issue"] == 15}
    assert checks["pass-through small C=1 / reference"]["ok"] is True
    assert checks["pass-through added p50 small C=1 / reference's"]["value"] == pytest.approx(1.2)
    assert checks["pass-through added p50 small C=1 / reference's"]["ok"] is False
    assert checks["pass-through large C=16 / reference"]["ok"] is True
    assert checks["pass-through large C=16 / litellm"]["ok"] is False
    assert checks["pass-through CPU/req small C=1 / reference's"]["ok"] is True
    assert checks["replay small C=16 / direct"]["ok"] is None


def test_litellm_config_routes_every_workload_model_to_the_upstream_with_the_client_key_as_master(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load(peers.litellm_config(4321, tmp_path / "litellm.yaml").read_text())
    sent = {json.loads(B.small_request().body)["model"], json.loads(B.large_request().body)["model"]}
    routed = {m["model_name"]: m["litellm_params"] for m in config["model_list"]}
    assert sent <= set(routed)
    for name, params in routed.items():
        assert params["model"] == f"openai/{name}" and params["api_base"] == "http://127.0.0.1:4321/v1"
    assert config["general_settings"]["master_key"] == BENCH_CLIENT_KEY
    assert peers.litellm_env()["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


def test_litellm_installed_by_an_earlier_run_is_reused_without_running_pip(tmp_path: Path) -> None:
    venv = tmp_path / "litellm-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "litellm").write_text("#!/bin/sh\n")
    (venv / ".bench-installed").write_text("1.2.3\n")
    install = peers.ensure_litellm(venv, timeout=1)
    assert install.executable == venv / "bin" / "litellm" and install.version == "1.2.3"
    assert not install.installed_now and install.error is None


def test_a_peer_that_cannot_be_installed_is_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "ensure_litellm", lambda venv: peers.PeerInstall(None, error="no index reachable"))
    bench = Bench(Plan.from_args(parse_args(["--quick", "--peer", "litellm"])), tmp_path)
    ended = subprocess.Popen(["true"])
    ended.wait()
    try:
        assert "litellm" in bench.plan.targets
        bench.upstream = Server("direct", 1, ended)  # never reached: the peer is skipped first
        bench.target_litellm()
    finally:
        bench.close()
    (skipped,) = [r for r in bench.records if r["kind"] == "skipped"]
    assert skipped["what"] == "litellm" and skipped["why"] == "no index reachable"
    assert not [r for r in bench.records if r["kind"] == "throughput"]


def test_unknown_peer_is_refused_with_the_choices() -> None:
    with pytest.raises(SystemExit, match="choose from litellm"):
        Plan.from_args(parse_args(["--peer", "nginx"]))


def test_noise_png_is_a_valid_png_of_about_the_size_asked() -> None:
    data = B.noise_png(0.25)
    assert abs(len(data) - 0.25 * 2**20) < 0.02 * 2**20
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size[0] == image.size[1]


def test_memory_sizes_reject_what_the_proxy_would_refuse() -> None:
    assert memory.sizes("1,40") == (1.0, 40.0)
    for bad in ("40,1", "1", "1,60", "a,b"):
        with pytest.raises(SystemExit):
            memory.sizes(bad)
    assert isinstance(parse_args(["--memory"]), argparse.Namespace)
