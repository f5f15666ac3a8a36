"""`allm-proxy cassettes list|show|verify`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from vcr.request import Request

from allm_proxy.cassettes import formats
from allm_proxy.cassettes.persister import write_atomic
from allm_proxy.cli_cassettes import cassettes
from tests.support.cassette_helpers import Upstream, library_for, send
from tests.support.images import png_bytes


@pytest.fixture
async def recorded(tmp_path: Path) -> Path:
    cassette = tmp_path / "demo.json"
    library, upstream = library_for(cassette), Upstream()
    await send(
        library,
        upstream.asgi_transport(),
        "POST",
        "/images/generations",
        json={"model": "gpt-image-1", "prompt": "a watercolor kestrel on a fence post"},
    )
    await send(
        library,
        upstream.asgi_transport(),
        "POST",
        "/images/edits",
        data={"model": "gpt-image-1", "prompt": "add a hat"},
        files={"image": ("in.png", png_bytes((12, 10), mode="RGB"), "image/png")},
    )
    return cassette


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cassettes, list(args))
    return result.exit_code, result.output


def test_list_prints_one_line_per_interaction_with_model_prompt_status_and_images(recorded: Path) -> None:
    code, output = run("list", str(recorded))
    assert code == 0
    assert output.splitlines() == [
        "#0 POST /v1/images/generations model=gpt-image-1 prompt='a watercolor kestrel on a fence post' "
        "-> 200 images=1 (8x8 png)",
        "#1 POST /v1/images/edits model=gpt-image-1 prompt='add a hat' -> 200 images=1 (8x8 png)",
    ]


def test_show_prints_the_interaction_and_extract_writes_images_that_open(recorded: Path, tmp_path: Path) -> None:
    code, output = run("show", str(recorded), "1", "--extract", str(tmp_path / "out"))
    assert code == 0
    assert "POST http://127.0.0.1:9/v1/images/edits" in output
    assert "image: <file 'in.png'" in output and "prompt: add a hat" in output
    assert '"b64_json": "iVBOR' in output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["1-input-0.png", "1-output-0.png"]
    with PILImage.open(tmp_path / "out" / "1-input-0.png") as image:
        assert image.size == (12, 10)


def test_show_without_a_number_prints_every_interaction_naming_uri_and_status(recorded: Path, tmp_path: Path) -> None:
    code, output = run("show", str(recorded), "--extract", str(tmp_path / "out"))
    assert code == 0
    blocks = [line for line in output.splitlines() if line.startswith("#")]
    assert blocks == ["#0 POST http://127.0.0.1:9/v1/images/generations", "#1 POST http://127.0.0.1:9/v1/images/edits"]
    assert output.count("response: 200") == 2
    assert "prompt: add a hat" in output and "a watercolor kestrel" in output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["0-output-0.png", "1-input-0.png", "1-output-0.png"]


def test_show_rejects_a_number_out_of_range(recorded: Path) -> None:
    code, output = run("show", str(recorded), "7")
    assert code == 2 and "interactions 0 to 1" in output


def test_verify_passes_a_clean_recording(recorded: Path) -> None:
    assert run("verify", str(recorded)) == (0, "ok: 1 cassette\n")


def test_verify_lists_secrets_undecodable_bodies_and_broken_images_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    request = Request(
        "POST",
        "https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?key=abc",
        b"{not json",
        {"content-type": "application/json", "Authorization": "Bearer x"},
    )
    broken = base64.b64encode(png_bytes((8, 8), mode="RGB")[:30]).decode()
    response = {
        "status": {"code": 200, "message": "OK"},
        "headers": {"content-type": ["application/json"], "set-cookie": ["a=b"]},
        "body": {"string": json.dumps({"data": [{"b64_json": broken}]}).encode()},
    }
    fmt = formats.format_for(path)
    write_atomic(path, fmt.document([fmt.dump_interaction(request, response)], None))
    (tmp_path / "torn.json").write_text('{"version": 1, "interactions": [')
    code, output = run("verify", str(tmp_path))
    assert code == 1
    for problem in (
        "request header Authorization is stored",
        "response header set-cookie is stored",
        "query parameter key= is stored",
        "request body does not decode",
        "response image 0 does not open",
        "torn.json: does not parse",
    ):
        assert problem in output
