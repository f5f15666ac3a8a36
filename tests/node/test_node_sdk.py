"""The official openai Node SDK through the proxy (provider openai) to the fake OpenAI upstream.

Needs `node` and `npm`; the SDK is installed once into tests/node/node_modules
(pinned in tests/node/package.json). Skips, saying why, when either is missing
or npm cannot install (no network).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage

from allm_proxy import Engine
from tests.support.asgi_server import running_proxy
from tests.support.images import half_transparent_mask, png_bytes
from tests.upstreams.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow  # Node subprocesses

HERE = Path(__file__).parent
INSTALL_TIMEOUT = 180
RUN_TIMEOUT = 60


def node_sdk_ready() -> None:
    """Install the pinned SDK if it is not there yet, or skip the test."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the Node SDK test")
    if (HERE / "node_modules" / "openai" / "package.json").is_file():
        return
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install of the openai SDK took over {INSTALL_TIMEOUT} s")
    if done.returncode != 0:
        pytest.skip(f"npm could not install the openai SDK: {done.stderr.strip()[-300:]}")


def test_node_sdk_generates_edits_and_streams_through_the_proxy(tmp_path: Path) -> None:
    node_sdk_ready()
    image, mask = tmp_path / "a.png", tmp_path / "mask.png"
    image.write_bytes(png_bytes((64, 64)))
    mask.write_bytes(half_transparent_mask((64, 64)))
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        engine = Engine(image_adapter="openai", image_adapter_opts={"base_url": upstream_url + "/v1"}, env={})
        with running_proxy(engine) as proxy:
            done = run_node("sdk_calls.mjs", proxy, image, mask)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["generate"]["count"] == 2 and out["generate"]["size"] == "1024x1536"
    assert base64.b64decode(out["generate"]["b64"]) == upstream.served_images[0]
    assert out["edit"]["count"] == 1 and out["edit_list"]["count"] == 1
    assert out["stream"] == ["image_generation.partial_image", "image_generation.completed"]
    assert out["error"] == {"status": 404, "code": "model_not_found", "param": "model", "request_id": "req_up_5"}
    edit, edit_list = upstream.requests[1], upstream.requests[2]
    # Node labels a file stream application/octet-stream (spec section 11): passed on as sent.
    assert [(p.name, p.filename, p.content_type, p.data) for p in edit.files()] == [
        ("image", "a.png", "application/octet-stream", image.read_bytes()),
        ("mask", "mask.png", "image/png", mask.read_bytes()),
    ]
    assert [(p.name, p.filename) for p in edit_list.files()] == [("image[]", "a.png"), ("image[]", "b.png")]
    assert all(r.bearer == "sk-test-node" for r in upstream.requests)


def test_node_sdk_code_that_names_no_model_gets_dall_e_2(tmp_path: Path) -> None:
    node_sdk_ready()
    image, mask = tmp_path / "a.png", tmp_path / "mask.png"
    image.write_bytes(png_bytes((256, 256)))
    mask.write_bytes(half_transparent_mask((256, 256)))
    with running_proxy(Engine()) as proxy:
        done = run_node("no_model_calls.mjs", proxy, image, mask)
        assert done.returncode == 0, done.stderr[-2000:]
        out = json.loads(done.stdout)
        for size, got in out["sizes"].items():
            assert got["count"] == 1 and got["usage"] is None
            assert _png_size(got["url"]) == tuple(int(v) for v in size.split("x"))
        assert len(out["three"]) == 3 and len({_fetch(u) for u in out["three"]}) == 3
        assert _png_size(out["edit"]["url"]) == (256, 256)
    assert out["stream"] == ["image_generation.partial_image", "image_generation.completed"]
    assert out["stream_error"] == {"status": 400, "code": "invalid_size", "param": "size"}


def run_node(script: str, proxy: str, image: Path, mask: Path) -> subprocess.CompletedProcess[str]:
    """One of the Node scripts beside this file, against the proxy at `proxy` (bounded in time)."""
    env = {**os.environ, "ALLM_BASE_URL": proxy + "/v1", "ALLM_IMAGE": str(image), "ALLM_MASK": str(mask)}
    return subprocess.run(
        ["node", str(HERE / script)], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )


def _fetch(url: str) -> bytes:
    response = httpx.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return response.content


def _png_size(url: str) -> tuple[int, int]:
    return PILImage.open(io.BytesIO(_fetch(url))).size
