"""GET /metrics moves with requests, correctly labelled; x-allm-cost-usd is the hand-computed price."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from allm_proxy import Engine
from allm_proxy.config import CassetteSettings, ProxyConfig, config_from_mapping
from allm_proxy.metrics import Metrics
from allm_proxy.pricing import PriceTable
from allm_proxy.types import Usage
from tests.conftest import running_proxy
from tests.support.cassette_helpers import OPENAI_KEY
from tests.upstreams.openai_upstream import FakeOpenAI

# gpt-image-1: $5 per million input text tokens, $40 per million output tokens. The fake upstream
# reports 10 text tokens in and 50 out per image: (10 * 5 + 50 * 40) / 1e6 = 0.00205 USD.
GPT_IMAGE_1_ONE_IMAGE = (10 * 5.0 + 50 * 40.0) / 1_000_000


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in the text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def openai_engine(upstream_url: str, **kwargs: Any) -> Engine:
    return Engine(
        image_adapter="openai", image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY}, **kwargs
    )


def generate(base: str, model: str, **fields: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/images/generations", json={"model": model, "prompt": "a heron", **fields}, timeout=30)


def recorded_cassette(cassette: Path, *requests: dict[str, object]) -> tuple[str, str]:
    """Record `requests` (gpt-image-1 fields) into `cassette`; (the gone upstream's URL, the metrics text)."""
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        recording = openai_engine(upstream_url, cassettes=CassetteSettings(path=str(cassette), record_mode="once"))
        with running_proxy(recording) as base:
            for fields in requests:
                assert generate(base, **fields).status_code == 200  # type: ignore[arg-type]
            return upstream_url, httpx.get(f"{base}/metrics").text


def test_counters_and_histograms_move_as_requests_are_made_correctly_labelled() -> None:
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url, running_proxy(openai_engine(upstream_url)) as base:
        before = httpx.get(f"{base}/metrics").text
        for _ in range(3):
            assert generate(base, "gpt-image-1", size="1024x1024").status_code == 200
        assert generate(base, "gpt-image-1", size="7x7").status_code == 400  # the proxy's own 400
        after = httpx.get(f"{base}/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    ok = {"operation": "generate", "model": "gpt-image-1", "provider": "openai"}
    assert sample(text, "allm_requests_total", **ok, status="200", source="upstream") == 3
    assert sample(before, "allm_requests_total", **ok, status="200", source="upstream") == 0
    assert sample(text, "allm_requests_total", **ok, status="400", source="proxy") == 1
    assert sample(text, "allm_request_duration_seconds_count", operation="generate", provider="openai") == 4
    assert sample(text, "allm_upstream_duration_seconds_count", provider="openai") == 3
    assert sample(text, "allm_images_total", provider="openai", model="gpt-image-1") == 3
    assert sample(text, "allm_tokens_total", provider="openai", model="gpt-image-1", kind="input_text") == 30
    assert sample(text, "allm_tokens_total", provider="openai", model="gpt-image-1", kind="output") == 150
    assert sample(text, "allm_cost_usd_total", provider="openai", model="gpt-image-1") == pytest.approx(
        3 * GPT_IMAGE_1_ONE_IMAGE
    )
    assert sample(text, "allm_inflight_requests") == 0
    assert OPENAI_KEY not in text


def test_the_cost_header_is_the_hand_computed_price_and_an_unknown_model_has_none() -> None:
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url, running_proxy(openai_engine(upstream_url)) as base:
        known = generate(base, "gpt-image-1", size="1024x1024")
        assert known.status_code == 200
        assert float(known.headers["x-allm-cost-usd"]) == pytest.approx(GPT_IMAGE_1_ONE_IMAGE)
        two = generate(base, "gpt-image-1", size="1024x1024", n=2)
        assert float(two.headers["x-allm-cost-usd"]) == pytest.approx((10 * 5.0 + 100 * 40.0) / 1e6)
        # gpt-image-2.5 reports usage, but the table has no price for it (gpt-image-2's is another
        # model's): no cost, never a guess.
        unknown = generate(base, "gpt-image-2.5", size="1024x1024")
        assert unknown.status_code == 200 and unknown.json()["usage"]["output_tokens"] == 50
        assert "x-allm-cost-usd" not in unknown.headers


def test_a_replayed_answer_carries_the_cost_it_saved_and_counts_as_a_cassette_hit(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    upstream_url, recorded = recorded_cassette(cassette, {"model": "gpt-image-1", "size": "1024x1024"})
    replaying = openai_engine(upstream_url, cassettes=CassetteSettings(path=str(cassette), record_mode="none"))
    with running_proxy(replaying) as base:  # the upstream is gone: only the cassette can answer
        replayed = generate(base, "gpt-image-1", size="1024x1024")
        missed = generate(base, "gpt-image-1", size="1024x1536")
        text = httpx.get(f"{base}/metrics").text
    assert sample(recorded, "allm_cassette_events_total", event="recorded") == 1
    assert float(replayed.headers["x-allm-cost-usd"]) == pytest.approx(GPT_IMAGE_1_ONE_IMAGE)
    assert missed.status_code == 400
    assert sample(text, "allm_cassette_events_total", event="hit") == 1
    assert sample(text, "allm_cassette_events_total", event="miss") == 1
    assert sample(text, "allm_requests_total", operation="generate", status="200", source="cassette") == 1


def test_metrics_need_the_access_token_unless_public() -> None:
    guarded = ProxyConfig(access_token="tok-metrics")
    with running_proxy(Engine(), guarded) as base:
        refused = httpx.get(f"{base}/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{base}/metrics", headers={"authorization": "Bearer tok-metrics"}).status_code == 200
    public = config_from_mapping({"server": {"access_token": "tok-metrics", "public_metrics": True}})
    with running_proxy(Engine(), public) as base:
        assert httpx.get(f"{base}/metrics").status_code == 200


def test_model_labels_are_bounded_and_never_carry_a_key() -> None:
    metrics = Metrics(model_limit=2)
    assert metrics.model_label("gpt-image-1", known=True) == "gpt-image-1"
    assert metrics.model_label("sk-test-abc012345", known=False) == "other"
    assert [metrics.model_label(f"mine-{i}", known=False) for i in range(4)] == ["mine-0", "mine-1", "other", "other"]
    assert metrics.model_label("mine-0", known=False) == "mine-0"


def test_the_price_table_takes_the_longest_prefix_and_config_overrides_it() -> None:
    table = PriceTable.from_config({"gpt-image-1-mini": {"output": 1.0}, "house-": {"per_image": {"*": {"*": 0.5}}}})
    assert table.cost("dall-e-3", images=2, quality="hd", size="1024x1792") == pytest.approx(0.24)
    assert table.cost("dall-e-3", images=1, size="1024x1024") == pytest.approx(0.04)  # standard by default
    assert table.cost("dall-e-3", images=1, quality="ultra", size="1024x1024") is None  # never a guess
    usage = Usage(input_text_tokens=100, output_tokens=1000)
    assert table.cost("gpt-image-1-mini-2025", usage=usage) == pytest.approx(1000 * 1.0 / 1e6)
    assert table.cost("gpt-image-1", usage=usage) == pytest.approx((100 * 5 + 1000 * 40) / 1e6)
    assert table.cost("house-model", images=3) == pytest.approx(1.5)
    assert table.cost("unknown-model", images=1, usage=usage) is None
    # A key prices its own snapshots and previews, never a newer model that shares its letters.
    assert table.cost("gpt-image-2-2026-04-21", usage=usage) == pytest.approx((100 * 5 + 1000 * 30) / 1e6)
    assert table.cost("gemini-2.5-flash-image-preview", usage=usage) == pytest.approx((100 * 0.3 + 1000 * 30) / 1e6)
    for newer in ("gpt-image-2.5", "gpt-image-2-mini", "gpt-image-1.5x", "dall-e-2b"):
        assert table.lookup(newer) is None, newer
    assert PriceTable.from_config({"gpt-image-*": {"output": 2.0}}).cost("gpt-image-9", usage=usage) == pytest.approx(
        1000 * 2.0 / 1e6
    )
    with pytest.raises(ValueError, match="per_image"):
        config_from_mapping({"prices": {"x": {"input_text": 1}}})


def test_cassettes_list_shows_what_the_cassette_saved(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from allm_proxy.cli import main

    cassette = tmp_path / "c.json"
    recorded_cassette(
        cassette,
        {"model": "gpt-image-1", "size": "1024x1024"},
        {"model": "gpt-image-1", "size": "1024x1024", "n": 2},
        {"model": "gpt-image-2.5", "size": "1024x1024"},
    )  # no price: adds nothing
    result = CliRunner().invoke(main, ["cassettes", "list", str(cassette)])
    assert result.exit_code == 0, result.output
    expected = GPT_IMAGE_1_ONE_IMAGE + (10 * 5.0 + 100 * 40.0) / 1e6
    saved = re.search(r"this cassette saved \$([0-9.]+)", result.output)
    assert saved is not None and float(saved.group(1)) == pytest.approx(expected)
