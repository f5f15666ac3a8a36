"""The resolved config survives the trip to a worker process exactly (JSON in the environment)."""

from __future__ import annotations

import pytest

from allm_proxy.config import CassetteSettings, JournalSettings, ModelAlias, ProxyConfig, RecordMode, ServerLimits
from allm_proxy.config_codec import config_from_json, config_to_json
from allm_proxy.faults.grammar import parse_faults
from allm_proxy.state.settings import StateSettings


def test_every_nested_setting_round_trips_through_json() -> None:
    config = ProxyConfig(
        host="0.0.0.0",
        port=9100,
        provider="openai",
        default_model="gpt-image-1.5",
        access_token="team-token",
        max_body_bytes=1234,
        log_level="debug",
        timeout=12.5,
        workers=3,
        providers={"openai": {"base_url": "http://127.0.0.1:1/v1", "materialize_urls": True}},
        aliases={"dall-e-3": ModelAlias(name="dall-e-3", provider="gemini", model="gemini-3-pro-image")},
        families={"gpt-image-3": {"like": "gpt-image-2", "match": ["gpt-image-3"]}},
        cassettes=CassetteSettings(
            path="c.yaml", record_mode="new_episodes", match_on=("method", "body"), filter_headers=("x-secret",)
        ),
        limits=ServerLimits(header_timeout=3.0, max_connections=None),
        journal=JournalSettings(enabled=False, max_entries=5),
        faults=parse_faults("rate_limit; times=1, latency; ms=300; p=0.5"),
        fault_seed=7,
        state=StateSettings(url="redis://127.0.0.1:6379/2", prefix="team:"),
        public_metrics=True,
        prices={"gpt-image-2": {"output": 32.0}},
    )
    back = config_from_json(config_to_json(config))
    assert back == config
    assert isinstance(back.cassettes.record_mode, RecordMode) and isinstance(back.cassettes.match_on, tuple)
    assert isinstance(back.faults, tuple) and back.faults[1].ms == 300


def test_the_defaults_round_trip() -> None:
    assert config_from_json(config_to_json(ProxyConfig())) == ProxyConfig()


def test_a_value_json_cannot_carry_is_a_clear_error() -> None:
    config = ProxyConfig(providers={"openai": {"odd": object()}})
    with pytest.raises(ValueError, match="worker processes"):
        config_to_json(config)
