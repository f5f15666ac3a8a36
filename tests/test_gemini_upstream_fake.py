"""The fake Gemini API is honest: Google's own SDK (google-genai) talks to it and parses every answer."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from PIL import Image as PILImage

from tests.support.images import png_bytes
from tests.upstreams import gemini_upstream as g
from tests.upstreams.gemini_upstream import FakeGemini

KEY = "test-gemini-key"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeGemini, str]]:
    upstream = FakeGemini()
    with upstream.serving() as url:
        yield upstream, url


@pytest.fixture
def upstream(served: tuple[FakeGemini, str]) -> FakeGemini:
    served[0].reset()
    return served[0]


@pytest.fixture
def sdk(served: tuple[FakeGemini, str]) -> Iterator[genai.Client]:
    client = genai.Client(
        api_key=KEY,
        http_options=types.HttpOptions(
            base_url=served[1], api_version="v1beta", retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )
    yield client
    client.close()


def image_config(ratio: str, tier: str | None = None) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio=ratio, image_size=tier)
    )


def raw_answer(url: str, reply: g.Reply, upstream: FakeGemini, body: dict[str, Any] | None = None) -> httpx.Response:
    upstream.script(reply)
    body = body or {
        "contents": [{"role": "user", "parts": [{"text": "a kestrel"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"]},
    }
    return httpx.post(
        f"{url}/v1beta/models/gemini-3-pro-image:generateContent", json=body, headers={"x-goog-api-key": KEY}
    )


def test_sdk_generation_is_accepted_and_its_answer_parses(sdk: genai.Client, upstream: FakeGemini) -> None:
    answer = sdk.models.generate_content(
        model="gemini-3-pro-image", contents=["a kestrel"], config=image_config("16:9", "2K")
    )
    assert upstream.problems == []
    assert upstream.requests[0].headers["x-goog-api-key"] == KEY
    part = answer.candidates[0].content.parts[-1]
    assert part.inline_data.mime_type == "image/png"
    assert PILImage.open(io.BytesIO(part.inline_data.data)).size == upstream.output_size(
        "gemini-3-pro-image", "16:9", "2K"
    )
    assert answer.usage_metadata.candidates_tokens_details[0].modality == types.MediaModality.IMAGE
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP


def test_tiers_are_distinguishable_and_keep_the_ratio(upstream: FakeGemini) -> None:
    sizes = [upstream.output_size("gemini-3.1-flash-image", "16:9", t) for t in ("512", "1K", "2K", "4K")]
    assert len(set(sizes)) == 4
    assert all(abs(w / h - 1376 / 768) < 0.02 for w, h in sizes)


def test_sdk_edit_with_url_safe_base64_and_snake_case_mime_type_is_accepted(
    sdk: genai.Client, upstream: FakeGemini
) -> None:
    inputs = [png_bytes(size, (10, 200, 30), "RGB") for size in ((30, 20), (10, 10))]
    sdk.models.generate_content(
        model="gemini-3-pro-image",
        contents=[
            types.Part.from_bytes(data=inputs[0], mime_type="image/png"),
            types.Part.from_bytes(data=inputs[1], mime_type="image/png"),
            "make it blue",
        ],
        config=types.GenerateContentConfig(response_modalities=["IMAGE"]),
    )
    assert upstream.problems == []
    assert upstream.requests[0].images == inputs
    assert b"mime_type" in upstream.requests[0].raw  # the SDK's snake_case, which proto3 JSON accepts


def test_sdk_default_v1_path_is_served(served: tuple[FakeGemini, str], upstream: FakeGemini) -> None:
    with genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=served[1])) as client:
        client.models.generate_content(model="gemini-2.5-flash-image", contents=["x"], config=image_config("3:2"))
    assert upstream.requests[0].path == "/v1/models/gemini-2.5-flash-image:generateContent"
    assert upstream.problems == []


@pytest.mark.parametrize(
    ("model", "config", "problem"),
    [
        ("gemini-3-pro-image", types.GenerateContentConfig(candidate_count=2), "candidateCount"),
        ("gemini-3-pro-image", image_config("1:8"), "aspectRatio"),
        ("gemini-3-pro-image", image_config("1:1", "512"), "imageSize"),
        ("gemini-2.5-flash-image", image_config("1:1", "1K"), "imageSize"),
    ],
)
def test_the_fake_refuses_what_google_refuses(
    sdk: genai.Client, upstream: FakeGemini, model: str, config: types.GenerateContentConfig, problem: str
) -> None:
    with pytest.raises(genai_errors.ClientError) as caught:
        sdk.models.generate_content(model=model, contents=["a kestrel"], config=config)
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert problem in upstream.problems[0]


def test_candidate_count_is_refused_in_googles_words(sdk: genai.Client, upstream: FakeGemini) -> None:
    with pytest.raises(genai_errors.ClientError, match="Multiple candidates is not enabled"):
        sdk.models.generate_content(
            model="gemini-3-pro-image", contents=["x"], config=types.GenerateContentConfig(candidate_count=3)
        )


def test_missing_and_wrong_keys_are_refused_as_google_does(
    served: tuple[FakeGemini, str], upstream: FakeGemini
) -> None:
    url = f"{served[1]}/v1beta/models/gemini-3-pro-image:generateContent"
    body = {"contents": [{"parts": [{"text": "x"}]}]}
    missing = httpx.post(url, json=body)
    wrong = httpx.post(url, json=body, headers={"x-goog-api-key": "nope"})
    assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (wrong.status_code, wrong.json()["error"]["details"][0]["reason"]) == (400, "API_KEY_INVALID")


def test_unknown_fields_are_refused(served: tuple[FakeGemini, str], upstream: FakeGemini) -> None:
    answer = raw_answer(
        served[1],
        g.image(),
        upstream,
        {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"quality": "hd"}}},
    )
    assert answer.status_code == 400 and 'Unknown name "quality"' in answer.json()["error"]["message"]


def test_thought_images_and_jpeg_labelled_png_parse(served: tuple[FakeGemini, str], upstream: FakeGemini) -> None:
    answer = raw_answer(served[1], g.image("jpeg", label="image/png", thoughts=2, text="Here."), upstream)
    parsed = types.GenerateContentResponse.model_validate(answer.json())
    parts = parsed.candidates[0].content.parts
    assert [p.thought for p in parts] == [True, True, True, True, None, None]
    assert parts[-1].inline_data.mime_type == "image/png" and parts[-1].inline_data.data[:3] == b"\xff\xd8\xff"
    assert parts[-1].thought_signature is not None
    assert parsed.usage_metadata.thoughts_token_count == 360


def test_prompt_block_parses_as_a_blocked_reason(served: tuple[FakeGemini, str], upstream: FakeGemini) -> None:
    parsed = types.GenerateContentResponse.model_validate(
        raw_answer(served[1], g.prompt_blocked("PROHIBITED_CONTENT"), upstream).json()
    )
    assert parsed.candidates is None
    assert parsed.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT


@pytest.mark.parametrize("reply", [g.finish_blocked("IMAGE_SAFETY"), g.no_image("NO_IMAGE")])
def test_answers_without_an_image_parse_with_their_finish_reason(
    served: tuple[FakeGemini, str], upstream: FakeGemini, reply: g.Reply
) -> None:
    answer = raw_answer(served[1], reply, upstream)
    assert answer.status_code == 200
    parsed = types.GenerateContentResponse.model_validate(answer.json())
    assert parsed.candidates[0].finish_reason == types.FinishReason(reply.reason)
    assert all(p.inline_data is None for p in parsed.candidates[0].content.parts or [])


@pytest.mark.parametrize(
    ("reply", "sdk_error", "status"),
    [
        (g.api_key_invalid(), genai_errors.ClientError, "INVALID_ARGUMENT"),
        (g.no_key(), genai_errors.ClientError, "PERMISSION_DENIED"),
        (g.location_unsupported(), genai_errors.ClientError, "FAILED_PRECONDITION"),
        (g.model_not_found(), genai_errors.ClientError, "NOT_FOUND"),
        (g.quota_exceeded("day"), genai_errors.ClientError, "RESOURCE_EXHAUSTED"),
        (g.internal(), genai_errors.ServerError, "INTERNAL"),
        (g.unavailable(), genai_errors.ServerError, "UNAVAILABLE"),
        (g.deadline_exceeded(), genai_errors.ServerError, "DEADLINE_EXCEEDED"),
    ],
    ids=["key", "no_key", "location", "not_found", "quota", "internal", "unavailable", "deadline"],
)
def test_error_envelopes_are_what_the_sdk_expects(
    sdk: genai.Client, upstream: FakeGemini, reply: g.Reply, sdk_error: type[genai_errors.APIError], status: str
) -> None:
    upstream.script(reply)
    with pytest.raises(sdk_error) as caught:
        sdk.models.generate_content(model="gemini-3-pro-image", contents=["x"])
    assert caught.value.status == status and caught.value.code == reply.status
    assert reply.envelope is not None and caught.value.message == reply.envelope["error"]["message"]
