"""Shared fixtures: a running proxy around any Engine, a fake OpenAI upstream per module.

Fixtures only: helpers live in tests/support/ (images.py, asgi_server.py, ...), fake upstreams in
tests/upstreams/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from allm_proxy import Engine
from tests.support.asgi_server import running_proxy

# Old import paths, kept for one release for branches that still import them from here.
from tests.support.images import half_transparent_mask as half_transparent_mask
from tests.support.images import noise_png as noise_png
from tests.support.images import png_bytes as png_bytes
from tests.upstreams.openai_upstream import FakeOpenAI


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
    served[0].reset()
    return served[0]


@pytest.fixture(scope="session")
def fake_proxy_url() -> Iterator[str]:
    """One proxy on the fake provider for the whole session (tests must not depend on its state)."""
    with running_proxy(Engine()) as url:
        yield url
