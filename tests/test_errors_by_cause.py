"""An error's class says what went wrong, whichever provider said it (issue 11, defect 3).

`except AuthenticationError` in library code must catch a bad key from OpenAI (whose envelope the
proxy relays as it came) exactly as it catches one from Gemini (whose error the proxy translates).
"""

from __future__ import annotations

import httpx
import pytest

from allm_proxy import Engine, errors, generate_image
from tests.upstreams import gemini_upstream
from tests.upstreams.gemini_upstream import FakeGemini
from tests.upstreams.openai_upstream import FakeOpenAI


def openai_engine(upstream: FakeOpenAI) -> Engine:
    return Engine(
        image_adapter="openai",
        image_adapter_opts={"base_url": "http://openai.test/v1"},
        transport=httpx.ASGITransport(app=upstream),
        env={"OPENAI_API_KEY": "sk-test-wrong"},
    )


def gemini_engine(upstream: FakeGemini) -> Engine:
    return Engine(
        image_adapter="gemini",
        image_adapter_opts={"base_url": "http://gemini.test"},
        transport=httpx.ASGITransport(app=upstream.app),
        env={"GEMINI_API_KEY": "AIza-test-wrong"},
    )


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_bad_key_is_an_authentication_error_for_every_provider(provider: str) -> None:
    if provider == "openai":
        engine = openai_engine(FakeOpenAI(valid_keys={"sk-test-right"}))
    else:
        engine = gemini_engine(FakeGemini(api_keys=("AIza-test-right",)))
    with engine, pytest.raises(errors.AuthenticationError) as caught:
        generate_image(engine, "a heron", model="gemini-3-pro-image" if provider == "gemini" else "gpt-image-1")
    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")


def test_a_relayed_openai_error_keeps_its_body_and_is_the_class_of_its_status() -> None:
    body = b'{"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}'
    relayed = errors.UpstreamStatusError.relay(429, body, headers={"retry-after": "2"})
    assert isinstance(relayed, errors.RateLimitError) and isinstance(relayed, errors.UpstreamStatusError)
    assert relayed.body() == body and relayed.response_headers() == {"retry-after": "2"}
    quota = errors.UpstreamStatusError.relay(429, b'{"error": {"message": "no", "type": "insufficient_quota"}}')
    assert isinstance(quota, errors.InsufficientQuotaError)


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (400, None, errors.InvalidRequestError),
        (401, None, errors.AuthenticationError),
        (403, None, errors.PermissionDeniedError),
        (404, None, errors.NotFoundError),
        (409, None, errors.ConflictError),
        (422, None, errors.UnprocessableEntityError),
        (429, None, errors.RateLimitError),
        (429, "insufficient_quota", errors.InsufficientQuotaError),
        (400, "image_generation_user_error", errors.ModerationBlockedError),
        (500, None, errors.UpstreamServerError),
        (503, None, errors.ServiceUnavailableError),
        (504, None, errors.UpstreamTimeoutError),
    ],
)
def test_error_class_is_the_named_class_of_a_status(
    status: int, error_type: str | None, expected: type[errors.ProxyError]
) -> None:
    assert errors.error_class(status, error_type) is expected


@pytest.mark.parametrize(
    ("status", "error_type", "family"),
    [
        (418, None, errors.InvalidRequestError),
        (451, "legal", errors.InvalidRequestError),
        (507, None, errors.UpstreamError),
    ],
)
def test_an_unusual_status_gets_a_class_of_its_own_under_the_nearest(
    status: int, error_type: str | None, family: type[errors.ProxyError]
) -> None:
    made = errors.error_class(status, error_type)
    assert issubclass(made, family) and made.status == status
    assert made.type == (error_type or family.type)
    assert errors.error_class(status, error_type) is made  # made once
    assert made("x").envelope()["error"]["type"] == made.type


def test_every_class_fixes_its_status_and_type() -> None:
    with pytest.raises(TypeError):
        errors.UpstreamError("down", status=503)  # type: ignore[call-arg]
    assert errors.ServiceUnavailableError("down").status == 503


def test_a_gemini_region_block_is_a_403_permission_error() -> None:
    upstream = FakeGemini()
    upstream.script(gemini_upstream.location_unsupported())
    with gemini_engine(upstream) as engine, pytest.raises(errors.PermissionDeniedError) as caught:
        generate_image(engine, "a heron", api_key=gemini_upstream.VALID_KEY)
    assert caught.value.status == 403 and caught.value.code == "unsupported_country_region_territory"
