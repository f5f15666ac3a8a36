"""Starting what a run measures: the fake upstream and allm-proxy in its modes.

- ``direct``:      the load generator talks to the fake upstream itself (the limit)
- ``reference``:   the thin reference proxy of issue 15 (`bench.reference_proxy`) in front of it
- ``litellm``:     with ``--peer litellm``, LiteLLM's proxy in front of it (`bench.peers`)
- ``passthrough``: allm-proxy ``--provider openai`` in front of the fake upstream
- ``replay``:      allm-proxy replaying a cassette recorded from the fake upstream in this run
- ``fake``:        allm-proxy ``--provider fake`` (generated images, no upstream)
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .bodies import BodySet, RequestSpec
from .procs import Processes, free_port, python, wait_line

# In the order a run measures them: the baselines first, so every later cell has its ratios at hand.
TARGETS = ("direct", "reference", "passthrough", "replay", "fake", "workers", "metrics")
PEERS = ("litellm",)
BENCH_KEY = "sk-bench-not-real"  # what a proxy sends the fake upstream
BENCH_CLIENT_KEY = "sk-bench-client"  # what the clients send (bench.loadgen has its own copy)


@dataclass
class Server:
    """A running server: its port and the process whose CPU and memory are measured."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    startup_ms: float | None = None
    probe_status: int | None = None
    probe_error: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ok(self) -> bool:
        return self.probe_error is None


def client_headers(spec: RequestSpec) -> dict[str, str]:
    """What a bench client sends with `spec` from this process: its body's type and the client key."""
    return {"Content-Type": spec.content_type, "Authorization": f"Bearer {BENCH_CLIENT_KEY}"}


def http_call(
    port: int, spec: RequestSpec | None = None, *, path: str = "/healthz", timeout: float = 30.0
) -> tuple[int, bytes]:
    """One request on a fresh connection (for probes and one-offs, not for load)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if spec is None:
            conn.request("GET", path)
        else:
            conn.request(
                spec.method,
                spec.path,
                body=spec.body,
                headers={**client_headers(spec), "Accept-Encoding": "gzip, deflate"},
            )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_upstream(procs: Processes, bodies: BodySet, *, cpus: set[int] | None, use_gzip: bool = False) -> Server:
    argv = [python(), "-m", "bench.upstream", "--bodies", str(bodies.root)]
    if use_gzip:
        argv.append("--gzip")
    proc = procs.spawn("upstream", argv, cpus=cpus, stdout=subprocess.PIPE, cwd=_repo_root())
    line = wait_line(proc, "LISTENING", timeout=30)
    return Server("direct", int(line.split()[1]), proc)


def upstream_served(upstream: Server) -> int | None:
    """How many image requests the upstream has answered so far."""
    import json

    try:
        status, body = http_call(upstream.port, path="/_bench/stats", timeout=5)
    except OSError:
        return None
    return int(json.loads(body)["requests"]) if status == 200 else None


def proxy_command() -> list[str]:
    """How to run `allm-proxy`: ALLM_BENCH_PROXY (a command, split like a shell) or the venv's script."""
    override = os.environ.get("ALLM_BENCH_PROXY")
    if override:
        return shlex.split(override)
    script = Path(python()).parent / "allm-proxy"
    if script.exists():
        return [str(script)]
    found = shutil.which("allm-proxy")
    return [found] if found else [python(), "-c", "from allm_proxy.cli import main; main()"]


def exported_proxy(revision: str, root: Path) -> list[str]:
    """The command running the allm-proxy of git `revision` on this venv (its dependencies, which the
    revisions of this repository share), exported once into `root`/then-SHA (`git archive`: no
    worktree, nothing of it in the repository). ValueError when git does not know `revision`."""
    found = subprocess.run(
        ["git", "-C", str(_repo_root()), "rev-parse", "--verify", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise ValueError(f"git does not know the revision {revision!r}: {found.stderr.strip()}")
    sha = found.stdout.strip()
    tree = (root / f"then-{sha[:12]}").resolve()
    if not (tree / "allm_proxy" / "cli.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(_repo_root()), "archive", sha, "allm_proxy"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    # First on sys.path: ahead of the current directory (`-c` puts it first) and of the editable install;
    # the assert makes sure the build measured is that revision's.
    code = (
        f"import sys; sys.path.insert(0, {str(tree)!r}); import allm_proxy; "
        f"assert allm_proxy.__file__.startswith({str(tree)!r}), allm_proxy.__file__; "
        "from allm_proxy.cli import main; main()"
    )
    return [python(), "-c", code]


def proxy_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLM_PROXY_")}
    env["OPENAI_API_KEY"] = BENCH_KEY
    env.pop("OPENAI_BASE_URL", None)
    return env


def start_proxy(
    procs: Processes,
    name: str,
    args: list[str],
    *,
    cpus: set[int] | None,
    log_level: str,
    probe: RequestSpec | None,
    timeout: float = 30.0,
    workers: int = 1,
    command: list[str] | None = None,
) -> Server:
    """Start `allm-proxy serve ARGS` and time it to its first answered request (see `start_http`).

    `workers` is the place for the cells of `serve --workers N` (issue 15): the
    flag is passed only when N > 1, and the measured figures already sum the
    process tree (`procs.tree_cpu_seconds`, `procs.tree_memory_kb`).
    """
    port = free_port()
    argv = [*(command or proxy_command()), "serve", "--port", str(port), "--log-level", log_level, *args]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return start_http(
        procs, name, argv, port, cpus=cpus, env=proxy_env(), probe=probe, timeout=timeout, what="allm-proxy"
    )


def start_reference(
    procs: Processes,
    upstream: Server,
    *,
    cpus: set[int] | None,
    log_level: str,
    probe: RequestSpec | None,
    timeout: float = 30.0,
    prefix: list[str] | None = None,
) -> Server:
    """Start the thin reference proxy (`bench.reference_proxy`) in front of `upstream` (run by `prefix`,
    such as valgrind, when given)."""
    port = free_port()
    argv = [
        *(prefix or []),
        python(),
        "-m",
        "bench.reference_proxy",
        "--upstream",
        f"http://127.0.0.1:{upstream.port}",
        "--port",
        str(port),
        "--log-level",
        log_level,
    ]
    return start_http(
        procs,
        "reference",
        argv,
        port,
        cpus=cpus,
        env=proxy_env(),
        probe=probe,
        timeout=timeout,
        what="the reference proxy",
    )


def start_http(
    procs: Processes,
    name: str,
    argv: list[str],
    port: int,
    *,
    cpus: set[int] | None,
    env: dict[str, str],
    probe: RequestSpec | None,
    timeout: float,
    what: str,
) -> Server:
    """Spawn a server listening on `port` and time it to its first answered request.

    With a `probe`, that request is sent (retried while the port refuses) and
    startup ends at its answer; without, at the first answer of ``/healthz``.
    A probe answered with anything but 200 marks the server not ok (it stays
    up, so its log and later steps can say why).
    """
    started = time.perf_counter()
    proc = procs.spawn(name, argv, cpus=cpus, env=env, cwd=_repo_root())
    server = Server(name, port, proc)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            server.probe_error = f"{what} exited with {proc.returncode}; see {procs.log_dir / (name + '.log')}"
            return server
        try:
            status, body = http_call(port, probe, timeout=timeout)
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            if time.monotonic() > deadline:
                server.probe_error = f"no answer within {timeout:.0f} s"
                return server
            time.sleep(0.005 if timeout <= 30 else 0.05)
            continue
        except OSError as exc:
            server.probe_error = f"probe failed: {exc!r}"
            return server
        server.startup_ms = (time.perf_counter() - started) * 1000
        server.probe_status = status
        if status != 200:
            server.probe_error = f"probe answered {status}: {body[:300].decode(errors='replace')}"
        return server


def stop_proxy(procs: Processes, server: Server, timeout: float = 60.0) -> int | None:
    """Graceful stop (SIGINT, as Ctrl-C: uvicorn shuts down and the engine flushes cassettes)."""
    return procs.stop(server.proc, sig=signal.SIGINT, timeout=timeout)


def passthrough_args(upstream: Server) -> list[str]:
    return ["--provider", "openai", "--openai-base-url", f"http://127.0.0.1:{upstream.port}/v1"]


def record_args(upstream: Server, cassette: Path) -> list[str]:
    return [*passthrough_args(upstream), "--cassette", str(cassette), "--record-mode", "once"]


def replay_config(upstream: Server, cassette: Path, config_path: Path) -> list[str]:
    """A config replaying `cassette` (repeats allowed: the load sends the same request again and again)."""
    config_path.write_text(
        'provider = "openai"\n\n'
        "[providers.openai]\n"
        f'base_url = "http://127.0.0.1:{upstream.port}/v1"\n\n'
        "[cassettes]\n"
        f'path = "{cassette}"\n'
        'record_mode = "none"\n'
        "allow_playback_repeats = true\n"
    )
    return ["--config", str(config_path)]


def fake_args() -> list[str]:
    return ["--provider", "fake"]


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def start_redis(procs: Processes, directory: Path, *, timeout: float = 10.0) -> Server | None:
    """Debian's `redis-server` on a free loopback port, nothing saved; None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]
    proc = procs.spawn("redis", argv)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return Server("redis", port, proc)
        except OSError:
            time.sleep(0.05)
    procs.stop(proc)
    return None


class Scraper:
    """GET /metrics every `interval` seconds on a thread, as a Prometheus server would; bounded by
    `stop()` (and by `limit` scrapes, whichever comes first)."""

    def __init__(self, port: int, *, interval: float = 1.0, limit: int = 600) -> None:
        self.port = port
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval, limit), name="bench-scraper", daemon=True)
        self._thread.start()

    def _run(self, interval: float, limit: int) -> None:
        while self.scrapes < limit and not self._stop.wait(interval):
            with contextlib.suppress(OSError):  # a proxy that went away ends the cell anyway
                http_call(self.port, path="/metrics", timeout=5)
            self.scrapes += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
