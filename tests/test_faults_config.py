"""The fault grammar, the injector's choices, and where faults come from: config, flags, pytest marker."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from allm_proxy.cli import main
from allm_proxy.config import config_from_mapping, load_config
from allm_proxy.faults import KINDS, Fault, FaultInjector, FaultSpecError, parse_faults
from tests.test_hardening_shutdown import serving
from tests.test_pytest_plugin import upstream  # noqa: F401  (the pytester suite's fake OpenAI)
from tests.upstreams.openai_upstream import FakeOpenAI

pytest_plugins = ["pytester"]


def test_specs_parse_into_frozen_faults_and_print_back_canonically() -> None:
    faults = parse_faults(" rate_limit ; times=1 ,latency; ms=300; p=0.5, stream_cut; after=2; on=edits")
    assert faults == (
        Fault("rate_limit", times=1),
        Fault("latency", p=0.5, ms=300),
        Fault("stream_cut", after=2, on="edits"),
    )
    assert [str(f) for f in faults] == [
        "rate_limit; times=1",
        "latency; p=0.5; ms=300",
        "stream_cut; after=2; on=edits",
    ]
    assert parse_faults([str(f) for f in faults]) == faults
    with pytest.raises(AttributeError):
        faults[0].kind = "quota"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("nope", "allowed kinds: " + ", ".join(KINDS)),
        ("quota; when=now", "allowed keys: p, times, ms, after, on"),
        ("quota; p=1.5", "p must be between 0 and 1"),
        ("quota; p=nan", "finite"),
        ("quota; times=0", "times must be an integer of at least 1"),
        ("quota; times=1.5", "times must be an integer"),
        ("latency; ms=-1", "ms must be an integer of at least 0"),
        ("quota; ms=5", "ms applies to rate_limit, timeout, latency, slow only"),
        ("latency; after=1", "after applies to stream_cut, stream_error only"),
        ("quota; on=images", "on must be one of generations, edits, variations"),
        ("quota; times", "is not key=value"),
        ("quota; times=1; times=2", "times is given twice"),
    ],
)
def test_bad_specs_name_what_is_allowed(spec: str, named: str) -> None:
    with pytest.raises(FaultSpecError) as raised:
        parse_faults(spec)
    assert named in str(raised.value)
    assert isinstance(raised.value, ValueError)


def decisions(injector: FaultInjector, session: str, count: int, **kwargs: object) -> list[str | None]:
    out = []
    for _ in range(count):
        decision = injector.decide(
            str(kwargs.get("operation", "generate")),
            stream=bool(kwargs.get("stream")),
            session=session,
            header=kwargs.get("header"),  # type: ignore[arg-type]
        )
        out.append(decision.kind if decision else None)
    return out


def test_a_seeded_session_gets_the_same_faults_whatever_other_sessions_do() -> None:
    alone = decisions(FaultInjector(["quota; p=0.3"], seed=7), "a", 40)
    mixed = FaultInjector(["quota; p=0.3"], seed=7)
    interleaved = []
    for _ in range(40):
        decisions(mixed, "b", 3)
        interleaved += decisions(mixed, "a", 1)
    assert interleaved == alone and "quota" in alone and None in alone


def test_setting_the_list_starts_the_counts_afresh() -> None:
    injector = FaultInjector(["quota; times=1"])
    assert decisions(injector, "s", 2) == ["quota", None]
    injector.set(["quota; times=1"])
    assert decisions(injector, "s", 2) == ["quota", None]


def test_header_faults_come_first_and_stream_faults_skip_whole_answers() -> None:
    injector = FaultInjector(["server_error"])
    assert decisions(injector, "s", 1, header="quota") == ["quota"]
    assert decisions(injector, "s", 1, header="stream_cut") == ["server_error"]
    assert decisions(injector, "s", 1, header="stream_cut", stream=True) == ["stream_cut"]
    assert decisions(FaultInjector(["truncate"]), "s", 1, stream=True) == [None]


def test_config_file_faults_tables_and_seed(tmp_path: Path) -> None:
    path = tmp_path / "allm.toml"
    path.write_text(
        'fault_seed = 7\n\n[[faults]]\nkind = "latency"\nms = 300\np = 0.5\n\n'
        '[[faults]]\nkind = "rate_limit"\ntimes = 1\non = "edits"\n'
    )
    config = load_config(path)
    assert config.fault_seed == 7
    assert config.faults == (Fault("latency", p=0.5, ms=300), Fault("rate_limit", times=1, on="edits"))


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"faults": [{"kind": "nope"}]}, "allowed kinds"),
        ({"faults": [{"kind": "quota", "tries": 1}]}, "allowed keys"),
        ({"faults": [{"times": 1}]}, "needs kind"),
        ({"fault_seed": "seven"}, "fault_seed must be an integer"),
    ],
)
def test_bad_config_faults_are_errors(raw: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        config_from_mapping(raw)


def test_serve_with_a_bad_fault_is_a_usage_error_naming_the_kinds() -> None:
    result = CliRunner().invoke(main, ["serve", "--fault", "nope"])
    assert result.exit_code == 2
    assert "allowed kinds: rate_limit, quota" in result.output


@pytest.mark.slow  # a serve subprocess
def test_serve_fault_flags_set_the_server_wide_list_and_seed() -> None:
    with serving("--fault", "quota; times=1", "--fault", "latency; ms=1", "--fault-seed", "3") as (_, port):
        url = f"http://127.0.0.1:{port}"
        shown = httpx.get(url + "/allm/faults").json()
        first = httpx.post(url + "/v1/images/generations", json={"prompt": "a wren", "model": "dall-e-2"})
        second = httpx.post(url + "/v1/images/generations", json={"prompt": "a wren", "model": "dall-e-2"})
    assert shown == {"faults": ["quota; times=1", "latency; ms=1"], "seed": 3}
    assert (first.status_code, second.status_code) == (429, 200)


MARKED_SUITE = """
import os

import openai
import pytest


@pytest.fixture
def allm_config():
    return {"provider": "openai", "options": {"base_url": os.environ["ALLM_TEST_UPSTREAM"] + "/v1"}}


@pytest.mark.allm_cassette(faults=["rate_limit; times=1; ms=10"], record_mode="once")
def test_marker_faults_are_retried_by_the_sdk():
    raw = openai.OpenAI(max_retries=2).images.with_raw_response.generate(model="gpt-image-1", prompt="a kestrel")
    assert raw.retries_taken == 1


@pytest.mark.allm_cassette(record_mode="once")
def test_the_next_test_has_no_faults():
    assert openai.OpenAI(max_retries=0).images.generate(model="gpt-image-1", prompt="an owl").data


@pytest.mark.allm_cassette(faults=["explode"])
def test_bad_marker_faults():
    pass
"""


@pytest.mark.slow  # a pytest subprocess
def test_pytest_marker_faults_hold_for_their_test_only(pytester: pytest.Pytester, upstream: FakeOpenAI) -> None:  # noqa: F811
    pytester.makepyfile(test_suite=MARKED_SUITE)
    result = pytester.runpytest_subprocess()  # in-process runs re-import openai, splitting its classes
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*allm_cassette(faults=...)*allowed kinds*"])
    assert len(upstream.requests) == 2  # the faulted attempt never reached the upstream
    recorded = pytester.path / "cassettes" / "test_suite" / "test_marker_faults_are_retried_by_the_sdk.json"
    assert recorded.read_text().count('"status"') == 1  # only the successful retry was recorded
