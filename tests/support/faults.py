"""Checks shared by the fault tests: each kind, seen as a client sees it (the SDK where it can, else httpx)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

# The kinds whose answer never comes from the provider, and those that delay a real one.
REPLACING = (
    "rate_limit",
    "quota",
    "server_error",
    "overloaded",
    "bad_key",
    "content_policy",
    "timeout",
    "reset",
    "truncate",
    "stream_cut",
    "stream_error",
)
DELAYING = ("latency", "slow")
SPECS = {
    "rate_limit": "rate_limit; ms=10",
    "timeout": "timeout; ms=5000",
    "latency": "latency; ms=300",
    "slow": "slow; ms=300",
    "stream_cut": "stream_cut; after=1",
    "stream_error": "stream_error; after=1",
}
STREAMING = ("stream_cut", "stream_error")
# (SDK exception, status, error type, error code) of each error kind.
ERRORS: dict[str, tuple[type[openai.APIStatusError], int, str, str | None]] = {
    "rate_limit": (openai.RateLimitError, 429, "requests", "rate_limit_exceeded"),
    "quota": (openai.RateLimitError, 429, "insufficient_quota", "insufficient_quota"),
    "server_error": (openai.InternalServerError, 500, "server_error", None),
    "overloaded": (openai.InternalServerError, 503, "server_error", "overloaded"),
    "bad_key": (openai.AuthenticationError, 401, "invalid_request_error", "invalid_api_key"),
    "content_policy": (openai.BadRequestError, 400, "invalid_request_error", "content_policy_violation"),
}
ALL_KINDS = (*ERRORS, "timeout", "latency", "slow", "reset", "truncate", *STREAMING)


def spec(kind: str) -> str:
    return SPECS.get(kind, kind)


def check_fault(
    base_url: str, kind: str, *, model: str = "gpt-image-1", prompt: str = "a faulted kestrel", header: bool = True
) -> None:
    """Make one request that `kind` answers and assert what the client sees. `base_url` ends in /v1.

    With `header=False` the fault must already be on the proxy's list.
    """
    headers = {"X-ALLM-Fault": spec(kind)} if header else {}
    client = openai.OpenAI(
        base_url=base_url, api_key="sk-test-faults", max_retries=0, timeout=2.0, default_headers=headers
    )
    if kind in STREAMING:
        stream = client.images.generate(model=model, prompt=prompt, stream=True, partial_images=2)
        if kind == "stream_cut":
            events = [event.type for event in stream]
            assert events == ["image_generation.partial_image"], events  # after=1, and no completed
        else:
            with pytest.raises(openai.APIError) as failed:
                for _ in stream:
                    pass
            assert isinstance(failed.value.body, dict) and failed.value.body["code"] == "stream_error"
        return
    if kind in ERRORS:
        exc_type, status, error_type, code = ERRORS[kind]
        with pytest.raises(exc_type) as raised:
            client.images.generate(model=model, prompt=prompt)
        assert (raised.value.status_code, raised.value.type, raised.value.code) == (status, error_type, code)
        raw = httpx.post(
            base_url + "/images/generations", json={"model": model, "prompt": prompt}, headers=headers, timeout=5
        )
        assert raw.status_code == status
        assert set(raw.json()) == {"error"} and set(raw.json()["error"]) == {"message", "type", "param", "code"}
        assert f"fault '{kind}'" in raw.json()["error"]["message"]
        if kind == "rate_limit":
            assert (raw.headers["retry-after"], raw.headers["retry-after-ms"]) == ("1", "10")
        return
    if kind == "timeout":
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.5).images.generate(model=model, prompt=prompt)
        assert time.monotonic() - started < 3
        return
    if kind in ("reset", "truncate"):
        with pytest.raises(openai.APIConnectionError):
            client.images.generate(model=model, prompt=prompt)
        return
    started = time.monotonic()
    if kind == "slow":
        with httpx.stream(
            "POST",
            base_url + "/images/generations",
            json={"model": model, "prompt": prompt},
            headers=headers,
            timeout=5,
        ) as slow:
            pieces = [chunk for chunk in slow.iter_raw()]
        assert slow.status_code == 200 and len(pieces) > 1  # the body came in pieces
        assert int(slow.headers["content-length"]) == sum(map(len, pieces))
    else:
        answer = client.images.generate(model=model, prompt=prompt)
        assert answer.data and (answer.data[0].b64_json or answer.data[0].url)
    assert time.monotonic() - started >= 0.29  # ms=300
