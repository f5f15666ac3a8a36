"""The benchmark command: ``scripts/bench`` (or ``python -m bench.run``). See docs/benchmarks.md.

Measures, side by side in one run: the fake upstream itself (``direct``, the
limit), a thin reference proxy in front of it (``reference``), with ``--peer
litellm`` LiteLLM's proxy in front of it (``litellm``), allm-proxy passing
through to it (``passthrough``), replaying a cassette recorded from it in the
same run (``replay``), and its fake provider (``fake``); then the cassette
figures (``cassette``) and, with ``--load``, the bounded load test of issue 6.
Every cell is also given as a ratio to direct, reference and litellm in the
same run. ``--memory`` runs the upload-memory scenario of issue 15 instead, and
``--instructions`` counts instructions per request under callgrind.
Prints a table and writes JSON lines to ``bench-results/bench-<time>.jsonl``. Every step is bounded in time and
count, and every process it starts is ended on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from . import bodies as B
from . import instructions, memory, peers, profile, report
from .options import DEFAULT_TARGETS, GROUPS, ROOT, parse_args
from .procs import (
    Processes,
    cpu_layout,
    run_json,
    set_cpus,
    tree_cpu_seconds,
    tree_memory_kb,
    tree_reset_peak,
)
from .targets import (
    PEERS,
    TARGETS,
    Scraper,
    Server,
    exported_proxy,
    fake_args,
    http_call,
    passthrough_args,
    record_args,
    replay_config,
    start_proxy,
    start_redis,
    start_reference,
    start_upstream,
    stop_proxy,
    upstream_served,
)

# The order of a run: the baselines (direct, reference, the peers) before what is compared with them.
# Alternating scraped/unscraped windows of the metrics target, and scrapes timed on the idle proxy after.
METRICS_ROUNDS = 3
METRICS_SCRAPES = 200
ORDER = ("direct", "reference", *PEERS, "passthrough", "replay", "fake", "workers", "metrics")
DEFAULT_CELLS: dict[str, tuple[int, ...]] = {"small": (1, 16), "large": (1, 16, 64), "edit": (16,)}


@dataclass
class Plan:
    """What one run measures, and for how long."""

    targets: list[str]
    cells: list[tuple[str, int]]
    warmup: float
    duration: float
    load_requests: int
    load_concurrency: int
    lookup_sizes: tuple[int, int]
    cassette_interactions: int
    time_limit: float
    log_level: str
    pin: bool
    upstream_gzip: bool
    profile: bool = False
    cassette_suffix: str = ".json"
    reuse_proxy: bool = False
    no_journal: bool = False  # The proxies run with --no-journal, to measure its cost
    peers: tuple[str, ...] = ()
    then: str | None = None  # a git revision: its allm-proxy is measured too (`--then`)
    quick: bool = False  # --quick: also the smaller counts of --memory and --instructions

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else list(DEFAULT_TARGETS)
        if args.load and "load" not in targets:
            targets.append("load")
        unknown = set(targets) - set(TARGETS) - set(GROUPS)
        if unknown:
            raise SystemExit(
                f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS + GROUPS)}"
                + ("; a peer is asked for with --peer" if unknown & set(PEERS) else "")
            )
        chosen_peers = tuple(dict.fromkeys(p.strip() for p in ",".join(args.peer or []).split(",") if p.strip()))
        if set(chosen_peers) - set(PEERS):
            raise SystemExit(f"unknown peers {sorted(set(chosen_peers) - set(PEERS))}; choose from {', '.join(PEERS)}")
        targets += [p for p in chosen_peers if p not in targets]
        workloads = [w.strip() for w in args.workloads.split(",")] if args.workloads else list(B.WORKLOADS)
        if set(workloads) - set(B.WORKLOADS):
            raise SystemExit(
                f"unknown workloads {sorted(set(workloads) - set(B.WORKLOADS))}; choose from {', '.join(B.WORKLOADS)}"
            )
        levels = [int(c) for c in args.concurrency.split(",")] if args.concurrency else None
        if levels and (min(levels) < 1 or max(levels) > 256):
            raise SystemExit("--concurrency takes values from 1 to 256")
        cells = [(w, c) for w in workloads for c in (levels or DEFAULT_CELLS[w])]
        quick = args.quick
        return cls(
            targets=targets,
            cells=cells,
            warmup=args.warmup if args.warmup is not None else (0.3 if quick else 1.0),
            duration=args.duration if args.duration is not None else (1.5 if quick else 4.0),
            load_requests=args.load_requests or (1000 if quick else 10_000),
            load_concurrency=64,
            lookup_sizes=(10, 200) if quick else (10, 1000),
            cassette_interactions=10 if quick else 50,
            time_limit=args.time_limit,
            log_level=args.proxy_log_level,
            pin=not args.no_pin,
            upstream_gzip=args.upstream_gzip,
            profile=args.profile,
            no_journal=args.no_journal,
            quick=quick,
            cassette_suffix="." + args.cassette_format,
            reuse_proxy=args.reuse_proxy,
            peers=chosen_peers,
            then=args.then,
        )


@dataclass
class Bench:
    plan: Plan
    out_dir: Path
    keep_work: bool = False
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.out_dir / f"bench-{self.stamp}.jsonl"
        self.work = Path(tempfile.mkdtemp(prefix=f"work-{self.stamp}-", dir=self.out_dir))
        self.procs = Processes(self.out_dir / f"bench-{self.stamp}.logs")
        self.server_cpus, self.client_cpus = cpu_layout(self.plan.pin)
        self.deadline = time.monotonic() + self.plan.time_limit
        # The cells of the baselines (direct, reference, the peers), for the ratios of every later cell.
        self.baselines: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
        self.upstream: Server | None = None
        self.bodies: B.BodySet | None = None
        self.replay_cassette: Path | None = None
        self._specs = 0
        self._then: list[str] | None = None

    # -- output -------------------------------------------------------------------

    def emit(self, record: dict[str, Any], *, show: bool = True) -> dict[str, Any]:
        record = {"run": self.stamp, **record}
        self.records.append(record)
        with self.jsonl.open("a") as out:
            out.write(json.dumps(record) + "\n")
        if show:
            if record["kind"] == "throughput":
                print("  " + report.throughput_line(record), flush=True)
            elif record["kind"] not in ("env", "check"):
                text = report.other_figures([record])
                if text:
                    print("  " + text, flush=True)
        return record

    def skip(self, what: str, why: str) -> None:
        self.emit({"kind": "skipped", "what": what, "why": why})

    def time_left(self, what: str) -> bool:
        if time.monotonic() < self.deadline:
            return True
        self.skip(what, f"--time-limit of {self.plan.time_limit:.0f} s reached")
        return False

    # -- the load generator ---------------------------------------------------------

    def request(self, spec: B.RequestSpec, expect: Path | None = None) -> dict[str, Any]:
        """A loadgen request entry for `spec` (big bodies go to a file)."""
        entry: dict[str, Any] = {"method": spec.method, "path": spec.path, "content_type": spec.content_type}
        if len(spec.body) > 4096:
            self._specs += 1
            path = self.work / f"body-{self._specs}.bin"
            path.write_bytes(spec.body)
            entry["body_file"] = str(path)
        else:
            entry["body"] = spec.body.decode()
        if expect is not None:
            entry["expect_file"] = str(expect)
        return entry

    def workload_request(self, workload: str) -> dict[str, Any]:
        assert self.bodies is not None
        spec = self.bodies.request_spec(workload)
        return {
            "method": spec.method,
            "path": spec.path,
            "content_type": spec.content_type,
            "body_file": str(self.bodies.request(workload)),
            "expect_file": str(self.bodies.response(B.WORKLOAD_RESPONSE[workload])),
        }

    def loadgen(
        self,
        name: str,
        port: int,
        requests: list[dict[str, Any]],
        *,
        concurrency: int,
        warmup: float = 0.0,
        duration: float = 5.0,
        max_requests: int = 0,
        verify: str = "auto",
        order: str = "cycle",
    ) -> dict[str, Any]:
        self._specs += 1
        spec_path = self.work / f"loadgen-{self._specs}.json"
        spec_path.write_text(
            json.dumps(
                {
                    "port": port,
                    "requests": requests,
                    "concurrency": concurrency,
                    "warmup": warmup,
                    "duration": duration,
                    "max_requests": max_requests,
                    "verify": verify,
                    "order": order,
                    "timeout": 30.0,
                }
            )
        )
        return run_json(
            self.procs,
            f"loadgen-{self._specs}-{name}",
            [sys.executable, "-m", "bench.loadgen", str(spec_path)],
            cpus=self.client_cpus,
            timeout=warmup + duration + 90,
            cwd=ROOT,
        )

    # -- measuring one cell ---------------------------------------------------------

    def measure(self, server: Server, target: str, workload: str, concurrency: int) -> dict[str, Any]:
        pid = server.pid
        upstream_before = upstream_served(self.upstream) if target == "replay" and self.upstream else None
        spy, spy_out = None, self.out_dir / f"bench-{self.stamp}.profiles" / f"{target}-{workload}-c{concurrency}.txt"
        if self.plan.profile:
            spy = profile.start(self.procs, pid, spy_out, self.plan.warmup + self.plan.duration + 0.5, self.client_cpus)
        tree_reset_peak(pid)
        cpu_before = tree_cpu_seconds(pid)
        # The `-scraped` targets have Prometheus' habit beside the load: GET /metrics every second.
        scraper = Scraper(server.port) if target.endswith("-scraped") else None
        try:
            result = self.loadgen(
                f"{target}-{workload}-c{concurrency}",
                server.port,
                [self.workload_request(workload)],
                concurrency=concurrency,
                warmup=self.plan.warmup,
                duration=self.plan.duration,
            )
        finally:
            if scraper is not None:
                scraper.stop()
        record: dict[str, Any] = {
            "kind": "throughput",
            "target": target,
            "workload": workload,
            "concurrency": concurrency,
            **result,
        }
        if spy is not None:
            record["profile"] = profile.finish(self.procs, spy, spy_out)
        if server.proc.poll() is None:
            cpu_used = tree_cpu_seconds(pid) - cpu_before
            memory = tree_memory_kb(pid)
            record["server_cpu_ms_per_req"] = cpu_used * 1000 / max(result.get("completed", 0), 1)
            record["server_peak_rss_mb"] = memory["VmHWM"] / 1024
            record["server_rss_mb"] = memory["VmRSS"] / 1024
        else:
            record["fatal"] = record.get("fatal") or f"the {target} server exited with {server.proc.returncode}"
        assert self.bodies is not None
        # What this target answered (the fake provider's images are not the upstream's).
        record["response_bytes"] = result.get("mean_body_bytes") or self.bodies.sizes()[B.WORKLOAD_RESPONSE[workload]]
        record["response_kb"] = record["response_bytes"] / 1024
        if upstream_before is not None and self.upstream is not None:
            after = upstream_served(self.upstream)
            record["upstream_requests"] = None if after is None else after - upstream_before
        report.relate(
            record,
            {
                name: cells[(workload, concurrency)]
                for name, cells in self.baselines.items()
                if (workload, concurrency) in cells
            },
        )
        if target in report.BASELINES:
            self.baselines.setdefault(target, {})[(workload, concurrency)] = record
        return self.emit(record)

    def measure_all(self, server: Server, target: str) -> None:
        """Every cell against one running server (the direct target: the upstream never restarts)."""
        for workload, concurrency in self.plan.cells:
            if not self.time_left(f"{target} {workload} C={concurrency}"):
                return
            self.measure(server, target, workload, concurrency)

    # -- proxies ----------------------------------------------------------------------

    def proxy(
        self,
        name: str,
        args: list[str],
        probe: B.RequestSpec | None,
        *,
        workers: int = 1,
        pinned: bool = True,
        command: list[str] | None = None,
        timeout: float = 30.0,
    ) -> Server:
        if self.plan.no_journal:
            args = [*args, "--no-journal"]
        cpus = self.server_cpus if pinned else None
        server = start_proxy(
            self.procs,
            name,
            args,
            cpus=cpus,
            log_level=self.plan.log_level,
            probe=probe,
            workers=workers,
            command=command,
            timeout=timeout,
        )
        return server

    def then_command(self) -> list[str] | None:
        """The command of `--then REV`'s allm-proxy; None (and the targets skipped, saying why) without it."""
        if self.plan.then is None:
            return None
        if self._then is None:
            try:
                self._then = exported_proxy(self.plan.then, self.out_dir)
            except (ValueError, subprocess.CalledProcessError) as exc:
                self.skip("passthrough-then", str(exc))
                self.plan.then = None
                return None
        return self._then

    def record_cassette(
        self, cassette: Path, requests: list[dict[str, Any]], *, concurrency: int, name: str
    ) -> str | None:
        """Record `requests` through a recording proxy into `cassette`; None when it worked, else why not."""
        assert self.upstream is not None
        server = self.proxy(f"record-{name}", record_args(self.upstream, cassette), probe=None)
        try:
            if not server.ok:
                return f"recording proxy did not start: {server.probe_error}"
            result = self.loadgen(
                f"record-{name}",
                server.port,
                requests,
                concurrency=concurrency,
                duration=120.0,
                max_requests=len(requests),
                verify="status",
            )
            if result.get("errors"):
                return (
                    f"recording answered errors {result.get('error_kinds')} "
                    f"{result.get('error_samples') or result.get('fatal', '')}"
                )
        finally:
            code = stop_proxy(self.procs, server, timeout=180)
        if not cassette.exists():
            return f"no cassette at {cassette} after the recording proxy stopped (exit {code})"
        return None

    def ensure_replay_cassette(self) -> Path | None:
        if self.replay_cassette is not None:
            return self.replay_cassette
        cassette = self.work / f"replay{self.plan.cassette_suffix}"
        workloads = sorted({w for w, _ in self.plan.cells} | {"small"}, key=B.WORKLOADS.index)
        error = self.record_cassette(
            cassette, [self.workload_request(w) for w in workloads], concurrency=1, name="replay"
        )
        if error:
            self.skip("replay", error)
            return None
        self.replay_cassette = cassette
        return cassette

    def counted_cassette(self) -> Path | None:
        """Each small request recorded twice: a replay must then count its position in the state store
        on every request (a key with one recording and repeats allowed needs no cursor at all)."""
        cassette = self.work / f"replay-counted{self.plan.cassette_suffix}"
        request = self.workload_request("small")
        error = self.record_cassette(cassette, [request, request], concurrency=1, name="replay-counted")
        if error:
            self.skip("replay-counted", error)
            return None
        return cassette

    def replay_args(self, cassette: Path, name: str) -> list[str]:
        assert self.upstream is not None
        return replay_config(self.upstream, cassette, self.work / f"{name}.toml")

    # -- targets ------------------------------------------------------------------------

    def target_direct(self) -> None:
        assert self.upstream is not None
        set_cpus(self.upstream.pid, self.server_cpus)
        try:
            self.measure_all(self.upstream, "direct")
        finally:
            set_cpus(self.upstream.pid, self.client_cpus)

    def target_reference(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        self.served(
            "reference",
            lambda probe: start_reference(
                self.procs, upstream, cpus=self.server_cpus, log_level=self.plan.log_level, probe=probe
            ),
        )

    def target_litellm(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        install = peers.ensure_litellm(peers.litellm_venv(self.out_dir))
        self.emit(
            {
                "kind": "peer",
                "target": "litellm",
                "version": install.version,
                "error": install.error,
                "installed_now": install.installed_now,
                "install_s": install.seconds,
            }
        )
        if install.executable is None:
            self.skip("litellm", install.error or "not installed")
            return
        config = self.work / "litellm.yaml"
        # LiteLLM takes tens of seconds to start: one process serves all its cells (peak RSS is then the
        # highest so far, which for the large cells is their own).
        self.served(
            "litellm",
            lambda probe: peers.start_litellm(
                self.procs, install, upstream, config, cpus=self.server_cpus, probe=probe
            ),
            reuse=True,
        )

    def target_passthrough(self) -> None:
        assert self.upstream is not None
        self.proxied("passthrough", passthrough_args(self.upstream))
        then = self.then_command()
        if then is not None:  # the "today's", small cells only
            self.proxied("passthrough-then", passthrough_args(self.upstream), workloads=("small",), command=then)

    def target_metrics(self) -> None:
        """What a Prometheus scraper costs (issue 14): small pass-through at C=16 with /metrics scraped every
        second against not scraped, in alternating windows on ONE proxy (fresh proxies differ from each
        other by more than the effect), then the CPU of one scrape on the idle proxy, whose series the
        load has filled."""
        assert self.upstream is not None and self.bodies is not None
        server = self.proxy("passthrough-metrics", passthrough_args(self.upstream), self.bodies.request_spec("small"))
        try:
            if not server.ok:
                self.skip("metrics", server.probe_error or "did not start")
                return
            for _ in range(METRICS_ROUNDS):
                for target in ("passthrough-unscraped", "passthrough-scraped"):
                    if not self.time_left(f"{target} small C=16"):
                        return
                    self.measure(server, target, "small", 16)
            before, started = tree_cpu_seconds(server.pid), time.perf_counter()
            sizes = [len(http_call(server.port, path="/metrics", timeout=10)[1]) for _ in range(METRICS_SCRAPES)]
            self.emit(
                {
                    "kind": "scrape",
                    "target": "passthrough",
                    "scrapes": METRICS_SCRAPES,
                    "cpu_ms_per_scrape": (tree_cpu_seconds(server.pid) - before) * 1000 / METRICS_SCRAPES,
                    "wall_ms_per_scrape": (time.perf_counter() - started) * 1000 / METRICS_SCRAPES,
                    "body_bytes": max(sizes),
                }
            )
        finally:
            stop_proxy(self.procs, server, timeout=30)

    def target_workers(self) -> None:
        """Pass-through at `--workers 1` and `--workers 2` on one real Redis (issue 14). Neither is pinned
        to a core, so both have what a second worker could use; the load generator shares them."""
        assert self.upstream is not None
        redis = start_redis(self.procs, self.work / "redis")
        if redis is None:
            self.skip("workers", "redis-server is not installed (sudo apt-get install redis-server)")
            return
        state = ["--state-url", f"redis://127.0.0.1:{redis.port}/0"]
        try:
            for workers in (1, 2):
                self.proxied(
                    f"passthrough-w{workers}", [*passthrough_args(self.upstream), *state], workers=workers, pinned=False
                )
            cassette = self.counted_cassette()
            if cassette is not None:  # replay cursors in Redis against in process memory, one worker each
                # The counted cassette holds the small request only.
                self.proxied("replay-memory", self.replay_args(cassette, "replay-memory"), workloads=("small",))
                self.proxied(
                    "replay-redis", [*self.replay_args(cassette, "replay-redis"), *state], workloads=("small",)
                )
        finally:
            self.procs.stop(redis.proc)

    def target_replay(self) -> None:
        cassette = self.ensure_replay_cassette()
        if cassette is not None:
            self.proxied("replay", self.replay_args(cassette, "replay"))
            then = self.then_command()
            if then is not None:
                args = self.replay_args(cassette, "replay-then")
                self.proxied("replay-then", args, workloads=("small",), command=then)

    def target_fake(self) -> None:
        self.proxied("fake", fake_args(), first_generation=True)

    def proxied(
        self,
        target: str,
        args: list[str],
        *,
        first_generation: bool = False,
        workers: int = 1,
        pinned: bool = True,
        workloads: tuple[str, ...] | None = None,
        command: list[str] | None = None,
    ) -> None:
        """Every cell of an allm-proxy target (`served`), or those of `workloads`; `workers` > 1 runs
        `serve --workers N`; `command` another build's allm-proxy (`--then`)."""
        self.served(
            target,
            lambda probe: self.proxy(target, args, probe=probe, workers=workers, pinned=pinned, command=command),
            first_generation=first_generation,
            workloads=workloads,
        )

    def served(
        self,
        target: str,
        start: Callable[[B.RequestSpec], Server],
        *,
        first_generation: bool = False,
        reuse: bool = False,
        workloads: tuple[str, ...] | None = None,
    ) -> None:
        """Measure every cell of `target`, on a fresh server per cell (unless --reuse-proxy or `reuse`).

        A fresh process per cell keeps each cell's peak RSS its own: CPython
        and glibc keep freed memory, so a cell after a heavy one would report
        the heavy one's peak. Every start is timed to its first answer.
        """
        assert self.bodies is not None
        probe = self.bodies.request_spec("small")
        startups: list[float] = []
        server: Server | None = None
        idle_rss = None
        try:
            cells = [cell for cell in self.plan.cells if workloads is None or cell[0] in workloads]
            for index, (workload, concurrency) in enumerate(cells):
                if not self.time_left(f"{target} {workload} C={concurrency}"):
                    break
                if server is None or not (self.plan.reuse_proxy or reuse):
                    if server is not None:
                        stop_proxy(self.procs, server, timeout=30)
                    server = start(probe)
                    if not server.ok:
                        self.emit(
                            {
                                "kind": "startup",
                                "target": target,
                                "startup_ms": server.startup_ms,
                                "error": server.probe_error,
                            }
                        )
                        self.skip(target, server.probe_error or "did not start")
                        return
                    startups.append(server.startup_ms or 0.0)
                    idle_rss = idle_rss or tree_memory_kb(server.pid)["VmRSS"] / 1024
                if first_generation and index == 0:
                    self.first_generation(server)
                self.measure(server, target, workload, concurrency)
        finally:
            if server is not None:
                stop_proxy(self.procs, server, timeout=30)
        if startups:
            ordered = sorted(startups)
            self.emit(
                {
                    "kind": "startup",
                    "target": target,
                    "startup_ms": ordered[len(ordered) // 2],
                    "first_ms": startups[0],
                    "max_ms": ordered[-1],
                    "starts": len(startups),
                    "idle_rss_mb": idle_rss,
                    "error": None,
                }
            )

    def first_generation(self, server: Server) -> None:
        assert self.bodies is not None
        spec = self.bodies.request_spec("large")
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            status, body = http_call(server.port, spec)
            timings.append((time.perf_counter() - started) * 1000)
            if status != 200:
                self.skip("fake first generation", f"answered {status}: {body[:200]!r}")
                return
        self.emit(
            {
                "kind": "first_generation",
                "target": "fake",
                "workload": "large",
                "size": "1024x1024",
                "first_ms": timings[0],
                "repeat_ms": timings[1],
            }
        )

    # -- derived figures ------------------------------------------------------------------

    # -- the whole run ---------------------------------------------------------------------

    def environment(self) -> None:
        try:
            rev = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            rev = ""
        self.emit(
            {
                "kind": "env",
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "server_cpus": sorted(self.server_cpus or []),
                "client_cpus": sorted(self.client_cpus or []),
                "loadavg": os.getloadavg(),
                "git": rev,
                "plan": {
                    "targets": self.plan.targets,
                    "cells": self.plan.cells,
                    "warmup": self.plan.warmup,
                    "duration": self.plan.duration,
                    "proxy_log_level": self.plan.log_level,
                },
            },
            show=False,
        )

    def run(self) -> int:
        started = time.monotonic()
        self.environment()
        print(
            f"allm-proxy bench: {', '.join(self.plan.targets)}; cells "
            f"{' '.join(f'{w}@{c}' for w, c in self.plan.cells)}; {self.plan.warmup:g}+{self.plan.duration:g} s "
            f"each; server CPUs {sorted(self.server_cpus or [])}, client CPUs {sorted(self.client_cpus or [])}; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        self.bodies = B.build(self.work / "bodies")
        self.upstream = start_upstream(self.procs, self.bodies, cpus=self.client_cpus, use_gzip=self.plan.upstream_gzip)
        for target in ORDER:
            if target in self.plan.targets and self.time_left(target):
                print(f"== {target}", flush=True)
                getattr(self, f"target_{target}")()
        from . import figures

        if "cassette" in self.plan.targets and self.time_left("cassette"):
            print("== cassette", flush=True)
            figures.cassette_figures(self)
        if "load" in self.plan.targets and self.time_left("load"):
            print("== load", flush=True)
            figures.load_test(self)
        figures.cpu_per_mb(self)
        self.relate_all()
        checks = [self.emit(c, show=False) for c in report.evaluate(self.records)]
        print()
        print(report.throughput_table(self.records))
        print()
        others = report.other_figures(self.records)
        if others:
            print(others)
            print()
        print(report.checks_table(checks))
        print(
            f"\n{len(self.records)} records in {self.jsonl} ({time.monotonic() - started:.0f} s; "
            f"load average now {os.getloadavg()[0]:.2f})"
        )
        failed = [
            r
            for r in self.records
            if (r.get("kind") == "throughput" and (r.get("errors") or r.get("fatal")))
            or (r.get("kind") == "skipped" and "--time-limit" not in r["why"])
        ]
        if failed:
            print(f"{len(failed)} cells failed or were skipped (see above and {self.procs.log_dir})")
        return 1 if failed else 0

    def relate_all(self) -> None:
        """Fill the ratios a cell could not have when it was measured (a baseline measured after it)
        and write the JSON lines again with them (they were written as the run went, so a stopped run
        keeps what it measured)."""
        rows = [r for r in self.records if r.get("kind") == "throughput"]
        for record in rows:
            cell = (record["workload"], record["concurrency"])
            report.relate(
                record,
                {
                    r["target"]: r
                    for r in rows
                    if r["target"] in report.BASELINES and (r["workload"], r["concurrency"]) == cell
                },
            )
        with self.jsonl.open("w") as out:
            out.writelines(json.dumps(r) + "\n" for r in self.records)

    def close(self) -> None:
        self.procs.close()
        if not self.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__)
    if args.profile and profile.py_spy() is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    if args.rounds < 1 or (args.rounds > 1 and (args.memory or args.instructions)):
        raise SystemExit("--rounds takes N >= 1, and not with --memory or --instructions (a count repeats)")
    if args.memory and args.instructions:
        raise SystemExit("--memory and --instructions are two runs: give one")

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    codes, rounds = [], []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"\n===== round {number} of {args.rounds}", flush=True)
            time.sleep(1.0)  # a stamp (and files) of its own
        bench = Bench(Plan.from_args(args), args.out, keep_work=args.keep_work)
        try:
            if args.memory:
                codes.append(memory.run(bench, memory.sizes(args.memory_sizes)))
            elif args.instructions:
                codes.append(instructions.run(bench))
            else:
                codes.append(bench.run())
        except KeyboardInterrupt:
            print("\ninterrupted: ending every process the benchmark started", file=sys.stderr)
            return 130
        finally:
            bench.close()
        rounds.append([r for r in bench.records if r.get("kind") == "check"])
    if args.rounds > 1:
        print(f"\n===== the checks over {args.rounds} rounds (median; every round's value beside it)\n")
        print(report.checks_table(report.median_checks(rounds)))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
