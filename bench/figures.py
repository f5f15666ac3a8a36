"""The figures that are not a throughput cell: cassette lookup and load, and the load test of issue 6.

Cassette lookup: two cassettes of tiny interactions (10 and 1,000 distinct
prompts by default) are recorded through the proxy from the fake upstream,
then each is replayed at C=1 with requests spread at random over all its
interactions. A lookup that is O(1) in the number of interactions gives the
same CPU per request for both.

Cassette load: a cassette of 50 large interactions (50 different 1024x1024
PNGs) is recorded, then loaded through `allm_proxy.cassettes` in a fresh
process (`bench.cassette_load`): wall time, and peak memory above the
process's baseline compared with the size of the images. The time from a
replaying proxy's start to its first answer from that cassette is reported
too (it includes the load, wherever the cassette layer does it).

CPU per MB of response: the slope of CPU per request between the small and
large cells at the same concurrency.

Load test (issue 6): per proxy mode (fake, replay), 10,000 small requests at
C=64, twice. Errors, p99, peak RSS; RSS before, after the first and after the
second round. Growth between the rounds is the leak signal (allocator
high-water marks settle in the first round).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from . import bodies as B
from .procs import cpu_seconds, memory_kb, reset_peak, run_json
from .targets import fake_args, stop_proxy

if TYPE_CHECKING:
    from .run import Bench


def cassette_figures(bench: Bench) -> None:
    lookup(bench)
    if bench.time_left("cassette load"):
        cassette_load(bench)


def lookup(bench: Bench) -> None:
    for count in bench.plan.lookup_sizes:
        if not bench.time_left(f"replay lookup {count}"):
            return
        cassette = bench.work / f"lookup-{count}{bench.plan.cassette_suffix}"
        requests = [bench.request(B.tiny_request(i)) for i in range(count)]
        error = bench.record_cassette(cassette, requests, concurrency=4, name=f"lookup-{count}")
        if error:
            bench.skip(f"replay lookup {count}", error)
            continue
        server = bench.proxy(
            f"replay-lookup-{count}", bench.replay_args(cassette, f"lookup-{count}"), probe=B.tiny_request(0)
        )
        try:
            if not server.ok:
                bench.skip(f"replay lookup {count}", server.probe_error or "did not start")
                continue
            cpu_before = cpu_seconds(server.pid)
            result = bench.loadgen(
                f"lookup-{count}",
                server.port,
                requests,
                concurrency=1,
                warmup=bench.plan.warmup,
                duration=bench.plan.duration,
                verify="shape",
                order="random",
            )
            cpu_ms = (cpu_seconds(server.pid) - cpu_before) * 1000 / max(result.get("completed", 0), 1)
            bench.emit(
                {
                    "kind": "replay_lookup",
                    "interactions": count,
                    "cassette_mb": cassette.stat().st_size / 2**20,
                    "server_cpu_ms_per_req": cpu_ms,
                    "startup_ms": server.startup_ms,
                    **{
                        k: result.get(k)
                        for k in ("rps", "p50_ms", "p99_ms", "errors", "error_kinds", "requests", "fatal")
                    },
                }
            )
        finally:
            stop_proxy(bench.procs, server, timeout=30)


def cassette_load(bench: Bench) -> None:
    count = bench.plan.cassette_interactions
    cassette = bench.work / f"large-{count}{bench.plan.cassette_suffix}"
    requests = [bench.request(B.variant_request(i)) for i in range(count)]
    error = bench.record_cassette(cassette, requests, concurrency=2, name=f"large-{count}")
    record: dict[str, Any] = {
        "kind": "cassette_load",
        "interactions": count,
        "format": bench.plan.cassette_suffix.lstrip("."),
    }
    large = B.large_png()
    images = sum(len(B.with_text_chunk(large, f"bench variant {i}")) for i in range(count))
    record["images_mb"] = images / 2**20
    if error:
        bench.emit({**record, "file_mb": 0.0, "error": error})
        return
    record["file_mb"] = cassette.stat().st_size / 2**20
    loaded = run_json(
        bench.procs,
        "cassette-load",
        [sys.executable, "-m", "bench.cassette_load", str(cassette)],
        cpus=bench.server_cpus,
        timeout=300,
    )
    if loaded.get("fatal") or loaded.get("error"):
        record["error"] = loaded.get("fatal") or loaded.get("error")
    else:
        record.update(loaded)
        record["peak_ratio"] = loaded["peak_mb"] / record["images_mb"]
    server = bench.proxy(
        f"replay-large-{count}", bench.replay_args(cassette, f"large-{count}"), probe=B.variant_request(0)
    )
    try:
        record["replay_first_answer_ms"] = server.startup_ms if server.ok else None
        if server.ok:
            record["replay_proxy_rss_mb"] = memory_kb(server.pid)["VmRSS"] / 1024
        elif not record.get("error"):
            record["error"] = server.probe_error
    finally:
        stop_proxy(bench.procs, server, timeout=30)
    bench.emit(record)


def load_test(bench: Bench) -> None:
    for target in ("fake", "replay"):
        if not bench.time_left(f"load {target}"):
            return
        if target == "fake":
            args = fake_args()
        else:
            cassette = bench.ensure_replay_cassette()
            if cassette is None:
                continue
            args = bench.replay_args(cassette, "load-replay")
        server = bench.proxy(f"load-{target}", args, probe=B.small_request())
        try:
            if not server.ok:
                bench.skip(f"load {target}", server.probe_error or "did not start")
                continue
            _load_rounds(bench, target, server)
        finally:
            stop_proxy(bench.procs, server, timeout=30)


def _load_rounds(bench: Bench, target: str, server: Any, rounds: int = 2) -> None:
    request = [bench.workload_request("small")]
    concurrency = bench.plan.load_concurrency
    count = bench.plan.load_requests
    bench.loadgen(
        f"load-{target}-warm",
        server.port,
        request,
        concurrency=concurrency,
        duration=30,
        max_requests=max(200, count // 20),
    )
    time.sleep(0.5)
    rss_start = memory_kb(server.pid)["VmRSS"] / 1024
    reset_peak(server.pid)
    results, rss_after = [], []
    for index in range(rounds):
        result = bench.loadgen(
            f"load-{target}-{index + 1}",
            server.port,
            request,
            concurrency=concurrency,
            duration=120,
            max_requests=count,
        )
        results.append(result)
        time.sleep(0.5)
        rss_after.append(memory_kb(server.pid)["VmRSS"] / 1024)
    peak = memory_kb(server.pid)["VmHWM"] / 1024
    p99s = [r["p99_ms"] for r in results if r.get("p99_ms") is not None]
    bench.emit(
        {
            "kind": "load",
            "target": target,
            "workload": "small",
            "concurrency": concurrency,
            "rounds": rounds,
            "requests": count,
            "completed": [r.get("completed") for r in results],
            "errors": sum(int(r.get("errors", 1)) for r in results),
            "error_kinds": [r.get("error_kinds") for r in results],
            "p99_ms": max(p99s) if p99s else None,
            "p50_ms": [r.get("p50_ms") for r in results],
            "rps": sum(r.get("rps", 0.0) for r in results) / rounds,
            "peak_rss_mb": peak,
            "rss_start_mb": rss_start,
            "rss_after_mb": rss_after,
            "growth_kb_per_1k_requests": (rss_after[-1] - rss_after[0]) * 1024 / count * 1000 if rounds > 1 else None,
        }
    )


def cpu_per_mb(bench: Bench) -> None:
    """CPU per MB of response: the slope between the small and large cells at the same concurrency.

    Only where both cells carry the upstream's bodies (the fake provider's images are its own, and small).
    """
    for target in ("passthrough", "replay"):
        rows = {
            (r["workload"], r["concurrency"]): r
            for r in bench.records
            if r.get("kind") == "throughput" and r["target"] == target and r.get("server_cpu_ms_per_req") is not None
        }
        levels = sorted(
            {c for (w, c) in rows if w == "small"} & {c for (w, c) in rows if w == "large"}, key=lambda c: (c != 16, c)
        )
        if not levels:
            continue
        small, large = rows[("small", levels[0])], rows[("large", levels[0])]
        mb_small, mb_large = small["response_bytes"] / 1e6, large["response_bytes"] / 1e6
        slope = (large["server_cpu_ms_per_req"] - small["server_cpu_ms_per_req"]) / (mb_large - mb_small)
        bench.emit(
            {
                "kind": "cpu_per_mb",
                "target": target,
                "slope_ms_per_mb": slope,
                "intercept_ms": small["server_cpu_ms_per_req"] - slope * mb_small,
                "basis": f"small and large at C={levels[0]}",
            }
        )
