"""Deterministic images and OpenAI-wire bodies for the benchmark.

Response bodies (what the fake upstream answers, OpenAI's JSON shape):

- ``small``: a 256x256 PNG of 7-bit noise (~170 KB; ~230 KB of JSON)
- ``large``: a 1024x1024 PNG of 6-bit noise (~2.4 MB, incompressible by gzip
  beyond base64's own 3/4; ~3.2 MB of JSON)
- ``tiny``: a 1x1 PNG, for cassettes with many interactions

Requests (what the load generator sends, as the OpenAI SDK would):

- ``small``: dall-e-2 generation at 256x256, b64_json
- ``large``: gpt-image-1.5 generation at 1024x1024 (always base64)
- ``edit``:  gpt-image-1.5 edit, multipart with a ~1 MB PNG upload, 1024x1024

The upstream chooses its answer from the request body (`select_response`):
``bench-tiny`` in the prompt gives ``tiny``, ``256x256`` gives ``small``,
anything else ``large``; ``bench-var-N`` in a JSON prompt gives variant N of
that body (a PNG with its own text chunk), so a cassette of N interactions
holds N different images.
"""

from __future__ import annotations

import base64
import json
import random
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

CREATED = 1767225600
BOUNDARY = "----allmbenchboundary7MA4YWxkTrZu0gW"
RESPONSE_KINDS = ("small", "large", "tiny")
_VARIANT = re.compile(rb"bench-var-(\d+)")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, pixels: bytes, *, channels: int = 3, level: int = 1) -> bytes:
    """A PNG of raw 8-bit RGB (or RGBA) `pixels`, every row with filter type None."""
    stride = width * channels
    raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height))
    color_type = 2 if channels == 3 else 6
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, level)) + _chunk(b"IEND", b"")
    )


def noise(nbytes: int, bits: int, seed: int) -> bytes:
    """`nbytes` of uniform noise keeping `bits` bits per byte (entropy bits/8 of the raw size)."""
    data = random.Random(seed).randbytes(nbytes)
    if bits < 8:
        mask = (1 << bits) - 1
        data = data.translate(bytes(i & mask for i in range(256)))
    return data


def with_text_chunk(png_bytes: bytes, text: str) -> bytes:
    """The same PNG with a tEXt chunk after IHDR: different bytes, same pixels."""
    ihdr_end = 8 + 25
    return png_bytes[:ihdr_end] + _chunk(b"tEXt", b"Comment\x00" + text.encode()) + png_bytes[ihdr_end:]


def small_png() -> bytes:
    return png(256, 256, noise(256 * 256 * 3, 7, seed=1))


def large_png() -> bytes:
    return png(1024, 1024, noise(1024 * 1024 * 3, 6, seed=2))


def tiny_png() -> bytes:
    return png(1, 1, b"\x28\x78\xc8")


def upload_png() -> bytes:
    """~1 MB: a square 1024x1024 PNG, its top third incompressible noise, the rest flat."""
    noisy_rows = 341
    pixels = noise(1024 * noisy_rows * 3, 8, seed=3) + bytes(1024 * (1024 - noisy_rows) * 3)
    return png(1024, 1024, pixels, level=6)


def noise_png(megabytes: float, seed: int = 4) -> bytes:
    """A square RGB PNG of about `megabytes` MB (2**20 bytes): incompressible noise, stored uncompressed."""
    edge = max(1, int((megabytes * 2**20 / 3) ** 0.5))
    return png(edge, edge, noise(edge * edge * 3, 8, seed=seed), level=0)


def response_body(kind: str, image: bytes) -> bytes:
    """The JSON an OpenAI Images endpoint answers for one base64 image (pretty-printed, as OpenAI does)."""
    b64 = base64.b64encode(image).decode("ascii")
    if kind == "large":
        body: dict[str, object] = {
            "created": CREATED,
            "background": "opaque",
            "data": [{"b64_json": b64}],
            "output_format": "png",
            "quality": "high",
            "size": "1024x1024",
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
                "output_tokens": 4160,
                "total_tokens": 4210,
            },
        }
    else:
        body = {"created": CREATED, "data": [{"b64_json": b64}]}
    return json.dumps(body, indent=2).encode()


def select_response(body: bytes | bytearray, content_type: str) -> tuple[str, int | None]:
    """Which response the upstream answers a request body with: (kind, variant or None)."""
    if b"bench-tiny" in body:
        kind = "tiny"
    elif b"256x256" in body:
        kind = "small"
    else:
        kind = "large"
    variant = None
    if content_type.startswith("application/json"):
        match = _VARIANT.search(body, 0, 4096)
        if match:
            variant = int(match.group(1))
    return kind, variant


@dataclass(frozen=True)
class RequestSpec:
    """One HTTP request the load generator sends."""

    method: str
    path: str
    content_type: str
    body: bytes


def generation_request(model: str, prompt: str, size: str, **extra: object) -> RequestSpec:
    fields: dict[str, object] = {"model": model, "prompt": prompt, "n": 1, "size": size, **extra}
    return RequestSpec("POST", "/v1/images/generations", "application/json", json.dumps(fields).encode())


def small_request(prompt: str = "bench small: a watercolor kestrel") -> RequestSpec:
    return generation_request("dall-e-2", prompt, "256x256", response_format="b64_json")


def large_request(prompt: str = "bench large: a watercolor kestrel") -> RequestSpec:
    return generation_request("gpt-image-1.5", prompt, "1024x1024", quality="high")


def tiny_request(index: int) -> RequestSpec:
    return generation_request("dall-e-2", f"bench-tiny-{index:05d}", "256x256", response_format="b64_json")


def variant_request(index: int) -> RequestSpec:
    return large_request(f"bench-var-{index:05d} a watercolor kestrel")


def edit_request(upload: bytes) -> RequestSpec:
    """A multipart edit as the OpenAI SDK sends it (fields, then the file part)."""
    parts = []
    for name, value in (
        ("model", "gpt-image-1.5"),
        ("prompt", "bench edit: add a full moon"),
        ("size", "1024x1024"),
        ("n", "1"),
    ):
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="bench.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + upload
        + b"\r\n"
    )
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return RequestSpec("POST", "/v1/images/edits", f"multipart/form-data; boundary={BOUNDARY}", b"".join(parts))


# What each workload sends, and which upstream body a faithful proxy answers it with.
WORKLOAD_RESPONSE = {"small": "small", "large": "large", "edit": "large"}
WORKLOADS = tuple(WORKLOAD_RESPONSE)


@dataclass(frozen=True)
class BodySet:
    """The bodies of one run, as files in `root` that the upstream and load generator read."""

    root: Path

    def response(self, kind: str) -> Path:
        return self.root / f"response-{kind}.json"

    def image(self, kind: str) -> Path:
        return self.root / f"image-{kind}.png"

    def request(self, workload: str) -> Path:
        return self.root / f"request-{workload}.bin"

    def request_spec(self, workload: str) -> RequestSpec:
        meta = json.loads((self.root / f"request-{workload}.meta.json").read_text())
        return RequestSpec(meta["method"], meta["path"], meta["content_type"], self.request(workload).read_bytes())

    def write_request(self, name: str, spec: RequestSpec) -> Path:
        self.request(name).write_bytes(spec.body)
        meta = {"method": spec.method, "path": spec.path, "content_type": spec.content_type}
        (self.root / f"request-{name}.meta.json").write_text(json.dumps(meta))
        return self.request(name)

    def sizes(self) -> dict[str, int]:
        return {kind: self.response(kind).stat().st_size for kind in RESPONSE_KINDS}


def build(root: Path) -> BodySet:
    """Write every body of the run into `root` (about 0.3 s)."""
    root.mkdir(parents=True, exist_ok=True)
    bodies = BodySet(root)
    for kind, make in (("small", small_png), ("large", large_png), ("tiny", tiny_png)):
        image = make()
        bodies.image(kind).write_bytes(image)
        bodies.response(kind).write_bytes(response_body(kind, image))
    upload = upload_png()
    bodies.image("upload").write_bytes(upload)
    bodies.write_request("small", small_request())
    bodies.write_request("large", large_request())
    bodies.write_request("edit", edit_request(upload))
    return bodies
