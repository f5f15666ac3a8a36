"""Faults in every mode: OpenAI and Gemini pass-through, record and replay. A faulted call never reaches
the upstream and is never recorded; `latency` and `slow` delay a real answer, which is recorded as it came."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from allm_proxy import Engine
from allm_proxy.config import CassetteSettings
from tests.conftest import running_proxy
from tests.support.faults import ALL_KINDS, REPLACING, check_fault
from tests.upstreams.gemini_upstream import VALID_KEY, FakeGemini
from tests.upstreams.openai_upstream import FakeOpenAI

OPENAI_KEY = "sk-test-faults-up"


def openai_engine(upstream_url: str, cassettes: CassetteSettings | None = None) -> Engine:
    return Engine(
        image_adapter="openai",
        image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY},
        cassettes=cassettes,
    )


@pytest.fixture(scope="module")
def openai_stack(served: tuple[FakeOpenAI, str]) -> Iterator[str]:
    with running_proxy(openai_engine(served[1])) as url:
        yield url


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_openai_pass_through_upstream_sees_no_faulted_call(openai_stack: str, upstream: FakeOpenAI, kind: str) -> None:
    check_fault(openai_stack + "/v1", kind)
    assert len(upstream.requests) == (0 if kind in REPLACING else 1)


def test_recording_keeps_no_faulted_interaction(
    tmp_path: Path, upstream: FakeOpenAI, served: tuple[FakeOpenAI, str]
) -> None:
    cassette = tmp_path / "faults.json"
    with running_proxy(openai_engine(served[1], CassetteSettings(path=str(cassette), record_mode="once"))) as url:
        for kind in ALL_KINDS:
            check_fault(url + "/v1", kind, prompt=f"faulted {kind}")
        openai.OpenAI(base_url=url + "/v1", api_key="sk-test-x", max_retries=0).images.generate(
            model="gpt-image-1", prompt="a plain heron"
        )
    recorded = cassette.read_text()
    assert "a plain heron" in recorded
    for kind in ALL_KINDS:
        assert (f"faulted {kind}" in recorded) is (kind not in REPLACING), kind
    assert len(upstream.requests) == 3  # latency, slow and the plain call


def test_replay_answers_faults_without_touching_the_cassette(tmp_path: Path, served: tuple[FakeOpenAI, str]) -> None:
    cassette = tmp_path / "replay.json"
    fake, upstream_url = served
    with running_proxy(openai_engine(upstream_url, CassetteSettings(path=str(cassette), record_mode="once"))) as url:
        check_fault(url + "/v1", "latency", prompt="a replayed heron")  # records the one real answer
    before = cassette.read_bytes()
    fake.reset()
    settings = CassetteSettings(path=str(cassette), record_mode="none", allow_playback_repeats=True)
    with running_proxy(openai_engine(upstream_url, settings)) as url:
        for kind in ALL_KINDS:
            check_fault(url + "/v1", kind, prompt="a replayed heron")
        replayed = openai.OpenAI(base_url=url + "/v1", api_key="sk-test-x", max_retries=0).images.generate(
            model="gpt-image-1", prompt="a replayed heron"
        )
    assert replayed.data and replayed.data[0].b64_json
    assert cassette.read_bytes() == before
    assert fake.requests == []


@pytest.fixture(scope="module")
def gemini_stack() -> Iterator[tuple[FakeGemini, str]]:
    upstream = FakeGemini()
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="gemini",
            image_adapter_opts={"base_url": upstream_url},
            aliases={"gpt-image-1": {"provider": "gemini", "model": "gemini-3-pro-image"}},
            env={"GEMINI_API_KEY": VALID_KEY},
        )
        with running_proxy(engine) as url:
            yield upstream, url


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_gemini_pass_through_upstream_sees_no_faulted_call(gemini_stack: tuple[FakeGemini, str], kind: str) -> None:
    upstream, url = gemini_stack
    upstream.reset()
    check_fault(url + "/v1", kind)
    assert len(upstream.requests) == (0 if kind in REPLACING else 1)
    assert upstream.problems == []
