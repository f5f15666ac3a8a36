"""The files are ordinary vcrpy cassettes: plain vcrpy replays ours, and we replay plain vcrpy's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import vcr

from tests.support.asgi_server import serve_asgi
from tests.support.cassette_helpers import OPENAI_KEY, DeadUpstream, Upstream, library_for, send
from tests.support.images import png_bytes

SERIALIZERS = {".json": "json", ".yaml": "yaml"}


def edit_files() -> dict[str, tuple[str, bytes, str]]:
    return {"image": ("in.png", png_bytes((12, 12), mode="RGB"), "image/png")}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
async def test_a_cassette_recorded_by_the_proxy_replays_under_plain_vcrpy(tmp_path: Path, suffix: str) -> None:
    cassette = tmp_path / f"proxy{suffix}"
    library = library_for(cassette)
    with serve_asgi(Upstream().app) as url:
        generated = await send(
            library,
            httpx.AsyncHTTPTransport(),
            "POST",
            "/images/generations",
            base=url + "/v1",
            json={"model": "gpt-image-1", "prompt": "a kestrel"},
        )
        edited = await send(
            library,
            httpx.AsyncHTTPTransport(),
            "POST",
            "/images/edits",
            base=url + "/v1",
            data={"prompt": "add a hat"},
            files=edit_files(),
        )
    # The upstream is gone; only the cassette can answer.
    with (
        vcr.use_cassette(
            str(cassette), record_mode="none", serializer=SERIALIZERS[suffix], match_on=["method", "uri", "body"]
        ),
        httpx.Client() as client,
    ):
        again = client.post(
            url + "/v1/images/generations",
            json={"prompt": "a kestrel", "model": "gpt-image-1"},
            headers={"authorization": "Bearer sk-test-other-key"},
        )
        assert again.content == generated.content
        assert again.headers["x-request-id"] == generated.headers["x-request-id"]
    with vcr.use_cassette(str(cassette), record_mode="none", serializer=SERIALIZERS[suffix]), httpx.Client() as client:
        again = client.post(url + "/v1/images/edits", data={"prompt": "add a hat"}, files=edit_files())
        assert again.content == edited.content


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
async def test_a_cassette_recorded_by_plain_vcrpy_replays_through_the_proxy(tmp_path: Path, suffix: str) -> None:
    cassette = tmp_path / f"vcrpy{suffix}"
    with (
        serve_asgi(Upstream().app) as url,
        vcr.use_cassette(str(cassette), record_mode="once", serializer=SERIALIZERS[suffix]),
        httpx.Client(headers={"authorization": f"Bearer {OPENAI_KEY}"}) as client,
    ):
        generated = client.post(url + "/v1/images/generations", json={"model": "gpt-image-1", "prompt": "owl"})
        # vcrpy's own JSON serializer cannot store a binary upload; its YAML one can.
        edited = (
            client.post(url + "/v1/images/edits", data={"prompt": "add a hat"}, files=edit_files())
            if suffix == ".yaml"
            else None
        )
    library, dead = library_for(cassette, "none"), DeadUpstream()
    replayed = await send(
        library, dead, "POST", "/images/generations", base=url + "/v1", json={"prompt": "owl", "model": "gpt-image-1"}
    )
    assert replayed.content == generated.content
    if edited is not None:
        replayed_edit = await send(
            library, dead, "POST", "/images/edits", base=url + "/v1", data={"prompt": "add a hat"}, files=edit_files()
        )
        assert replayed_edit.content == edited.content
    assert dead.attempts == 0
