"""Re-record cassettes/demo-openai.json from the fake OpenAI upstream of the test suite.

    .venv/bin/python scripts/make_demo_cassette.py

The proxy runs with --provider openai and its default base URL
(https://api.openai.com/v1); an in-process transport answers in place of
OpenAI, so the cassette holds OpenAI-shaped traffic to api.openai.com and
replays with `--provider openai --record-mode none`, no key and no network.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
from openai import OpenAI
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from allm_proxy import Engine, generate_image  # noqa: E402
from allm_proxy.config import CassetteSettings  # noqa: E402
from examples.demo_calls import run  # noqa: E402
from tests.conftest import running_proxy  # noqa: E402
from tests.upstreams.openai_upstream import FakeOpenAI  # noqa: E402

CASSETTE = ROOT / "cassettes" / "demo-openai.json"


def picture() -> bytes:
    with Engine() as engine:
        data = generate_image(engine, "a watercolor kestrel", size="1024x1024").images[0].data
    small = Image.open(io.BytesIO(data)).convert("RGB").resize((512, 512))
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def main() -> None:
    CASSETTE.unlink(missing_ok=True)
    upstream = FakeOpenAI(image=picture())
    engine = Engine(
        image_adapter="openai",
        transport=httpx.ASGITransport(app=upstream),
        cassettes=CassetteSettings(path=str(CASSETTE), record_mode="once"),
        env={"OPENAI_API_KEY": "sk-test-demo-recording"},
    )
    with running_proxy(engine) as url:
        images = run(OpenAI(base_url=f"{url}/v1", api_key="sk-test-demo-client", max_retries=0))
    print(f"recorded {len(upstream.requests)} upstream calls, {len(images)} images -> {CASSETTE}")


if __name__ == "__main__":
    main()
