"""`allm-proxy serve` as a real process tree (with `--workers N`, a supervisor and its workers) for tests.

    with serve_process(tmp_path, "--workers", "2", "--state-url", url) as proxy:
        httpx.get(proxy.base + "/healthz")
        proxy.worker_pids()          # the supervisor's worker processes
        proxy.stop()                 # SIGTERM, as a service manager would; returns the exit status
        proxy.log()                  # everything on stderr (access-log lines name their worker's pid)

Stderr goes to a file (a pipe nobody reads would block a chatty proxy). Whatever a
failed test leaves running is stopped by PID: the supervisor with SIGTERM (bounded
wait), then SIGKILL for it and every worker it had.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from allm_proxy.server.workers import balances_reuseport

from .asgi_server import free_port

ALLM_PROXY = Path(sys.executable).parent / "allm-proxy"
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 40.0
_PID = re.compile(r"\[(\d+)\] INFO allm_proxy\.access: (\S+) (\S+) .*status=(\d+)")


class ServeProcess:
    """One `allm-proxy serve` on a free loopback port."""

    def __init__(self, directory: Path, args: tuple[str, ...], env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stderr_path = directory / f"serve-{self.port}.stderr"
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ALLM_PROXY_", "OPENAI_", "GEMINI_", "PROMETHEUS_"))
        }
        clean["PYTHONPATH"] = str(ROOT)  # the tree under test
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [str(ALLM_PROXY), "serve", "--port", str(self.port), *args],
                env={**clean, **env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.seen_workers: set[int] = set()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, workers: int) -> None:
        """Until /healthz answers and `workers` workers are up (bounded). On Linux a worker is up when it
        listens on its own socket: a worker still importing on a loaded machine would otherwise let its
        sibling answer every request of a test that needs both."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (
                    httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
                    and len(self.worker_pids()) >= workers
                    and (workers < 2 or not balances_reuseport() or listening_sockets(self.port) >= workers)
                ):
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"allm-proxy did not start:\n{self.log()}")
            time.sleep(0.1)

    def worker_pids(self) -> set[int]:
        """The worker processes the supervisor runs now (multiprocessing's helper process excluded)."""
        pids: set[int] = set()
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (task / "children").read_text().split())
        workers = {pid for pid in pids if b"spawn_main" in _cmdline(pid)}
        self.seen_workers |= workers
        return workers

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def answered_by(self, method: str, path_prefix: str, *, total: int = 0, timeout: float = 10.0) -> dict[int, int]:
        """{worker pid: how many `method path_prefix...` requests it answered with 200}, from the access log,
        waiting up to `timeout` for `total` of them: a line reaches the log a moment after its answer
        (allm_proxy/server/access_log.py)."""
        deadline = time.monotonic() + timeout
        while True:
            counts: dict[int, int] = {}
            for pid, verb, path, status in _PID.findall(self.log()):
                if verb == method and path.startswith(path_prefix) and status == "200":
                    counts[int(pid)] = counts.get(int(pid), 0) + 1
            if sum(counts.values()) >= total or time.monotonic() > deadline:
                return counts
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the supervisor and wait (bounded) for it to exit; its exit status."""
        self.worker_pids()
        if self.process.poll() is None:
            os.kill(self.pid, sig)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def kill_all(self) -> None:
        """Stop what is left: the supervisor (SIGTERM, then SIGKILL) and every worker it had."""
        self.worker_pids()
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop()
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for pid in self.seen_workers:
            with contextlib.suppress(ProcessLookupError):
                if b"spawn_main" in _cmdline(pid):  # still our worker, not a reused pid
                    os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def serve_process(
    directory: Path, *args: str, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[ServeProcess]:
    """`allm-proxy serve --workers WORKERS ARGS...`, started and ready; stopped by PID however the test ends."""
    proxy = ServeProcess(directory, ("--workers", str(workers), *args), env or {})
    try:
        proxy.wait_ready(workers)
        yield proxy
    finally:
        proxy.kill_all()


def recording_args(upstream_url: str, cassette: Path, record_mode: str) -> list[str]:
    """`serve` options for OpenAI pass-through to a fake upstream, recording into or replaying `cassette`."""
    return [
        "--provider",
        "openai",
        "--openai-base-url",
        upstream_url + "/v1",
        "--cassette",
        str(cassette),
        "--record-mode",
        record_mode,
    ]


def listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (each SO_REUSEPORT socket is its own line in /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    return sum(1 for row in rows if row[1] == wanted and row[3] == "0A")


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions `text` (a test's own directory, say), zombies aside."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(
                (line for line in (entry / "status").read_text().splitlines() if line.startswith("State:")), ""
            )
        except OSError:
            continue
        if text in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found
