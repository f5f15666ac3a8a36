"""The calls behind cassettes/demo-openai.json: run them against a replaying proxy.

    allm-proxy serve --provider openai --cassette cassettes/demo-openai.json --record-mode none
    python examples/demo_calls.py                     # no key, no network: answers come from the cassette

scripts/make_demo_cassette.py recorded the cassette by making these same calls.
"""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path

from openai import OpenAI
from PIL import Image

HERE = Path(__file__).resolve().parent


def input_image() -> bytes:
    """The image the edit sends: fixed bytes, so the recorded request matches every time."""
    return (HERE / "kestrel-input.png").read_bytes()


def run(client: OpenAI) -> list[bytes]:
    """Generate, edit (with a mask) and stream; returns every image received."""
    images: list[bytes] = []
    result = client.images.generate(model="gpt-image-1.5", prompt="a watercolor kestrel", size="1024x1024")
    images += [base64.b64decode(d.b64_json or "") for d in result.data or []]
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (128, 0, 256, 256))
    mask_png = io.BytesIO()
    mask.save(mask_png, format="PNG")
    edited = client.images.edit(
        model="gpt-image-1.5",
        image=("kestrel.png", input_image(), "image/png"),
        mask=("mask.png", mask_png.getvalue(), "image/png"),
        prompt="add a full moon",
    )
    images += [base64.b64decode(d.b64_json or "") for d in edited.data or []]
    for event in client.images.generate(model="gpt-image-1.5", prompt="a fox at dusk", stream=True, partial_images=1):
        images.append(base64.b64decode(event.b64_json or ""))
    return images


if __name__ == "__main__":
    base_url = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8400/v1")
    received = run(OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "sk-test-replay")))
    print(f"received {len(received)} images from {base_url}")
    sys.exit(0)
