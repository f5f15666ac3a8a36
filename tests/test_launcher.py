"""`allm-proxy run [serve options] -- CMD`: CMD reaches the proxy, its status is ours, the proxy is gone after."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.test_node_sdk import HERE as NODE_DIR
from tests.node.test_node_sdk import node_sdk_ready
from tests.support.asgi_server import port_of
from tests.support.serve_process import recording_args
from tests.upstreams.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow  # subprocesses: `allm-proxy run` and the clients it starts

TIMEOUT = 90
PY_CLIENT = """
import json, os, sys
import openai
client = openai.OpenAI(api_key="sk-test-run", max_retries=0)      # OPENAI_BASE_URL from `run`
answer = client.images.generate(model="gpt-image-1", prompt="a kestrel", size="1024x1024")
print(json.dumps({"base": os.environ["OPENAI_BASE_URL"], "proxy": os.environ["ALLM_PROXY_URL"],
                  "images": len(answer.data)}))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""
NODE_CLIENT = """
import OpenAI from "openai";

const client = new OpenAI({ apiKey: "sk-test-run", maxRetries: 0 });
const answer = await client.images.generate({ prompt: "a heron", size: "256x256", response_format: "b64_json" });
console.log(JSON.stringify({ base: process.env.OPENAI_BASE_URL, images: answer.data.length }));
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "allm_proxy", "run", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env or dict(os.environ),
    )


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_python_client_reaches_the_proxy_records_a_cassette_and_its_status_is_passed_on(tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(PY_CLIENT)
    cassette = tmp_path / "run.json"
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        done = run(
            *recording_args(upstream_url, cassette, "once"),
            "--",
            sys.executable,
            str(script),
            "3",
            env={**os.environ, "OPENAI_API_KEY": "sk-test-run-upstream"},
        )
    assert done.returncode == 3, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["images"] == 1 and out["base"] == out["proxy"] + "/v1"
    assert out["proxy"].startswith("http://127.0.0.1:")
    assert port_is_free(port_of(out["proxy"]))
    assert len(upstream.requests) == 1
    recorded = cassette.read_text()
    assert '"a kestrel"' in recorded or "a kestrel" in recorded
    assert "sk-test-run-upstream" not in recorded


def test_exit_status_zero_passes_on() -> None:
    done = run("--", sys.executable, "-c", "import os; print(os.environ['ALLM_PROXY_URL'])")
    assert done.returncode == 0, done.stderr[-2000:]
    assert port_is_free(port_of(done.stdout.strip()))


def test_a_command_killed_by_a_signal_gives_128_plus_its_number() -> None:
    done = run("--", sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert done.returncode == 128 + signal.SIGTERM


def test_without_a_command_it_is_a_usage_error() -> None:
    done = run("--provider", "fake")
    assert done.returncode == 2 and "--" in done.stderr


def test_a_bad_serve_option_fails_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = run("--record-mode", "sometimes", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert done.returncode == 2 and not marker.exists()


def test_a_node_client_reaches_the_proxy_through_openai_base_url(tmp_path: Path) -> None:
    node_sdk_ready()
    script = NODE_DIR / f"run_client_{os.getpid()}.mjs"  # beside node_modules, so `import "openai"` resolves
    script.write_text(NODE_CLIENT)
    try:
        done = run("--", "node", str(script))
    finally:
        script.unlink()
    if done.returncode != 0:
        pytest.fail(done.stderr[-2000:])
    out = json.loads(done.stdout)
    assert out["images"] == 1 and out["base"].endswith("/v1")
    assert port_is_free(port_of(out["base"]))
