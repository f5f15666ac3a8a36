"""Instructions per request, counted by callgrind: ``scripts/bench --instructions``.

The timed CPU per request of a small pass-through moves by up to 2x between identical
runs on a shared 2-core machine (steal, caches, frequency), which is more than the
differences issue 15 asks about. Instructions do not: valgrind's callgrind counts
every user-space instruction the server executes, the same for the same code and
inputs whatever else the machine is doing. So this runs each server under
callgrind, warms it up, zeroes the counters (``vgdb --pid=PID zero``), sends
`count` requests one after another on one keep-alive connection (C=1), dumps
(``vgdb --pid=PID dump``) and divides.

What it cannot see: the kernel's side of each syscall, and cycles (a cache miss or a
memcpy of 3 MB costs more time per instruction than interpreted Python does). It
complements the timed cells, it does not replace them. Targets: the thin
reference proxy, allm-proxy pass-through, and with ``--then REV`` that revision's
allm-proxy (the reference first: it is the checks' denominator); workloads small
and large (``--workloads`` picks; edit has no count). ``--quick`` counts a fifth
of the requests. ``--time-limit`` is checked before every request, and what is
left is skipped, saying so. Servers run one at a time, each 20-100x slower than
natively, so it takes about three minutes; every step is bounded in count and
time, and every process is stopped by its PID.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import bodies as B
from . import report
from .targets import (
    Server,
    client_headers,
    passthrough_args,
    proxy_command,
    start_reference,
    start_upstream,
    stop_proxy,
)

if TYPE_CHECKING:
    from .run import Bench

WORKLOADS = ("small", "large")
# (warm-up, counted) requests per workload; --quick takes a fifth.
COUNTS = {"small": (30, 150), "large": (5, 30)}
STARTUP_TIMEOUT = 300.0  # seconds to the first answer under callgrind (about 20 s here)
CALL_TIMEOUT = 120.0
CONTROL_TIMEOUT = 60.0
_TOTAL = re.compile(rb"^(?:summary|totals): (\d+)", re.M)


def callgrind() -> str | None:
    """valgrind's path when it and vgdb are installed (Debian's valgrind package)."""
    found = shutil.which("valgrind")
    return found if found and shutil.which("vgdb") else None


def run(bench: Bench) -> int:
    """Count, print and emit ``instructions`` records; 0 unless something crashed."""
    valgrind = callgrind()
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (callgrind): apt-get install valgrind")
    asked = {workload for workload, _ in bench.plan.cells}  # --workloads
    workloads = [workload for workload in WORKLOADS if workload in asked]
    if not workloads:
        raise SystemExit(f"--instructions counts {' and '.join(WORKLOADS)} requests; --workloads names neither")
    started = time.monotonic()
    quick = bench.plan.quick
    bench.environment()
    bench.bodies = B.build(bench.work / "bodies")
    bench.upstream = start_upstream(bench.procs, bench.bodies, cpus=bench.client_cpus)
    targets = ["reference", "passthrough"]
    then = bench.then_command()
    if then is not None:
        targets.append("passthrough-then")
    print(
        f"allm-proxy bench --instructions: {', '.join(targets)}; {' and '.join(workloads)} at C=1 under callgrind; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    crashed: list[str] = []
    counted: dict[tuple[str, str], float] = {}
    for target in targets:
        if not bench.time_left(f"instructions {target}"):
            break
        server, out = _start(bench, target, valgrind, then)
        try:
            if not server.ok:
                crashed.append(f"{target} did not start under callgrind: {server.probe_error}")
                continue
            for workload in workloads:
                warm, count = COUNTS[workload]
                if quick:
                    warm, count = max(2, warm // 5), max(3, count // 5)
                per = _count(bench, server, out, workload, warm, count, crashed)
                if per is None:
                    continue
                counted[(target, workload)] = per
                bench.emit(
                    {
                        "kind": "instructions",
                        "target": target,
                        "workload": workload,
                        "requests": count,
                        "instructions_per_request": per,
                    },
                    show=False,
                )
        finally:
            stop_proxy(bench.procs, server, timeout=120)
    print()
    print(table(counted, ["passthrough", "passthrough-then", "reference"]))
    checks = _checks(bench, counted)
    if checks:
        print()
        print(report.checks_table(checks))
    if crashed:
        print("\nsomething did not work, so the figures above are incomplete:\n  " + "\n  ".join(crashed))
    print(f"\n{len(bench.records)} records in {bench.jsonl} ({time.monotonic() - started:.0f} s)")
    return 1 if crashed else 0


def _start(bench: Bench, target: str, valgrind: str, then: list[str] | None) -> tuple[Server, Path]:
    """`target` started under callgrind, and the path its dumps are written beside."""
    assert bench.upstream is not None and bench.bodies is not None
    out = bench.work / f"callgrind-{target}.out"
    under = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    probe = bench.bodies.request_spec("small")
    if target == "reference":
        server = start_reference(
            bench.procs,
            bench.upstream,
            cpus=bench.server_cpus,
            log_level=bench.plan.log_level,
            probe=probe,
            timeout=STARTUP_TIMEOUT,
            prefix=under,
        )
        return server, out
    command = then if target == "passthrough-then" else proxy_command()
    assert command is not None
    server = bench.proxy(
        f"instructions-{target}",
        passthrough_args(bench.upstream),
        probe,
        command=[*under, *command],
        timeout=STARTUP_TIMEOUT,
    )
    return server, out


def _count(
    bench: Bench, server: Server, out: Path, workload: str, warm: int, count: int, crashed: list[str]
) -> float | None:
    """Instructions per `workload` request, over `count` after `warm` uncounted ones."""
    assert bench.bodies is not None
    spec = bench.bodies.request_spec(workload)
    expect = bench.bodies.response(B.WORKLOAD_RESPONSE[workload]).read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CALL_TIMEOUT)
    headers = client_headers(spec)
    try:
        for number in range(warm + count):
            if not bench.time_left(f"instructions {server.name} {workload}"):
                return None
            if number == warm:
                _control(server, "zero")
            conn.request(spec.method, spec.path, body=spec.body, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or body != expect:
                crashed.append(
                    f"{server.name} {workload}: answered {response.status}, {len(body)} bytes, not the upstream's"
                )
                return None
        before = set(out.parent.glob(out.name + ".*"))
        _control(server, "dump")
    except (OSError, http.client.HTTPException, subprocess.SubprocessError) as exc:
        crashed.append(f"{server.name} {workload}: {exc!r}")
        return None
    finally:
        conn.close()
    dumps = sorted(set(out.parent.glob(out.name + ".*")) - before, key=lambda p: p.stat().st_mtime)
    found = _TOTAL.search(dumps[-1].read_bytes()) if dumps else None
    if found is None:
        crashed.append(f"{server.name} {workload}: callgrind wrote no dump")
        return None
    for dump in dumps:
        dump.unlink()
    return int(found.group(1)) / count


def _control(server: Server, command: str) -> None:
    """A callgrind monitor command (zero, dump) through vgdb: one process, killed on its timeout, and
    non-zero when it failed (callgrind_control, a perl script around vgdb, exits 0 whatever happened
    and leaves its vgdb behind on a timeout). CalledProcessError or TimeoutExpired when it did not work."""
    subprocess.run(["vgdb", f"--pid={server.pid}", command], check=True, capture_output=True, timeout=CONTROL_TIMEOUT)


def table(counted: dict[tuple[str, str], float], targets: list[str]) -> str:
    rows = []
    for target in targets:
        for workload in WORKLOADS:
            per = counted.get((target, workload))
            if per is None:
                continue
            ref = counted.get(("reference", workload))
            then = counted.get(("passthrough-then", workload))
            rows.append(
                [
                    target,
                    workload,
                    f"{per / 1e6:.2f}",
                    "-" if ref is None or target == "reference" else f"{per / ref:.2f}",
                    "-" if then is None or target != "passthrough" else f"{per / then:.2f}",
                ]
            )
    return report.table(rows, ["target", "load", "M instructions/req", "x reference", "x then"])


def _checks(bench: Bench, counted: dict[tuple[str, str], float]) -> list[dict[str, Any]]:
    """Issue 15's CPU figures by instruction count (the timed ones are in a normal run)."""
    ours = counted.get(("passthrough", "small"))
    checks = []
    for base, name, goal, limit in (
        ("reference", "reference's", "<= 0.63x (0.6x today's)", 0.63),
        ("passthrough-then", "then's", "<= 0.6x", 0.6),
    ):
        theirs = counted.get((base, "small"))
        if ours is None or theirs is None:
            continue
        ratio = ours / theirs
        checks.append(
            bench.emit(
                {
                    "kind": "check",
                    "issue": 15,
                    "name": f"pass-through instructions/req small C=1 / {name}",
                    "goal": goal,
                    "value": round(ratio, 2),
                    "ok": ratio <= limit,
                    "shown": f"{ratio:.2f}",
                },
                show=False,
            )
        )
    return checks
