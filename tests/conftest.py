"""Shared fixtures: a running proxy around any Engine, tiny test images."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from PIL import Image as PILImage

from allm_proxy import Engine, ProxyConfig
from allm_proxy.server import create_app
from tests.support.asgi_server import serve_asgi
from tests.upstreams.openai_upstream import FakeOpenAI


@contextmanager
def running_proxy(engine: Engine, config: ProxyConfig | None = None) -> Iterator[str]:
    """Serve `engine` on a free loopback port; yields the base URL without /v1."""
    with serve_asgi(create_app(engine, config)) as url:
        yield url


@pytest.fixture
def proxy() -> Callable[..., AbstractContextManager[str]]:
    """`with proxy(engine) as url:` starts the proxy for one test."""
    return running_proxy


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeOpenAI, str]]:
    """A fake OpenAI upstream shared by one test module: (the fake, its base URL without /v1)."""
    upstream = FakeOpenAI()
    with upstream.serving() as url:
        yield upstream, url


@pytest.fixture
def upstream(served: tuple[FakeOpenAI, str]) -> FakeOpenAI:
    """The module's fake OpenAI upstream, its recordings and scripted replies cleared."""
    served[0].clear()
    return served[0]


@pytest.fixture(scope="session")
def fake_proxy_url() -> Iterator[str]:
    """One proxy on the fake provider for the whole session (tests must not depend on its state)."""
    with running_proxy(Engine()) as url:
        yield url


def png_bytes(size: tuple[int, int] = (64, 64), color: tuple[int, ...] = (40, 120, 200, 255),
              mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    PILImage.new(mode, size, color[: len(mode)] if mode != "L" else color[0]).save(buf, format="PNG")
    return buf.getvalue()


def noise_png(size: tuple[int, int], seed: int = 7, mode: str = "RGB") -> bytes:
    """A picture whose every pixel differs from its neighbours, so any change shows."""
    w, h = size
    data = bytes((x * 37 + y * 91 + seed * 13 + c * 59) % 256 for y in range(h) for x in range(w) for c in range(3))
    buf = io.BytesIO()
    PILImage.frombytes("RGB", size, data).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def half_transparent_mask(size: tuple[int, int]) -> bytes:
    """Opaque left half (kept), fully transparent right half (edited)."""
    mask = PILImage.new("RGBA", size, (0, 0, 0, 255))
    w, h = size
    mask.paste((0, 0, 0, 0), (w // 2, 0, w, h))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()
