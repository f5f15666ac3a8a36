"""Run any ASGI app (the proxy, a fake upstream) under uvicorn on 127.0.0.1, on a free port.

`serve_asgi` serves any app; `running_proxy` and `guarded_proxy` serve the proxy around an Engine,
both on the connection layer `allm-proxy serve` uses (`guarded_proxy` with the limits given)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from allm_proxy import Engine, ProxyConfig
from allm_proxy.config import ServerLimits
from allm_proxy.server import create_app, uvicorn_options


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_asgi(app: Any, *, port: int | None = None, **uvicorn_options: Any) -> Iterator[str]:
    """Serve `app` in a background thread; yields its base URL, e.g. ``http://127.0.0.1:41234``.

    The server is stopped (bounded wait) when the block ends.
    """
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **uvicorn_options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_proxy(engine: Engine, config: ProxyConfig | None = None) -> Iterator[str]:
    """Serve `engine` on a free loopback port, on the connection layer `allm-proxy serve` uses (the
    guarded httptools protocol and its limits); yields the base URL without /v1."""
    config = config or ProxyConfig()
    with serve_asgi(create_app(engine, config), **uvicorn_options(config.limits)) as url:
        yield url


@contextmanager
def guarded_proxy(
    engine: Engine, config: ProxyConfig | None = None, limits: ServerLimits | None = None
) -> Iterator[str]:
    """The proxy as `allm-proxy serve` runs it (connection guard included) on a free port; yields its base URL."""
    limits = limits or ServerLimits()
    with serve_asgi(create_app(engine, config, limits=limits), **uvicorn_options(limits)) as url:
        yield url


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port
