"""The pytest plugin's `allm_cassette.requests`: this test's journal entries, and only this test's."""

from __future__ import annotations

import pytest

from tests.test_pytest_plugin import upstream  # noqa: F401  (the fixture: a fake OpenAI for the suite)
from tests.upstreams.openai_upstream import FakeOpenAI

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.slow  # a pytester suite in a subprocess

SUITE = """
import os

import openai
import pytest


@pytest.fixture
def allm_config():
    return {"provider": "openai", "options": {"base_url": os.environ["ALLM_TEST_UPSTREAM"] + "/v1"}}


def test_first_sees_its_own_request(allm_cassette):
    openai.OpenAI(max_retries=0).images.generate(model="gpt-image-1", prompt="a kestrel", size="1024x1024")
    assert len(allm_cassette.requests) == 1
    assert allm_cassette.requests[0]["params"]["size"] == "1024x1024"
    assert allm_cassette.requests[0]["source"] == "upstream"


def test_second_sees_only_its_own(allm_cassette):
    client = openai.OpenAI(max_retries=0)
    client.images.generate(model="gpt-image-1", prompt="a heron", size="1536x1024")
    client.images.generate(model="gpt-image-1", prompt="a wren", size="1024x1536")
    assert [r["params"]["prompt"] for r in allm_cassette.requests] == ["a heron", "a wren"]
    assert allm_cassette.requests[0]["images"][0]["sha256"]
"""


def test_allm_cassette_requests_holds_the_current_tests_entries(
    pytester: pytest.Pytester,
    upstream: FakeOpenAI,  # noqa: F811
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--allm-record-mode=once")
    result.assert_outcomes(passed=2)
    assert len(upstream.requests) == 3
