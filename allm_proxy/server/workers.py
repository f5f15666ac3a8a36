"""`serve --workers N`: N uvicorn worker processes on one port, each rebuilding the exact resolved config.

    check_workers(config)                   # N > 1 without a state URL: ValueError saying why
    run_workers(config)                     # the supervisor; returns when every worker has drained

The main process binds the sockets and supervises (uvicorn's `Multiprocess`:
it restarts a worker that dies, and on SIGTERM or SIGINT asks every worker to
finish its requests and flush its recordings). On Linux each worker slot gets
its own listening socket on the port (`SO_REUSEPORT`), so the kernel spreads
new connections over the workers; with one shared socket, whichever worker
wakes first accepts a whole burst of connections and keeps them all (a client
opening 16 keep-alive connections at once was served by one worker in about
half the runs). Elsewhere, where `SO_REUSEPORT` does not balance, all slots
share one socket as uvicorn does. Each worker is a fresh
interpreter (multiprocessing's spawn) that builds its app with `worker_app`,
uvicorn's `--factory` style, from the config the main process resolved from
flags, environment and file, handed over as JSON in the environment the
workers inherit (`WORKER_CONFIG_VARIABLE`): keys stay out of any command line.

Metrics: prometheus_client's multiprocess mode. A fresh directory is named in
`PROMETHEUS_MULTIPROC_DIR` before the first worker starts (prometheus_client
reads it when a worker imports it), every worker's `/metrics` adds up all of
them, a departed worker's live gauges are dropped, and the directory is
removed when the supervisor returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from ..config import ProxyConfig
from ..config_codec import config_from_json, config_to_json
from ..engine import Engine
from ..metrics import MULTIPROC_VARIABLE
from .allocator import keep_answer_blocks
from .app import create_app
from .http_guard import guarded_protocol
from .log_output import SecondCachedFormatter, TurnStreamHandler
from .runner import uvicorn_options

WORKER_CONFIG_VARIABLE = "ALLM_PROXY_WORKER_CONFIG"
WORKER_APP = "allm_proxy.server.workers:worker_app"
STATE_URL_EXAMPLE = "--state-url redis://127.0.0.1:6379/0"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Under workers each line names its process, as gunicorn's do: which worker answered is the first question.
WORKER_LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


class WorkersStartupError(RuntimeError):
    """A worker could not start (its app, or the socket): every restart would fail the same way."""


def check_workers(config: ProxyConfig) -> None:
    """Refuse a worker count that cannot behave as one proxy (ValueError with the reason and the fix)."""
    if config.workers < 1:
        raise ValueError(f"--workers must be at least 1, not {config.workers}")
    if config.workers > 1 and config.state.url is None:
        raise ValueError(
            f"--workers {config.workers} needs shared state: without it each worker would keep its own hosted "
            "image files and replay cursors, so a URL one worker issued would be 404 on another and a "
            "cassette would replay from the start on each. Start a Redis and add "
            f"{STATE_URL_EXAMPLE} (or [state] url, or ALLM_PROXY_STATE_URL)."
        )


def setup_logging(level: str, *, worker: bool = False) -> None:
    """The proxy's log lines on stderr (the access log is `allm_proxy.access` at INFO)."""
    # As logging.basicConfig(level=..., format=..., stream=sys.stderr) (nothing, where logging is set
    # up already), with the handler and formatter of `log_output`: one write per loop turn, and the
    # time formatted once a second.
    root = logging.getLogger()
    if not root.handlers:
        handler = TurnStreamHandler(sys.stderr)
        handler.setFormatter(SecondCachedFormatter(WORKER_LOG_FORMAT if worker else LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(level.upper())
    # What the formats do not print, not collected for every line either (the logging HOWTO's
    # "Optimization"): the calling frame's file and line, the thread, the process name, and, but
    # for workers, whose lines name their process, the pid (a getpid() syscall per line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = worker
    if sys.version_info >= (3, 12):
        logging.logAsyncioTasks = False  # the task's name: asyncio.current_task() per line
    # httpx logs every upstream request with its full URL at INFO: a second line per request,
    # and signed provider image URLs in the log. The access log says what happened.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def worker_app() -> Starlette:
    """The app of one worker process (`uvicorn allm_proxy.server.workers:worker_app --factory`)."""
    try:
        text = os.environ[WORKER_CONFIG_VARIABLE]
    except KeyError:
        raise RuntimeError(
            f"{WORKER_CONFIG_VARIABLE} is not set: worker processes are started by `allm-proxy serve --workers N`"
        ) from None
    config = config_from_json(text)
    setup_logging(config.log_level, worker=True)
    keep_answer_blocks()
    return create_app(Engine.from_config(config), config)


class WorkerConfig(uvicorn.Config):
    """uvicorn's config as pickled to each worker. The guarded protocol is a class made at run time
    (it carries the header deadline), which pickle cannot send by reference: each worker makes its own."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def load(self) -> None:
        self.http = guarded_protocol(self.header_timeout)
        super().load()


def uvicorn_config(config: ProxyConfig, *, log_level: str = "warning") -> WorkerConfig:
    """The uvicorn config of `serve --workers N`: the factory, the workers, the limits of `uvicorn_options`."""
    options = uvicorn_options(config.limits)
    options.pop("http")
    return WorkerConfig(
        WORKER_APP,
        factory=True,
        workers=config.workers,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        http="httptools",  # replaced in each worker by the guarded protocol (`load`)
        header_timeout=config.limits.header_timeout,
        **options,
    )


class _Supervisor(Multiprocess):
    """uvicorn's supervisor with a listening socket per worker slot, which also drops the live gauges
    of every worker that has gone."""

    def __init__(self, config: uvicorn.Config, slots: list[socket.socket]) -> None:
        super().__init__(config, sockets=slots[:1])
        self.slots = slots
        self.seen: set[int] = set()

    def _spawn(self, slot: int) -> Process:
        process = Process(self.config, [self.slots[slot % len(self.slots)]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._spawn(slot) for slot in range(self.processes_num)]

    def restart_all(self) -> None:
        """SIGHUP: replace each worker in turn, keeping its slot (uvicorn's would hand every new one the first)."""
        for slot, old in enumerate(list(self.processes)):
            if self.should_exit.is_set():
                return
            new = self._spawn(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                return
            old.terminate()
            old.join()
            self.processes[slot] = new

    def keep_subprocess_alive(self) -> None:
        """uvicorn's: restart a worker that died or hangs, in its own slot; stop when one could not start."""
        for slot, process in enumerate(self.processes):
            if self.should_exit.is_set():
                break
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logging.getLogger("uvicorn.error").error(
                    "Child process [%s] failed to start, stopping the parent process.", process.pid
                )
                self.should_exit.set()
                break
            self.processes[slot] = self._spawn(slot)
        self.sweep()

    def join_all(self) -> None:
        super().join_all()
        self.sweep()

    def sweep(self) -> None:
        from prometheus_client import multiprocess

        alive = {p.pid for p in self.processes if p.pid is not None and p.exitcode is None}
        self.seen |= alive
        for pid in self.seen - alive:
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        self.seen &= alive

    @property
    def startup_failed(self) -> bool:
        return any(p.exitcode == STARTUP_FAILURE for p in self.processes)


def balances_reuseport() -> bool:
    """True where `SO_REUSEPORT` spreads connections over the sockets sharing a port (Linux 3.9+); on
    the BSDs and macOS the option exists but the newest socket takes every connection."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_slots(uv: uvicorn.Config, count: int) -> list[socket.socket]:
    """The listening sockets of `count` worker slots: one per slot on one port where the kernel balances
    them, else uvicorn's one shared socket."""
    if count < 2 or not balances_reuseport() or uv.uds is not None or uv.fd is not None:
        return [uv.bind_socket()]
    family = socket.AF_INET6 if uv.host and ":" in uv.host else socket.AF_INET
    slots: list[socket.socket] = []
    port = uv.port
    try:
        for _ in range(count):
            sock = socket.socket(family=family)
            slots.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((uv.host, port))
            port = sock.getsockname()[1]  # port 0: the others join the port the first one got
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in slots:
            sock.close()
        logging.getLogger("uvicorn.error").error(exc)
        sys.exit(STARTUP_FAILURE)
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d with %d listening sockets (Press CTRL+C to quit)", uv.host, port, count
    )
    return slots


def run_workers(config: ProxyConfig, *, log_level: str = "warning") -> None:
    """Serve with `config.workers` processes until SIGTERM or SIGINT; returns once every worker has finished
    its requests and flushed its recordings. Raises `WorkersStartupError` when a worker cannot start."""
    check_workers(config)
    uv = uvicorn_config(config, log_level=log_level)
    with _worker_environment(config):
        slots = bind_slots(uv, config.workers)
        try:
            supervisor = _Supervisor(uv, slots)
            supervisor.run()
        finally:
            for sock in slots:
                sock.close()
    if supervisor.startup_failed:
        raise WorkersStartupError("a worker process failed to start; its error is above")


@contextlib.contextmanager
def _worker_environment(config: ProxyConfig) -> Iterator[None]:
    """The variables every worker inherits: its config, and a fresh metrics directory (removed after)."""
    metrics_dir = tempfile.mkdtemp(prefix="allm-proxy-metrics-")
    saved = {name: os.environ.get(name) for name in (WORKER_CONFIG_VARIABLE, MULTIPROC_VARIABLE)}
    os.environ[WORKER_CONFIG_VARIABLE] = config_to_json(config)
    os.environ[MULTIPROC_VARIABLE] = metrics_dir
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)
