"""A cassette miss is raised beneath the adapters and reaches the client untouched, whichever the adapter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import openai
import pytest

from allm_proxy import Engine
from allm_proxy.config import CassetteSettings
from tests.support.asgi_server import running_proxy
from tests.upstreams.gemini_upstream import VALID_KEY as GEMINI_KEY
from tests.upstreams.gemini_upstream import FakeGemini
from tests.upstreams.openai_upstream import FakeOpenAI

OPENAI_KEY = "sk-test-cassette-miss"
MODELS = {"gemini": "gemini-3-pro-image", "openai": "gpt-image-1"}


def engine_for(provider: str, upstream_url: str, cassette: Path, record_mode: str) -> Engine:
    base_url = upstream_url + "/v1" if provider == "openai" else upstream_url
    return Engine(
        image_adapter=provider,
        image_adapter_opts={"base_url": base_url},
        env={"GEMINI_API_KEY": GEMINI_KEY, "OPENAI_API_KEY": OPENAI_KEY},
        cassettes=CassetteSettings(path=str(cassette), record_mode=record_mode),
    )


def upstream_for(provider: str) -> Callable[[], AbstractContextManager[str]]:
    return (FakeGemini() if provider == "gemini" else FakeOpenAI()).serving


def record_a_kestrel(provider: str, cassette: Path) -> str:
    """Record one generation of "a kestrel" (n=1) into `cassette`; the upstream's URL, stopped by now."""
    with (
        upstream_for(provider)() as upstream_url,
        running_proxy(engine_for(provider, upstream_url, cassette, "once")) as url,
    ):
        recorder = openai.OpenAI(base_url=url + "/v1", api_key="sk-test-client", max_retries=0)
        recorder.images.generate(model=MODELS[provider], prompt="a kestrel", n=1)
    assert cassette.exists()
    return upstream_url


@pytest.fixture(params=["gemini", "openai"])
def replaying(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, openai.OpenAI]]:
    """A proxy replaying (record mode none) a cassette that holds one generation of "a kestrel", n=1."""
    provider: str = request.param
    cassette = tmp_path / f"{provider}.yaml"
    upstream_url = record_a_kestrel(provider, cassette)  # the upstream is gone now: only the cassette answers
    with running_proxy(engine_for(provider, upstream_url, cassette, "none")) as url:
        yield provider, openai.OpenAI(base_url=url + "/v1", api_key="sk-test-client", max_retries=0)


def test_a_recorded_call_replays(replaying: tuple[str, openai.OpenAI]) -> None:
    provider, client = replaying
    answer = client.images.generate(model=MODELS[provider], prompt="a kestrel", n=1)
    assert answer.data and answer.data[0].b64_json


def test_an_unrecorded_call_reaches_the_client_as_cassette_miss(replaying: tuple[str, openai.OpenAI]) -> None:
    provider, client = replaying
    with pytest.raises(openai.BadRequestError) as miss:
        client.images.generate(model=MODELS[provider], prompt="a heron, never recorded", n=1)
    assert miss.value.status_code == 400
    assert miss.value.code == "cassette_miss"


def test_a_miss_in_one_of_n_calls_is_not_hidden_behind_a_partial_answer(tmp_path: Path) -> None:
    # Gemini fans n=2 out into two identical calls; the cassette holds one answer, so the second
    # call misses. A partial answer with one image would hide that the cassette is out of date.
    cassette = tmp_path / "gemini.yaml"
    upstream_url = record_a_kestrel("gemini", cassette)
    with running_proxy(engine_for("gemini", upstream_url, cassette, "none")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test-client", max_retries=0)
        with pytest.raises(openai.BadRequestError) as miss:
            client.images.generate(model="gemini-3-pro-image", prompt="a kestrel", n=2)
    assert miss.value.code == "cassette_miss"
