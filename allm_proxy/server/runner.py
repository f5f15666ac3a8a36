"""Running the server: uvicorn's options for our limits, the bind warning, and `serve`'s process."""

from __future__ import annotations

import signal
import threading
from typing import Any

import uvicorn

from ..config import ProxyConfig, ServerLimits
from ..engine import Engine
from ..state.settings import host_is_loopback
from .allocator import keep_answer_blocks
from .app import create_app
from .http_guard import guarded_protocol


def uvicorn_options(limits: ServerLimits | None = None) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config` / `uvicorn.run` that apply `limits` at the connection level."""
    limits = limits or ServerLimits()
    return {
        "http": guarded_protocol(limits.header_timeout),
        # Not uvloop, even where it is installed (uvicorn's "auto" would pick it): it saved 7% of
        # the instructions of a small answer but added 27% to a 3 MB one, copying what it writes.
        "loop": "asyncio",
        "timeout_keep_alive": limits.keep_alive,
        "timeout_graceful_shutdown": limits.graceful_shutdown,
        "limit_concurrency": limits.max_connections,
    }


def bind_warning(host: str, access_token: str | None) -> str | None:
    """The warning to print when `host` lets other machines in and no access token guards the keys."""
    if access_token or host_is_loopback(host):
        return None
    return (
        f"WARNING: binding {host} without --access-token: anyone who can reach this port can spend your provider keys."
    )


def run_server(
    engine: Engine, config: ProxyConfig, *, limits: ServerLimits | None = None, log_level: str = "warning"
) -> None:
    """Serve until SIGINT or SIGTERM; both finish in-flight requests first (up to `graceful_shutdown` s).

    SIGTERM, how service managers and `docker stop` ask a server to stop,
    then returns normally (exit status 0), where uvicorn alone would re-raise
    it and die with status -15. Recordings are flushed by the app's lifespan.
    """
    limits = limits or config.limits
    keep_answer_blocks()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(engine, config, limits=limits),
            host=config.host,
            port=config.port,
            log_level=log_level,
            access_log=False,
            lifespan="on",
            **uvicorn_options(limits),
        )
    )
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return
    # uvicorn restores this handler after its graceful shutdown and raises SIGTERM again: end here, cleanly.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run()
    except _Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Stopped(Exception):
    pass


def _exit_cleanly(signum: int, frame: object) -> None:
    raise _Stopped


def app_from_env() -> Any:
    """An app for `uvicorn allm_proxy.server:app_from_env --factory` (config from ALLM_PROXY_CONFIG)."""
    import os

    from ..config import load_config

    config = load_config(os.environ.get("ALLM_PROXY_CONFIG"))
    return create_app(Engine.from_config(config), config)
