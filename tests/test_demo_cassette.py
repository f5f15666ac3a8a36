"""The shipped demo cassette replays through `--provider openai` with no key and no network."""

from __future__ import annotations

import shutil
from pathlib import Path

import openai
import pytest

from allm_proxy import Engine
from allm_proxy.config import CassetteSettings
from examples.demo_calls import run
from tests.support.asgi_server import running_proxy

DEMO = Path(__file__).resolve().parents[1] / "cassettes" / "demo-openai.json"


def test_demo_cassette_replays_every_call_offline(tmp_path: Path) -> None:
    cassette = tmp_path / "demo.json"
    shutil.copy(DEMO, cassette)
    # No provider key anywhere, and the default base URL: any network call would fail.
    engine = Engine(image_adapter="openai", env={}, cassettes=CassetteSettings(path=str(cassette), record_mode="none"))
    with running_proxy(engine) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-replay", max_retries=0)
        images = run(client)
        assert len(images) == 4 and all(i.startswith(b"\x89PNG") for i in images)
        with pytest.raises(openai.BadRequestError) as info:
            client.images.generate(model="gpt-image-1.5", prompt="not in the cassette")
        assert info.value.code == "cassette_miss"
    assert cassette.read_bytes() == DEMO.read_bytes()  # replay never writes
