"""Every adapter's options share one check: a misspelt key fails, naming it and the valid keys."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from allm_proxy import Engine
from allm_proxy.adapters import AdapterOptions
from allm_proxy.adapters.fake.options import FakeOptions
from allm_proxy.adapters.gemini import GeminiOptions
from allm_proxy.adapters.openai import OpenAIOptions
from allm_proxy.adapters.options import ENGINE_KEYS
from tests.support.asgi_server import free_port

# (provider, a misspelt key, its options class): the typos users make.
MISSPELT = [
    ("fake", "scirpt", FakeOptions),
    ("openai", "max_retrys", OpenAIOptions),
    ("gemini", "max_concurency", GeminiOptions),
]


def valid_keys_listed(message: str, options: type[AdapterOptions]) -> bool:
    return all(key in message for key in options.own_keys() | ENGINE_KEYS)


@pytest.mark.parametrize(("provider", "typo", "options"), MISSPELT)
def test_a_misspelt_option_fails_preparing_the_engine(provider: str, typo: str, options: type[AdapterOptions]) -> None:
    engine = Engine(image_adapter=provider, image_adapter_opts={typo: 2})

    async def prepare() -> None:
        try:
            await engine.prepare()
        finally:
            await engine.aclose()

    with pytest.raises(ValueError) as error:
        asyncio.run(prepare())
    message = str(error.value)
    assert f"unknown options for the {provider} provider: ['{typo}']" in message
    assert valid_keys_listed(message, options)


@pytest.mark.slow  # subprocess: `allm-proxy serve`
@pytest.mark.parametrize(("provider", "typo", "options"), MISSPELT)
def test_a_misspelt_option_fails_serve_at_start_up_as_a_usage_error(
    tmp_path: Path, provider: str, typo: str, options: type[AdapterOptions]
) -> None:

    config = tmp_path / "allm.toml"
    config.write_text(f'provider = "{provider}"\n\n[providers.{provider}]\n{typo} = 2\n')
    # A subprocess with a timeout: should the check not fail, the server it starts is killed.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from allm_proxy.cli import main; main()",
            "serve",
            "--config",
            str(config),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr  # click's usage-error status
    assert typo in result.stderr and valid_keys_listed(result.stderr, options)
    assert "Traceback" not in result.stderr


def test_valid_keys_are_the_dataclass_fields_plus_the_engines() -> None:
    assert GeminiOptions.valid_keys() == {
        "base_url",
        "api_version",
        "variations",
        "mask_hint",
        "max_concurrency",
        "safety_code",
        *ENGINE_KEYS,
    }
    assert OpenAIOptions.valid_keys() == {"base_url", "max_retries", *ENGINE_KEYS}


def test_engine_keys_are_accepted_by_every_adapter() -> None:
    for options in (FakeOptions, OpenAIOptions, GeminiOptions):
        options.from_mapping({"api_key": "sk-test-x", "api_key_env": "X_KEY", "materialize_urls": True})


def test_a_third_party_options_class_gets_the_same_check() -> None:
    @dataclass(frozen=True)
    class TinyOptions(AdapterOptions):
        provider: ClassVar[str] = "tiny"
        colour: str = "teal"

    assert TinyOptions.from_mapping({"colour": "red"}).colour == "red"
    with pytest.raises(ValueError, match=r"unknown options for the tiny provider: \['color'\]; known: .*colour"):
        TinyOptions.from_mapping({"color": "red"})


def test_values_are_still_checked_after_the_keys() -> None:
    with pytest.raises(ValueError, match="max_concurrency = 0 must be an integer from 1 to 64"):
        GeminiOptions.from_mapping({"max_concurrency": 0})
    assert FakeOptions.from_mapping({"cache_entries": "8"}).cache_entries == 8
