"""Child processes of a run: spawn pinned to CPUs, read their figures from /proc, always end them.

Every child is started in its own session (a Ctrl-C reaches only the
benchmark, which then ends the children in order) and with
``PR_SET_PDEATHSIG`` (a child dies with the benchmark even if the benchmark is
killed with SIGKILL). `Processes.close` ends every child still running:
SIGTERM, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

PR_SET_PDEATHSIG = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _child_setup(cpus: set[int] | None) -> Callable[[], None]:
    def setup() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class Processes:
    """Every process a run started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpus: set[int] | None = None,
        env: dict[str, str] | None = None,
        stdout: int | IO[bytes] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv`; its stderr (and stdout unless given) goes to LOG_DIR/NAME.log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed when the child ends
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log if stdout is None else stdout,
            stderr=log,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_child_setup(cpus),
        )
        log.close()
        self.children.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal `proc`, wait up to `timeout` s, then SIGKILL. Returns its exit code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        self.children = [(n, p) for n, p in self.children if p is not proc]
        return proc.returncode

    def close(self) -> None:
        """End every child still running (reverse start order)."""
        for _name, proc in reversed(list(self.children)):
            self.stop(proc, timeout=3.0)
        self.children.clear()


def run_json(
    procs: Processes, name: str, argv: Sequence[str], *, cpus: set[int] | None, timeout: float, cwd: Path | None = None
) -> dict[str, Any]:
    """Run a child that prints one JSON object on stdout; bounded by `timeout` seconds."""
    proc = procs.spawn(name, argv, cpus=cpus, stdout=subprocess.PIPE, cwd=cwd)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.stop(proc, sig=signal.SIGKILL)
        return {"fatal": f"{name} did not finish within {timeout:.0f} s", "errors": 1}
    procs.stop(proc)
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"fatal": f"{name} exited {proc.returncode}; see {procs.log_dir / (name + '.log')}", "errors": 1}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- /proc figures ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid` in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def tree(pid: int) -> list[int]:
    """`pid` and every live descendant (a server with worker processes is measured as the sum of them)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its live descendants (see `tree`)."""
    total = 0.0
    for member in tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def tree_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM summed over `pid` and its live descendants.

    The summed peak is an upper bound of the tree's peak (each process's
    high-water mark may fall at a different moment); for one process it is exact.
    """
    out = {"VmRSS": 0, "VmHWM": 0}
    for member in tree(pid):
        with contextlib.suppress(OSError):
            for key, value in memory_kb(member).items():
                out[key] += value
    return out


def tree_reset_peak(pid: int) -> bool:
    """`reset_peak` for `pid` and its live descendants; False if any could not be reset."""
    return all([reset_peak(member) for member in tree(pid)])


def set_cpus(pid: int, cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


def cpu_layout(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, client CPUs): the measured server on the last core, the rest for clients."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python() -> str:
    return sys.executable


def wait_line(proc: subprocess.Popen[bytes], prefix: str, timeout: float) -> str:
    """Read `proc`'s stdout until a line starting with `prefix` (bounded)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
        time.sleep(0.01)
    raise RuntimeError(f"no '{prefix}' line from pid {proc.pid} within {timeout} s (exit {proc.poll()})")
