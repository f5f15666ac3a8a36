"""Fault injection on the fake provider, through the official SDK (and httpx where the SDK cannot see it)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from allm_proxy import Engine, ProxyConfig
from allm_proxy.faults import FaultInjector
from tests.conftest import png_bytes, running_proxy
from tests.support.faults import ALL_KINDS, check_fault
from tests.support.hardening import captured_logs


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with running_proxy(Engine()) as url:
        yield url


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_fault_kind_reaches_the_sdk_on_the_fake_provider(fake_url: str, kind: str) -> None:
    check_fault(fake_url + "/v1", kind)


def test_rate_limit_once_is_retried_by_the_sdk_and_then_succeeds(fake_url: str) -> None:
    client = openai.OpenAI(base_url=fake_url + "/v1", api_key="sk-test-x", max_retries=2)
    raw = client.images.with_raw_response.generate(
        model="gpt-image-1",
        prompt="a kestrel",
        extra_headers={"X-ALLM-Fault": "rate_limit; times=1; ms=10", "X-ALLM-Session": "retry-once"},
    )
    assert raw.retries_taken == 1  # two attempts: the 429, then the answer
    assert raw.parse().data


def test_rate_limit_without_times_ends_in_rate_limit_error_after_the_retries(fake_url: str) -> None:
    attempts: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [attempts.append]})
    # openai 3.x is typed for httpx2; it accepts an httpx.Client all the same.
    client = openai.OpenAI(base_url=fake_url + "/v1", api_key="sk-test-x", max_retries=2, http_client=http)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):
        client.images.generate(
            model="gpt-image-1", prompt="a kestrel", extra_headers={"X-ALLM-Fault": "rate_limit; ms=10"}
        )
    assert [r.headers["x-stainless-retry-count"] for r in attempts] == ["0", "1", "2"]


def test_times_counts_per_session_so_two_sessions_each_get_one_fault(fake_url: str) -> None:
    statuses: dict[str, list[int]] = {}
    for session in ("alice", "bob", "alice", "bob", "alice"):
        answer = httpx.post(
            fake_url + "/v1/images/generations",
            json={"prompt": "a wren", "model": "dall-e-2"},
            headers={"X-ALLM-Fault": "server_error; times=1", "X-ALLM-Session": f"times-{session}"},
        )
        statuses.setdefault(session, []).append(answer.status_code)
    assert statuses == {"alice": [500, 200, 200], "bob": [500, 200]}


def test_on_limits_a_fault_to_one_operation(fake_url: str) -> None:
    headers = {"X-ALLM-Fault": "content_policy; on=edits"}
    generated = httpx.post(
        fake_url + "/v1/images/generations", json={"prompt": "a wren", "model": "dall-e-2"}, headers=headers
    )
    edited = httpx.post(
        fake_url + "/v1/images/edits",
        data={"prompt": "a hat", "model": "dall-e-2"},
        files={"image": ("in.png", png_bytes(), "image/png")},
        headers=headers,
    )
    assert (generated.status_code, edited.status_code) == (200, 400)
    assert edited.json()["error"]["code"] == "content_policy_violation"


@pytest.mark.parametrize("header", ["nope", "rate_limit; when=now", "latency; ms=soon", "server_error; p=2"])
def test_a_bad_fault_header_is_a_400_envelope_naming_the_header(fake_url: str, header: str) -> None:
    answer = httpx.post(
        fake_url + "/v1/images/generations", json={"prompt": "a wren"}, headers={"X-ALLM-Fault": header}
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_fault_header" and "X-ALLM-Fault" in error["message"]


def statuses_with_seed(seed: int, count: int = 50) -> list[int]:
    engine = Engine(faults=FaultInjector(["server_error; p=0.3"], seed=seed))
    with running_proxy(engine) as url, httpx.Client(base_url=url) as client:
        return [
            client.post(
                "/v1/images/generations",
                json={"prompt": f"a moth {i}", "model": "dall-e-2", "size": "256x256"},
                headers={"X-ALLM-Session": "seeded"},
            ).status_code
            for i in range(count)
        ]


def test_a_seed_gives_the_same_fault_sequence_across_two_proxy_runs_at_about_p() -> None:
    first, second = statuses_with_seed(7), statuses_with_seed(7)
    assert first == second
    assert set(first) == {200, 500}
    assert abs(first.count(500) / len(first) - 0.3) <= 0.15
    assert statuses_with_seed(8) != first  # the seed, not luck, fixes the sequence


def test_control_route_sets_shows_and_clears_the_server_wide_list(fake_url: str) -> None:
    with httpx.Client(base_url=fake_url) as client:
        try:
            shown = client.post("/allm/faults", json={"faults": ["quota; times=1", "latency; ms=5; p=0.5"]})
            assert shown.json() == {"faults": ["quota; times=1", "latency; p=0.5; ms=5"], "seed": None}
            assert client.get("/allm/faults").json()["faults"] == ["quota; times=1", "latency; p=0.5; ms=5"]
            first = client.post(
                "/v1/images/generations",
                json={"prompt": "a wren", "model": "dall-e-2"},
                headers={"X-ALLM-Session": "control"},
            )
            assert first.json()["error"]["code"] == "insufficient_quota"
            bad = client.post("/allm/faults", json={"faults": ["explode"]})
            assert bad.status_code == 400 and "allowed kinds" in bad.json()["error"]["message"]
        finally:
            cleared = client.delete("/allm/faults")
        assert cleared.json()["faults"] == []
        after = client.post(
            "/v1/images/generations",
            json={"prompt": "a wren", "model": "dall-e-2"},
            headers={"X-ALLM-Session": "control-2"},
        )
        assert after.status_code == 200


def test_control_route_needs_the_access_token_when_one_is_set() -> None:
    with running_proxy(Engine(), ProxyConfig(access_token="tok-test-1")) as url:
        refused = httpx.post(url + "/allm/faults", json={"faults": ["quota"]})
        allowed = httpx.post(
            url + "/allm/faults", json={"faults": ["quota"]}, headers={"Authorization": "Bearer tok-test-1"}
        )
        shown = httpx.get(url + "/allm/faults", headers={"X-ALLM-Access-Token": "tok-test-1"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert allowed.status_code == 200 and shown.json()["faults"] == ["quota"]


def test_the_access_log_names_the_fault(fake_url: str) -> None:
    with captured_logs() as logs:
        httpx.post(
            fake_url + "/v1/images/generations", json={"prompt": "a wren"}, headers={"X-ALLM-Fault": "overloaded"}
        )
        httpx.post(fake_url + "/v1/images/generations", json={"prompt": "a wren", "model": "dall-e-2"})
        lines = logs.access_lines(2, containing="/v1/images/generations")
    assert any("status=503" in line and line.endswith("fault=overloaded") for line in lines), lines
    assert any("status=200" in line and "fault=" not in line for line in lines), lines


def test_the_decided_fault_is_on_the_call_for_the_journal() -> None:
    from allm_proxy.call import Call
    from allm_proxy.types import ImageRequest

    engine = Engine(faults=FaultInjector(["latency; ms=0"]))
    options = Call()
    engine.run_sync(engine.run(ImageRequest(operation="generate", prompt="a wren", model="dall-e-2"), options))
    engine.close()
    assert options.fault is not None and (options.fault.kind, options.fault.origin) == ("latency", "server")
