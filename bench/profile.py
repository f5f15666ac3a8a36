"""Optional sampling profiles of the measured server (``scripts/bench --profile``), with py-spy.

py-spy is not a dependency of the project: ``.venv/bin/pip install py-spy``.
It samples the server 100 times a second from outside, pausing it for each
sample (the non-blocking mode tears stacks apart, which ruins inclusive
shares), pinned with the load generator so that the server's core stays its
own. Both cost throughput: quote the shares of a profiled run, never its
req/s.

Each cell writes collapsed stacks (``bench-results/bench-<time>.profiles/
<target>-<workload>-c<C>.txt``, one ``frame;frame;... count`` per line, for
flamegraph.pl or speedscope) and its record gets the top frames by self time
and the proxy's own functions by inclusive time.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .procs import Processes


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(procs: Processes, pid: int, out: Path, seconds: float, cpus: set[int] | None) -> subprocess.Popen[bytes]:
    exe = py_spy()
    assert exe is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "100",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    return procs.spawn(f"py-spy-{out.stem}", argv, cpus=cpus)


def finish(procs: Processes, spy: subprocess.Popen[bytes], out: Path, top: int = 8) -> dict[str, Any]:
    procs.stop(spy, sig=signal.SIGINT, timeout=15)
    if not out.exists():
        return {"file": None, "error": f"py-spy wrote nothing; see {procs.log_dir}"}
    return {"file": str(out), **summarize(out, top)}


def _idle(leaf: str) -> bool:
    """A thread-pool worker waiting for work (py-spy does not always see it as idle)."""
    return leaf.startswith("_worker (concurrent/futures/thread.py")


def summarize(path: Path, top: int = 8) -> dict[str, Any]:
    """Top frames by self time, and the proxy's own functions by inclusive time, as shares of busy samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if _idle(frames[-1]):
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"samples": 0, "top_self": [], "top_inclusive": []}
    allm = [(f, n) for f, n in inclusive.most_common() if "allm_proxy/" in f]
    return {
        "samples": total,
        "top_self": [[f, round(100 * n / total, 1)] for f, n in own.most_common(top)],
        "top_allm_inclusive": [[f, round(100 * n / total, 1)] for f, n in allm[:top]],
    }
