"""Providers by name: built-ins and third-party entry points load alike, lazily, with clear errors."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import openai
import pytest

import allm_proxy.adapters
from allm_proxy import AdapterInfo, Engine, ImageRequest, generate_image
from allm_proxy.adapters import ENTRY_POINT_GROUP, AdapterLoadError, AdapterRegistry
from allm_proxy.adapters.fake import INFO as FAKE_INFO
from tests.support.asgi_server import free_port
from tests.support.tiny_adapter import install_tiny_adapter

TINY = "tests.support.tiny_adapter"


def entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def registry_with(*points: EntryPoint) -> AdapterRegistry:
    return AdapterRegistry(entry_points=lambda: list(points))


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> AdapterRegistry:
    """The process-wide registry, replaced for one test so nothing it installs leaks into others."""
    registry = AdapterRegistry()
    monkeypatch.setattr(allm_proxy.adapters, "_REGISTRY", registry)
    return registry


@pytest.fixture
def tiny_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: AdapterRegistry) -> Path:
    root = install_tiny_adapter(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    return root


# -- lookups -------------------------------------------------------------------------------------


def test_builtins_are_known_without_importing_them() -> None:
    registry = registry_with()
    assert registry.names() == ["fake", "gemini", "openai"]
    assert registry.get("fake") is FAKE_INFO


def test_an_unknown_name_lists_every_known_one_entry_points_included() -> None:
    registry = registry_with(entry("tiny", "somewhere:INFO"))
    with pytest.raises(ValueError, match="unknown image adapter 'tnyi'; known adapters: fake, gemini, openai, tiny"):
        registry.get("tnyi")


def test_an_entry_point_module_is_imported_on_first_lookup_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "tiny_adapter", raising=False)
    registry = registry_with(entry("tiny", "tiny_adapter:info"))
    assert "tiny" in registry.names()
    assert "tiny_adapter" not in sys.modules  # listing names imports nothing


def test_a_package_installed_after_the_first_lookup_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: AdapterRegistry
) -> None:
    assert "tiny" not in fresh_registry.names()
    monkeypatch.syspath_prepend(str(install_tiny_adapter(tmp_path / "site")))
    assert fresh_registry.get("tiny").name == "tiny"


def test_an_entry_point_may_name_an_info_object() -> None:
    registry = AdapterRegistry(entry_points=lambda: [entry("fake", "allm_proxy.adapters.fake:INFO")], builtins={})
    assert registry.get("fake") is FAKE_INFO


def test_an_entry_point_may_name_a_callable_returning_an_info(tiny_installed: Path) -> None:
    # tiny's entry point is `tiny_adapter:info`, a function.
    info = allm_proxy.adapters.get_adapter_info("tiny")
    assert (info.name, info.needs_key, info.model_default.fixed, info.rules) == ("tiny", False, "tiny-1", "openai")


def test_a_builtin_name_cannot_be_taken_by_an_entry_point() -> None:
    registry = registry_with(entry("fake", "nowhere_at_all:INFO"))
    assert registry.get("fake") is FAKE_INFO


def test_an_adapter_registered_by_hand_replaces_a_builtin() -> None:
    registry = registry_with()
    mine = AdapterInfo(name="openai", factory=FAKE_INFO.factory, needs_key=False)
    registry.register(mine)
    assert registry.get("openai") is mine


# -- broken entry points -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("no_such_module_for_allm:INFO", "could not be loaded: ModuleNotFoundError"),
        (f"{TINY}:NO_SUCH_NAME", "could not be loaded: AttributeError"),
        (f"{TINY}:TINY_SOURCE", "gave a str, not an AdapterInfo"),
        (f"{TINY}:install_tiny_adapter", "could not be loaded: TypeError"),  # a callable that needs arguments
    ],
)
def test_a_broken_entry_point_is_an_error_naming_it(value: str, words: str) -> None:
    registry = registry_with(entry("broken", value))
    with pytest.raises(AdapterLoadError) as error:
        registry.get("broken")
    message = str(error.value)
    assert "'broken'" in message and value in message and ENTRY_POINT_GROUP in message and words in message
    assert registry.get("fake") is FAKE_INFO  # the others still load


def test_an_entry_point_whose_info_has_another_name_is_refused() -> None:
    registry = registry_with(entry("other", "allm_proxy.adapters.fake:INFO"))
    with pytest.raises(AdapterLoadError, match="named 'fake'; the two names must be the same"):
        registry.get("other")


@pytest.mark.slow  # subprocess: `allm-proxy serve`
def test_a_broken_entry_point_fails_serve_as_a_usage_error(tmp_path: Path) -> None:
    root = install_tiny_adapter(tmp_path / "site", entry_point="tiny_adapter:no_such_thing")
    result = run_cli(["serve", "--provider", "tiny", "--port", str(free_port())], root)
    assert result.returncode == 2, result.stderr
    assert "'tiny'" in result.stderr and "tiny_adapter:no_such_thing" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # subprocess: `allm-proxy serve`
def test_an_unknown_provider_fails_serve_naming_every_known_one(tmp_path: Path) -> None:
    result = run_cli(["serve", "--provider", "tnyi", "--port", str(free_port())], install_tiny_adapter(tmp_path))
    assert result.returncode == 2
    assert "known adapters: fake, gemini, openai, tiny" in result.stderr


# -- a third-party adapter, installed ------------------------------------------------------------


def test_engine_generates_through_an_installed_entry_point_adapter(tiny_installed: Path) -> None:
    with Engine(image_adapter="tiny") as engine:
        answer = generate_image(engine, "a kestrel", n=2, response_format="b64_json")
    assert [image.revised_prompt for image in answer.images] == ["tiny: a kestrel"] * 2
    assert answer.images[0].to_binary().startswith(b"\x89PNG")
    unknown_model = ImageRequest(operation="generate", prompt="x", model="tiny-9000")
    assert engine.route(unknown_model).family.name == "openai-generic"  # it said it follows OpenAI's rules


def test_an_installed_adapter_rejects_a_misspelt_option_too(tiny_installed: Path) -> None:
    with (
        Engine(image_adapter="tiny", image_adapter_opts={"color": "red"}) as engine,
        pytest.raises(ValueError, match=r"\['color'\]; known: api_key, api_key_env, colour"),
    ):
        generate_image(engine, "a kestrel")


@pytest.mark.slow  # subprocess: `allm-proxy serve`
def test_serve_provider_tiny_answers_a_real_sdk_call(tmp_path: Path) -> None:
    root = install_tiny_adapter(tmp_path / "site")
    port = free_port()
    with serving_cli(["serve", "--provider", "tiny", "--port", str(port)], root) as base_url:
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-test-tiny", max_retries=0)
        answer = client.images.generate(prompt="a heron", response_format="b64_json")
        health = httpx.get(base_url + "/healthz", timeout=5).json()
    assert answer.data and answer.data[0].revised_prompt == "tiny: a heron"
    assert base64.b64decode(answer.data[0].b64_json or "").startswith(b"\x89PNG")
    assert "tiny" in str(health)


# -- helpers -------------------------------------------------------------------------------------


def cli_command(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from allm_proxy.cli import main; main()", *args]


def cli_env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLM_PROXY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_cli(args: list[str], site: Path) -> subprocess.CompletedProcess[str]:
    # A subprocess with a timeout: should the check not fail, the server it starts is killed.
    return subprocess.run(cli_command(args), env=cli_env(site), capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def serving_cli(args: list[str], site: Path) -> Iterator[str]:
    """`allm-proxy ARGS` in a subprocess; yields its base URL once /healthz answers; stops it by PID."""
    port = int(args[args.index("--port") + 1])
    base_url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        cli_command(args), env=cli_env(site), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve exited with {process.returncode}: {process.communicate()[1]}")
            try:
                httpx.get(base_url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise AssertionError("serve did not answer /healthz within 30 s") from None
                time.sleep(0.1)
        yield base_url
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        process.communicate()
