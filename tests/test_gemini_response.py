"""Reading one generateContent answer (gemini_response.py): which part is the image, and why there is none."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from allm_proxy import errors
from allm_proxy.adapters.gemini.response import parse_generate_response, usage_from_metadata
from tests.support.images import png_bytes


def answer(parts: list[dict[str, Any]], finish: str = "STOP", **top: Any) -> bytes:
    return json.dumps(
        {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish}], **top}
    ).encode()


def inline(data: bytes, mime: str = "image/png", **extra: Any) -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}, **extra}


def parse(body: bytes) -> Any:
    return parse_generate_response(body, model="gemini-3-pro-image", safety_code="content_policy_violation")


def test_the_last_final_image_is_the_answer_and_thoughts_are_skipped() -> None:
    first, last, thought = (png_bytes((4, 4), (shade,) * 3, "RGB") for shade in (1, 2, 3))
    result = parse(
        answer(
            [
                inline(thought, thought=True),
                {"text": "draft", "thought": True},
                inline(first),
                {"text": "Two takes."},
                inline(last),
            ]
        )
    )
    assert result.data == last and result.text == "Two takes."


def test_url_safe_base64_and_snake_case_inline_data_decode() -> None:
    data = png_bytes((17, 3), (250, 251, 252), "RGB")
    encoded = base64.urlsafe_b64encode(data).decode().rstrip("=")
    result = parse(answer([{"inline_data": {"mime_type": "image/png", "data": encoded}}]))
    assert result.data == data


def test_non_image_inline_data_is_not_an_answer() -> None:
    with pytest.raises(errors.NoImageGeneratedError, match="finishReason STOP"):
        parse(answer([inline(b"RIFF....WAVE", "audio/wav")]))


def test_image_bytes_that_are_no_image_are_a_502() -> None:
    with pytest.raises(errors.UpstreamError) as caught:
        parse(answer([inline(b"not an image at all")]))
    assert caught.value.status == 502


def test_a_200_that_is_not_json_is_a_502() -> None:
    with pytest.raises(errors.UpstreamError) as caught:
        parse(b"<html>")
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")


@pytest.mark.parametrize(
    "reason",
    [
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    ],
)
def test_safety_finish_reasons_without_an_image_are_content_policy(reason: str) -> None:
    body = json.dumps({"candidates": [{"content": {}, "finishReason": reason}]}).encode()
    with pytest.raises(errors.ContentPolicyError) as caught:
        parse(body)
    assert caught.value.code == "content_policy_violation" and reason in caught.value.message


def test_block_reason_message_reaches_the_client() -> None:
    body = json.dumps({"promptFeedback": {"blockReason": "OTHER", "blockReasonMessage": "Not allowed."}}).encode()
    with pytest.raises(errors.ContentPolicyError, match=r"OTHER: Not allowed\."):
        parse(body)


def test_usage_total_falls_back_to_input_plus_output() -> None:
    usage = usage_from_metadata(
        {
            "promptTokenCount": 10,
            "candidatesTokenCount": 1290,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
        }
    )
    assert (usage.total_tokens, usage.output_image_tokens, usage.output_text_tokens) == (1300, 1290, 0)
    assert usage.input_text_tokens == 0  # no details: nothing is made up
