"""`allm-proxy run [serve options] -- CMD [ARGS...]`: a proxy for exactly as long as one command runs.

    status = run_with_proxy(["--provider", "openai", "--cassette-dir", "cassettes"], ["npx", "vitest", "run"])

Starts `allm-proxy serve` as a child process on a free loopback port, waits
(bounded) until `/healthz` answers, runs CMD with `OPENAI_BASE_URL` and
`ALLM_PROXY_URL` added to its environment, then stops the proxy by its PID
with SIGTERM (it flushes recordings on the way out; SIGKILL after a bounded
wait) and returns CMD's exit status, 128+N for a CMD killed by signal N.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from types import FrameType

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 35.0  # the proxy's own graceful shutdown is 30 s by default
CHILD_STOP_TIMEOUT = 10.0


class LaunchError(RuntimeError):
    """The proxy did not come up; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exit_status(returncode: int) -> int:
    """A shell's view of a child's end: its status, or 128+N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run_with_proxy(
    serve_args: Sequence[str],
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
    stop_timeout: float = STOP_TIMEOUT,
) -> int:
    """Run `command` against a proxy started with `serve_args`; CMD's exit status."""
    if not command:
        raise LaunchError("Give the command to run after `--`: allm-proxy run [serve options] -- CMD [ARGS...]")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Ours last: for a repeated option click takes the last one, so the proxy is always on our port.
    argv = [sys.executable, "-m", "allm_proxy", "serve", *serve_args, "--host", "127.0.0.1", "--port", str(port)]
    base_env = dict(os.environ if env is None else env)
    # The proxy's banner goes to our stderr: CMD's stdout stays CMD's alone.
    proxy = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(), env=base_env)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    child: subprocess.Popen[bytes] | None = None
    try:
        for s in previous:
            signal.signal(s, interrupted)
        _wait_ready(url, proxy, ready_timeout)
        child = subprocess.Popen(list(command), env={**base_env, "OPENAI_BASE_URL": url + "/v1", "ALLM_PROXY_URL": url})
        return exit_status(child.wait())
    except _Interrupted as stop:
        if child is not None:
            _stop(child, stop.signum, CHILD_STOP_TIMEOUT)
        return 128 + stop.signum
    except FileNotFoundError as exc:
        raise LaunchError(f"Cannot run {command[0]!r}: {exc.strerror}.") from None
    finally:
        _stop(proxy, signal.SIGTERM, stop_timeout)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait_ready(url: str, proxy: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            raise LaunchError(
                f"allm-proxy serve exited with status {exit_status(proxy.returncode)} before it "
                "was ready; its message is above."
            )
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise LaunchError(f"allm-proxy serve did not answer {url}/healthz within {timeout:g} s.")


def _stop(process: subprocess.Popen[bytes], signum: int, timeout: float) -> None:
    """Ask `process` (by its PID) to stop; kill it if it has not within `timeout`."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signum)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
    except _Interrupted:  # a second Ctrl-C: stop waiting politely
        process.kill()
        process.wait(5)
