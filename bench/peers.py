"""Peers measured beside allm-proxy (``scripts/bench --peer litellm``): installed on first use, never required.

LiteLLM's proxy is installed with pip (``litellm[proxy]``, from the package
index pip is set up with) into its own venv, ``bench-results/peers/litellm-venv``,
and reused by later runs. It runs as ``litellm --config FILE`` with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` (it reads its bundled price list
instead of fetching one at start) and a config that routes the benchmark's
two image models to the fake upstream as an OpenAI-compatible provider
(``openai/<model>`` with ``api_base``), no master key and no database.

Whatever fails here (no index, a build error, a proxy that does not answer
in time) becomes a reason to skip the peer; the run goes on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .bodies import RequestSpec
from .procs import Processes, free_port
from .targets import BENCH_CLIENT_KEY, BENCH_KEY, Server, start_http

LITELLM_REQUIREMENT = "litellm[proxy]"
# Every model a workload sends (bench.bodies): each is routed to the fake upstream.
LITELLM_MODELS = ("dall-e-2", "gpt-image-1.5")
PEER_NAMES = ("litellm",)


@dataclass
class PeerInstall:
    """Where a peer's executable is, or why there is none."""

    executable: Path | None
    version: str | None = None
    error: str | None = None
    installed_now: bool = False
    seconds: float = 0.0


def litellm_venv(out_dir: Path) -> Path:
    return out_dir / "peers" / "litellm-venv"


def ensure_litellm(venv: Path, *, timeout: float = 900.0, log: Path | None = None) -> PeerInstall:
    """LiteLLM's proxy in `venv`: reused when a previous run installed it, else pip-installed (bounded)."""
    exe, stamp = venv / "bin" / "litellm", venv / ".bench-installed"
    if exe.exists() and stamp.exists():
        return PeerInstall(exe, version=stamp.read_text().strip() or None)
    started = time.monotonic()
    log = log or venv.parent / "litellm-install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            LITELLM_REQUIREMENT,
        ],
    ]
    with log.open("ab") as out:
        for argv in steps:
            left = timeout - (time.monotonic() - started)
            try:
                code = subprocess.run(
                    argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=max(left, 1), check=False
                ).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                return PeerInstall(None, error=f"installing {LITELLM_REQUIREMENT} failed: {exc}; see {log}")
            if code != 0:
                return PeerInstall(None, error=f"`{' '.join(argv[-3:])}` exited {code}; see {log}")
    if not exe.exists():
        return PeerInstall(None, error=f"{LITELLM_REQUIREMENT} installed no `litellm` command; see {log}")
    version = _version(venv)
    stamp.write_text(version or "")
    return PeerInstall(exe, version=version, installed_now=True, seconds=time.monotonic() - started)


def _version(venv: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def litellm_config(upstream_port: int, path: Path) -> Path:
    """A LiteLLM proxy config routing every benchmark model to the fake upstream (OpenAI-compatible)."""
    lines = ["model_list:"]
    for model in LITELLM_MODELS:
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: openai/{model}",
            f"      api_base: http://127.0.0.1:{upstream_port}/v1",
            f"      api_key: {BENCH_KEY}",
            "    model_info:",
            "      mode: image_generation",
        ]
    # Retries would hide a failing upstream behind a slow success; the benchmark wants to see it.
    lines += ["litellm_settings:", "  num_retries: 0", "  request_timeout: 120"]
    # The key the load generator sends is the master key: LiteLLM checks it on every request, as
    # deployed. It is a short fake key, which LiteLLM refuses to start with unless told it may.
    lines += [
        "general_settings:",
        f"  master_key: {BENCH_CLIENT_KEY}",
        "  dangerously_permit_weak_or_unset_master_key: true",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def litellm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LITELLM_", "ALLM_PROXY_"))}
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the bundled price list: nothing fetched at start
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.pop("DATABASE_URL", None)
    return env


def start_litellm(
    procs: Processes,
    install: PeerInstall,
    upstream: Server,
    config_path: Path,
    *,
    cpus: set[int] | None,
    probe: RequestSpec | None,
    timeout: float = 240.0,
) -> Server:
    """Start LiteLLM's proxy (one worker) and time it to its first answered request."""
    assert install.executable is not None
    port = free_port()
    argv = [
        str(install.executable),
        "--config",
        str(litellm_config(upstream.port, config_path)),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return start_http(
        procs, "litellm", argv, port, cpus=cpus, env=litellm_env(), probe=probe, timeout=timeout, what="LiteLLM's proxy"
    )
