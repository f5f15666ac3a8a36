"""Choosing cassettes: the X-ALLM-Cassette header (confined to the directory), activate(), control routes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from allm_proxy import errors
from allm_proxy.cassettes import CassetteLibrary
from allm_proxy.cassettes.tape import Tape
from allm_proxy.config import CassetteSettings
from allm_proxy.server import control
from allm_proxy.server.failures import EXCEPTION_HANDLERS
from tests.support.cassette_helpers import DeadUpstream, Upstream, library_for, send


def directory_library(root: Path, record_mode: str = "once") -> CassetteLibrary:
    return CassetteLibrary(CassetteSettings(directory=str(root), record_mode=record_mode))


async def generate(
    library: CassetteLibrary, inner: httpx.AsyncBaseTransport, prompt: str = "p", cassette: str | None = None
) -> httpx.Response:
    return await send(
        library,
        inner,
        "POST",
        "/images/generations",
        cassette=cassette,
        json={"model": "gpt-image-1", "prompt": prompt},
    )


@pytest.mark.parametrize(
    "name",
    ["../escape", "/etc/passwd", "a/../../b", ".hidden", "a\\b", "", "a//b", "x" * 300, "nul\x00byte", "c:/windows"],
)
async def test_a_cassette_name_that_could_leave_the_directory_is_a_400(tmp_path: Path, name: str) -> None:
    library = directory_library(tmp_path / "cassettes")
    with pytest.raises(errors.InvalidRequestError) as caught:
        await generate(library, Upstream().asgi_transport(), cassette=name)
    assert (caught.value.status, caught.value.code) == (400, "invalid_cassette_name")
    assert list(tmp_path.rglob("*.json")) == []


async def test_a_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cassettes").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "cassettes" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(errors.InvalidRequestError, match="leads outside"):
        await generate(directory_library(tmp_path / "cassettes"), Upstream().asgi_transport(), cassette="link/x")


async def test_the_header_picks_a_cassette_inside_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "cassettes"
    library, upstream = directory_library(root), Upstream()
    await generate(library, upstream.asgi_transport(), "a", cassette="suite/test-a")
    await generate(library, upstream.asgi_transport(), "b", cassette="suite/test-b.yaml")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*")) == [
        "suite/test-a.json",
        "suite/test-b.yaml",
    ]
    replaying = directory_library(root, "none")
    answer = await generate(replaying, DeadUpstream(), "b", cassette="suite/test-b.yaml")
    assert answer.json()["prompt"] == "b"
    with pytest.raises(errors.CassetteMissError):
        await generate(replaying, DeadUpstream(), "b", cassette="suite/test-a")


async def test_without_header_or_active_cassette_the_error_says_how_to_choose_one(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidRequestError) as caught:
        await generate(directory_library(tmp_path), DeadUpstream())
    assert caught.value.code == "cassette_not_selected"
    assert "X-ALLM-Cassette" in caught.value.message and "POST /allm/cassette" in caught.value.message


async def test_activate_switches_the_cassette_for_clients_that_cannot_send_headers(tmp_path: Path) -> None:
    library, upstream = directory_library(tmp_path), Upstream()
    library.activate("first")
    await generate(library, upstream.asgi_transport(), "one")
    library.activate("second")
    await generate(library, upstream.asgi_transport(), "two")
    assert library.status()["name"] == "second.json"
    assert {p.name for p in tmp_path.glob("*.json")} == {"first.json", "second.json"}


async def test_activating_again_rewinds_the_replay_cursors(tmp_path: Path) -> None:
    library = directory_library(tmp_path, "none")
    recording = directory_library(tmp_path)
    recording.activate("rewind")
    await generate(recording, Upstream().asgi_transport())
    library.activate("rewind")
    assert (await generate(library, DeadUpstream())).json()["created"] == 1
    with pytest.raises(errors.CassetteMissError):
        await generate(library, DeadUpstream())
    library.activate("rewind")
    assert (await generate(library, DeadUpstream())).json()["created"] == 1


async def test_a_cassette_deleted_between_activations_is_recorded_again_in_once_mode(tmp_path: Path) -> None:
    library, upstream = directory_library(tmp_path), Upstream()
    library.activate("redo")
    await generate(library, upstream.asgi_transport())
    (tmp_path / "redo.json").unlink()
    library.activate("redo")
    assert (await generate(library, upstream.asgi_transport())).json()["created"] == 2
    assert (tmp_path / "redo.json").exists()


async def test_an_unreadable_cassette_is_a_clear_400(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"version": 1, "interactions": [{"request": ')
    with pytest.raises(errors.InvalidRequestError) as caught:
        await generate(directory_library(tmp_path), DeadUpstream(), cassette="broken")
    assert caught.value.code == "cassette_unreadable" and "broken.json cannot be read" in caught.value.message


def control_client(library: CassetteLibrary) -> TestClient:
    app = Starlette(
        routes=[Route(control.PATH, control.cassette_control, methods=["GET", "POST"])],
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.engine = SimpleNamespace(cassette_library=library)
    return TestClient(app)


def test_control_endpoint_activates_a_cassette_and_reports_it(tmp_path: Path) -> None:
    library = directory_library(tmp_path)
    with control_client(library) as client:
        assert client.get("/allm/cassette").json()["active"] is None
        answer = client.post("/allm/cassette", json={"name": "suite/one", "record_mode": "new_episodes"})
        assert answer.status_code == 200
        assert answer.json()["name"] == "suite/one.json"
        assert answer.json()["record_mode"] == "new_episodes"
        assert client.get("/allm/cassette").json()["active"] == str((tmp_path / "suite/one.json").resolve())
        assert library.active == (tmp_path / "suite/one.json").resolve()
        assert client.post("/allm/cassette", json={"name": None}).json()["active"] is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "../../etc/passwd"}, "invalid_cassette_name"),
        ({"name": "ok", "record_mode": "sometimes"}, "invalid_record_mode"),
        ({"name": 3}, None),
        ({"nme": "typo"}, "unknown_parameter"),
        (["not", "an", "object"], "invalid_json"),
    ],
)
def test_control_endpoint_errors_are_non_retried_openai_envelopes(
    tmp_path: Path, body: object, code: str | None
) -> None:
    with control_client(directory_library(tmp_path)) as client:
        answer = client.post("/allm/cassette", json=body)
    assert answer.status_code == 400
    assert answer.headers["x-should-retry"] == "false"
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code and error["message"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"path": "demo.txt"}, "needs one of the extensions .json, .yaml, .yml"),
        ({"path": "demo.json", "match_on": ("method", "bodyy")}, "unknown cassette matcher(s) ['bodyy']"),
    ],
)
def test_bad_cassette_settings_fail_when_the_library_is_built(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        CassetteLibrary(CassetteSettings(**settings))  # type: ignore[arg-type]
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "content", ['{"version": 1, "interactions": [{"req": 1}]}', '{"version": 7, "interactions": []}', "[1, 2]"]
)
async def test_a_file_that_is_json_but_not_a_cassette_is_a_clear_400(tmp_path: Path, content: str) -> None:
    (tmp_path / "odd.json").write_text(content)
    with pytest.raises(errors.InvalidRequestError) as caught:
        await generate(directory_library(tmp_path), DeadUpstream(), cassette="odd")
    assert caught.value.code == "cassette_unreadable"


def test_control_endpoint_requires_the_access_token(tmp_path: Path) -> None:
    from allm_proxy import Engine, ProxyConfig
    from tests.support.asgi_server import running_proxy

    engine = Engine(cassettes=CassetteSettings(directory=str(tmp_path), record_mode="none"))
    with running_proxy(engine, ProxyConfig(access_token="proxy-token-1")) as url:
        refused = httpx.post(f"{url}/allm/cassette", json={"name": "a"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        allowed = httpx.post(
            f"{url}/allm/cassette", json={"name": "a"}, headers={"authorization": "Bearer proxy-token-1"}
        )
        assert allowed.status_code == 200, allowed.text


async def test_a_recording_another_process_writes_while_this_one_reads_the_file_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers share a cassette file: one loading it while the other writes must not take the
    newer file for the one it read, or its next save writes over the other's recording."""
    cassette = tmp_path / "shared.json"
    upstream = Upstream()
    writer = library_for(cassette, "new_episodes")
    await generate(writer, upstream.asgi_transport(), prompt="first")
    with_first = cassette.read_bytes()
    await generate(writer, upstream.asgi_transport(), prompt="second")
    with_both = cassette.read_bytes()
    cassette.write_bytes(with_first)

    read_file = Tape._read_file

    def read_then_other_worker_writes(tape: Tape) -> Any:
        found = read_file(tape)
        (tmp_path / "next.json").write_bytes(with_both)
        os.replace(tmp_path / "next.json", cassette)  # the other worker's atomic write, just after our read
        return found

    monkeypatch.setattr(Tape, "_read_file", read_then_other_worker_writes)
    reader = library_for(cassette, "new_episodes")
    await reader.tape_for(None)
    monkeypatch.setattr(Tape, "_read_file", read_file)
    await generate(reader, upstream.asgi_transport(), prompt="third")
    prompts = [json.loads(i["request"]["body"])["prompt"] for i in json.loads(cassette.read_text())["interactions"]]
    assert prompts == ["first", "second", "third"]
