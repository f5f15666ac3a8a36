"""The pytest plugin, run on a small test suite with pytester: record, replay, miss, xdist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.upstreams.openai_upstream import FakeOpenAI

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.slow  # a pytester suite per test, with a proxy per xdist worker

SUITE = """
import os

import openai
import pytest


@pytest.fixture
def allm_config():
    return {"provider": "openai", "options": {"base_url": os.environ["ALLM_TEST_UPSTREAM"] + "/v1"}}


@pytest.mark.allm_cassette
def test_marker_points_openai_clients_at_the_proxy():
    assert os.environ["OPENAI_API_KEY"]
    answer = openai.OpenAI(max_retries=0).images.generate(model="gpt-image-1", prompt="a kestrel")
    assert answer.data[0].b64_json


@pytest.mark.allm_cassette("shared/named", provider="openai")
def test_marker_names_the_cassette():
    answer = openai.OpenAI(max_retries=0).images.generate(model="gpt-image-1", prompt="a heron", n=2)
    assert len(answer.data) == 2


class TestInAClass:
    @pytest.mark.parametrize("animal", ["owl", "wren"])
    def test_fixture_gives_the_proxy_url(self, allm_cassette, animal):
        client = openai.OpenAI(base_url=allm_cassette.base_url, api_key="sk-test-anything", max_retries=0)
        assert client.images.generate(model="gpt-image-1", prompt=animal).data[0].b64_json
"""


@pytest.fixture
def upstream(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\naddopts = -p no:cacheprovider\n")
    fake = FakeOpenAI()
    with fake.serving() as url:
        monkeypatch.setenv("ALLM_TEST_UPSTREAM", url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        yield fake


def cassettes(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "cassettes").rglob("*.json"))


def test_record_once_then_replay_by_default_with_the_upstream_stopped(
    pytester: pytest.Pytester, upstream: FakeOpenAI
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("--allm-record-mode=once").assert_outcomes(passed=4)
    assert len(upstream.requests) == 4
    assert cassettes(pytester.path) == [
        "cassettes/shared/named.json",
        "cassettes/test_suite/TestInAClass.test_fixture_gives_the_proxy_url[owl].json",
        "cassettes/test_suite/TestInAClass.test_fixture_gives_the_proxy_url[wren].json",
        "cassettes/test_suite/test_marker_points_openai_clients_at_the_proxy.json",
    ]
    upstream.requests.clear()
    pytester.runpytest().assert_outcomes(passed=4)  # record mode none: answers come from the cassettes
    assert upstream.requests == []


def test_a_test_without_its_cassette_fails_with_a_cassette_miss(
    pytester: pytest.Pytester, upstream: FakeOpenAI
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-k", "points_openai")
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(["*cassette_miss*"])
    assert upstream.requests == []


def test_replay_under_xdist_with_a_proxy_per_worker(pytester: pytest.Pytester, upstream: FakeOpenAI) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("--allm-record-mode=once").assert_outcomes(passed=4)
    upstream.requests.clear()
    pytester.runpytest("-n", "2").assert_outcomes(passed=4)
    assert upstream.requests == []


def test_cassette_dir_option_and_the_options_group(pytester: pytest.Pytester, upstream: FakeOpenAI) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("--allm-record-mode=once", "--allm-cassette-dir=recorded", "-k", "names_the").assert_outcomes(
        passed=1, deselected=3
    )
    assert (pytester.path / "recorded" / "shared" / "named.json").is_file()
    help_text = pytester.runpytest("--help").stdout.str()
    assert "allm-proxy record-then-replay cassettes:" in help_text and "--allm-record-mode" in help_text


LOADED_AT_SETUP = """
import sys

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    loaded = [name for name in ("allm_proxy.server", "allm_proxy.cassettes.library", "vcr") if name in sys.modules]
    print(f"loaded before {item.name}: {loaded}")
"""

MARKED_AND_PLAIN = """
import pytest


@pytest.mark.allm_cassette(provider="fake")
def test_marker_only():
    pass


def test_plain():
    pass
"""


def test_the_server_and_the_cassette_layer_are_imported_after_collection_only_for_a_cassette_test(
    pytester: pytest.Pytester,
) -> None:
    """So that the first proxy starts in tens of milliseconds when its test asks (issue 15's "ready
    <= 0.3 s"). The README's usage is the marker alone, whose fixture is asked for only at setup."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\naddopts = -p no:cacheprovider\n")
    pytester.makeconftest(LOADED_AT_SETUP)
    pytester.makepyfile(test_suite=MARKED_AND_PLAIN)
    plain = pytester.runpytest_subprocess("-s", "-k", "plain")  # its own process: a fresh sys.modules
    plain.assert_outcomes(passed=1, deselected=1)
    assert "loaded before test_plain: []" in plain.stdout.str()
    marked = pytester.runpytest_subprocess("-s", "-k", "marker_only")
    marked.assert_outcomes(passed=1, deselected=1)
    warmed = "loaded before test_marker_only: ['allm_proxy.server', 'allm_proxy.cassettes.library', 'vcr']"
    assert warmed in marked.stdout.str()
