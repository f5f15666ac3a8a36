"""Scripted replies of the fake provider: order, per-session cursors, errors, script files."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from allm_proxy import Call, Engine, ImageRequest, InputFile, edit_image, errors, generate_image
from allm_proxy.adapters.fake.script import FakeScript
from allm_proxy.types import ImageResponse, RawBody
from tests.support.images import png_bytes

SIZE = (32, 32)
RED, GREEN, BLUE = (png_bytes(SIZE, color) for color in ((200, 40, 40, 255), (40, 200, 40, 255), (40, 40, 200, 255)))


@pytest.fixture
def script() -> FakeScript:
    return FakeScript()


@pytest.fixture
def engine(script: FakeScript) -> Iterator[Engine]:
    with Engine(image_adapter_opts={"script": script}) as eng:
        yield eng


def test_replies_are_served_in_order(script: FakeScript, engine: Engine) -> None:
    script.enqueue({"bytes": RED}, {"bytes": GREEN})
    assert generate_image(engine, "one").images[0].data == RED
    assert generate_image(engine, "two").images[0].data == GREEN


def test_history_records_every_request_with_its_session(script: FakeScript, engine: Engine) -> None:
    script.enqueue(RED, RED)
    generate_image(engine, "a kestrel", session="s1")
    edit_image(engine, RED, "a hat", model="gpt-image-1", session="s2")
    assert [(c.prompt, c.session, c.model, c.request.operation) for c in script.history] == [
        ("a kestrel", "s1", "dall-e-2", "generate"),  # no model named: OpenAI's documented default
        ("a hat", "s2", "gpt-image-1", "edit"),
    ]


def test_one_image_reply_is_repeated_for_n(script: FakeScript, engine: Engine) -> None:
    script.enqueue({"bytes": RED})
    assert [i.data for i in generate_image(engine, "x", n=3).images] == [RED] * 3


def test_listed_images_reply_is_sent_as_listed(script: FakeScript, engine: Engine) -> None:
    script.enqueue({"images": [{"bytes": RED}, {"b64_json": base64.b64encode(GREEN).decode()}]})
    assert [i.data for i in generate_image(engine, "x", n=2).images] == [RED, GREEN]


def test_url_reply_reaches_the_client_as_that_url(script: FakeScript, engine: Engine) -> None:
    script.enqueue({"url": "https://images.example/kestrel.png"})
    response = generate_image(engine, "x", model="dall-e-2", size="256x256", response_format="url")
    assert response.images[0].url == "https://images.example/kestrel.png"


def test_scripted_revised_prompt_is_returned(script: FakeScript, engine: Engine) -> None:
    script.enqueue({"bytes": RED, "revised_prompt": "A red square, bold and flat."})
    response = generate_image(engine, "red", model="dall-e-3", response_format="b64_json")
    assert response.images[0].revised_prompt == "A red square, bold and flat."


def test_scripted_images_report_usage_for_their_own_size(script: FakeScript, engine: Engine) -> None:
    script.enqueue({"bytes": png_bytes((512, 512), (200, 40, 40, 255))})
    response = generate_image(engine, "x", quality="low")
    assert response.usage is not None and response.usage.output_tokens == 68
    assert (response.size, response.output_format, response.background) == ("512x512", "png", "transparent")


def test_generate_entry_falls_back_to_a_generated_image(script: FakeScript, engine: Engine) -> None:
    script.enqueue({"generate": True})
    data = generate_image(engine, "a kestrel", model="gpt-image-2", size="256x256").images[0].data
    assert PILImage.open(io.BytesIO(data)).size == (256, 256)
    assert len(script.history) == 1


def test_scripted_error_is_raised_with_status_code_and_headers(script: FakeScript, engine: Engine) -> None:
    script.enqueue(
        {
            "error": {
                "status": 429,
                "type": "requests",
                "code": "rate_limit_exceeded",
                "message": "Slow down",
                "param": None,
                "headers": {"retry-after": "1"},
            }
        }
    )
    with pytest.raises(errors.RateLimitError) as info:
        generate_image(engine, "x")
    exc = info.value
    assert (exc.status, exc.type, exc.code, exc.message) == (429, "requests", "rate_limit_exceeded", "Slow down")
    assert exc.response_headers()["retry-after"] == "1"


def test_scripted_error_keeps_an_explicit_null_code(script: FakeScript, engine: Engine) -> None:
    script.enqueue({"error": {"status": 503, "message": "Overloaded", "code": None}})
    with pytest.raises(errors.ProxyError) as info:
        generate_image(engine, "x")
    assert info.value.envelope() == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}
    }
    assert info.value.status == 503


def test_enqueued_proxy_error_is_raised_afresh_for_every_session(script: FakeScript, engine: Engine) -> None:
    script.enqueue(errors.ContentPolicyError("No.", param="prompt"))
    for session in ("a", "b"):
        with pytest.raises(errors.ContentPolicyError) as info:
            generate_image(engine, "x", session=session)
        assert (info.value.code, info.value.param) == ("content_policy_violation", "prompt")


def test_running_out_of_replies_raises_fake_script_exhausted(script: FakeScript, engine: Engine) -> None:
    script.enqueue(RED)
    generate_image(engine, "x", session="ci-7")
    with pytest.raises(errors.FakeScriptExhausted) as info:
        generate_image(engine, "x", session="ci-7")
    exc = info.value
    assert (exc.status, exc.code) == (400, "fake_script_exhausted")
    assert "had 1 reply" in exc.message and "session 'ci-7'" in exc.message
    assert "enqueue" in exc.message


def test_each_session_walks_the_replies_from_the_start(script: FakeScript, engine: Engine) -> None:
    script.enqueue(RED, GREEN)
    assert generate_image(engine, "x", session="a").images[0].data == RED
    assert generate_image(engine, "x", session="a").images[0].data == GREEN
    assert generate_image(engine, "x", session="b").images[0].data == RED
    assert script.remaining("a") == 0 and script.remaining("b") == 1


def test_concurrent_sessions_each_get_their_replies_in_order() -> None:
    script = FakeScript([RED, GREEN, BLUE])

    async def session_calls(engine: Engine, session: str) -> list[bytes]:
        out = []
        for _ in range(3):
            result = await engine.run(ImageRequest(operation="generate", prompt="x"), Call(session=session))
            assert isinstance(result, ImageResponse)
            out.append(result.images[0].data)
            await asyncio.sleep(0)  # let the other sessions interleave
        return out

    async def main() -> list[list[bytes]]:
        engine = Engine(image_adapter_opts={"script": script})
        try:
            return await asyncio.gather(*(session_calls(engine, f"worker-{i}") for i in range(6)))
        finally:
            await engine.aclose()

    assert asyncio.run(main()) == [[RED, GREEN, BLUE]] * 6


def test_one_session_shared_by_threads_serves_each_reply_once() -> None:
    replies = [png_bytes(SIZE, (i, 0, 0, 255)) for i in range(200)]
    script = FakeScript(replies)
    taken: list[bytes] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            data = script.take(ImageRequest(operation="generate", prompt="x")).images[0].data
            with lock:
                taken.append(data or b"")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(replies)


def test_stream_of_a_scripted_image_ends_with_that_image(script: FakeScript) -> None:
    script.enqueue(png_bytes((64, 64), (200, 40, 40, 255)))

    async def main() -> list[Any]:
        engine = Engine(image_adapter_opts={"script": script})
        try:
            stream = await engine.run(
                ImageRequest(operation="edit", prompt="x", stream=True, partial_images=2, images=[InputFile(RED)])
            )
            assert not isinstance(stream, ImageResponse | RawBody)
            return [event async for event in stream]
        finally:
            await engine.aclose()

    events = asyncio.run(main())
    assert [e.type for e in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert events[-1].image.data == script.replies[0].images[0].data


# -- script files ----------------------------------------------------------------------------


def test_yaml_script_file_with_relative_image_paths(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "red.png").write_bytes(RED)
    path = tmp_path / "replies.yaml"
    path.write_text(
        "replies:\n"
        "  - image: img/red.png\n"
        "    revised_prompt: A red square\n"
        "  - error: {status: 429, message: Slow down, headers: {retry-after: '2'}}\n",
        encoding="utf-8",
    )
    with Engine(image_adapter_opts={"script_path": str(path)}) as engine:
        response = generate_image(engine, "x", model="dall-e-3", response_format="b64_json")
        assert response.images[0].data == RED
        assert response.images[0].revised_prompt == "A red square"
        with pytest.raises(errors.RateLimitError) as info:
            generate_image(engine, "x")
    assert info.value.headers == {"retry-after": "2"}


def test_json_script_file_as_a_list(tmp_path: Path) -> None:
    path = tmp_path / "replies.json"
    path.write_text(json.dumps([{"b64_json": base64.b64encode(GREEN).decode()}, {"generate": True}]))
    script = FakeScript.from_file(path)
    assert len(script) == 2 and script.replies[0].images[0].data == GREEN
    assert script.replies[1].generate


def test_exhaustion_message_names_the_script_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("[]\n")
    with (
        Engine(image_adapter_opts={"script_path": path}) as engine,
        pytest.raises(errors.FakeScriptExhausted, match=r"empty\.yaml.*had 0 replies"),
    ):
        generate_image(engine, "x")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"image": "missing.png"}, "missing.png does not exist"),
        ({"bytes": RED, "url": "https://x"}, "exactly one of image, b64_json, bytes, url"),
        ({"imgae": "x.png"}, "unknown keys \\['imgae'\\]"),
        ({"b64_json": "***"}, "not valid base64"),
        ({"url": "ftp://x"}, "http\\(s\\):// or data: URL"),
        ({"error": {"status": 200}}, "400-599"),
        ({"error": {"status": 429, "retry": 1}}, "unknown error keys \\['retry'\\]"),
        ({"error": {"status": 429}, "bytes": RED}, "cannot go with 'error'"),
        ({"images": []}, "non-empty list"),
        ({"generate": "yes"}, "'generate' must be true"),
        ("red.png", "expected a mapping"),
    ],
)
def test_bad_entries_fail_at_construction(tmp_path: Path, entry: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        FakeScript([RED, entry], base_dir=tmp_path)
    assert "reply 2" in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "replies: [image: x.png\n", "not valid YAML"),
        ("bad.json", "[{]", "not valid JSON"),
        ("top.yaml", "image: x.png\n", "unknown top-level keys \\['image'\\]"),
        ("scalar.yaml", "just text\n", "must hold a list of replies"),
    ],
)
def test_bad_script_files_fail_with_the_reason(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        FakeScript.from_file(path)


def test_missing_script_file_fails_when_the_engine_builds_the_adapter(tmp_path: Path) -> None:
    with (
        Engine(image_adapter_opts={"script_path": str(tmp_path / "nope.yaml")}) as engine,
        pytest.raises(ValueError, match=r"nope\.yaml does not exist"),
    ):
        generate_image(engine, "x")
