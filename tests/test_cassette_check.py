"""`allm-proxy cassettes check`: cassettes recorded through the proxy, checked against upstreams that drifted."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import vcr
from click.testing import CliRunner, Result
from PIL import Image as PILImage

from allm_proxy import Engine
from allm_proxy.cassettes import report
from allm_proxy.cli import main
from allm_proxy.config import CassetteSettings
from tests.support.asgi_server import running_proxy
from tests.support.images import png_bytes
from tests.upstreams import gemini_upstream
from tests.upstreams.gemini_upstream import FakeGemini
from tests.upstreams.openai_upstream import FakeOpenAI, Received

OPENAI_KEY = "sk-test-drift-0123"
GEMINI_KEY = gemini_upstream.VALID_KEY
RETIRED_OPENAI = "dall-e-3"
RETIRED_GEMINI = "gemini-2.5-flash-image"
SERIALIZERS = {".json": "json", ".yaml": "yaml"}


class DriftedOpenAI(FakeOpenAI):
    """OpenAI some months later: `output_format` renamed `format`, `revised_prompt` on every image,
    images 16x12 instead of 8x8, and dall-e-3 retired (404 model_not_found)."""

    def _refusal(self, received: Received) -> tuple[int, dict[str, Any]] | None:
        if received.fields.get("model") == RETIRED_OPENAI:
            return 404, {
                "error": {
                    "message": f"The model `{RETIRED_OPENAI}` does not exist.",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            }
        return super()._refusal(received)

    def _answer(self, received: Received, number: int) -> bytes:
        answer = json.loads(super()._answer(received, number))
        if "output_format" in answer:
            answer["format"] = answer.pop("output_format")
        for item in answer["data"]:
            item["revised_prompt"] = "a revised prompt"
        return json.dumps(answer).encode()

    def _image(self, number: int, index: int, fmt: str) -> bytes:
        buf = io.BytesIO()
        PILImage.new("RGB", (16, 12), (number % 256, index % 256, 9)).save(buf, format=fmt.upper())
        return buf.getvalue()


class DriftedGemini(FakeGemini):
    """Gemini later: `modelVersion` renamed `model_version`, a new `serviceTier`, twice the pixels
    (scale 4, not 8), and gemini-2.5-flash-image retired (404 NOT_FOUND)."""

    def __init__(self) -> None:
        models = {k: v for k, v in gemini_upstream.MODELS.items() if k != RETIRED_GEMINI}
        super().__init__(scale=4, models=models)

    def _answer(self, *args: Any) -> dict[str, Any]:
        answer = super()._answer(*args)
        answer["model_version"] = answer.pop("modelVersion")
        answer["serviceTier"] = "standard"
        return answer


# -- recording -----------------------------------------------------------------------------------


def record_openai(path: Path) -> None:
    """Four SDK calls through the proxy (provider openai, record mode once) to the fake OpenAI."""
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY},
            cassettes=CassetteSettings(path=str(path), record_mode="once"),
        )
        with running_proxy(engine) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test-client", max_retries=0)
            client.images.generate(model="gpt-image-1", prompt="a kestrel", size="1024x1024")
            client.images.generate(model=RETIRED_OPENAI, prompt="a heron", response_format="b64_json")
            client.images.edit(
                model="gpt-image-1", image=("in.png", png_bytes((16, 16)), "image/png"), prompt="add a hat"
            )
            list(client.images.generate(model="gpt-image-1", prompt="an owl", stream=True, partial_images=1))
    assert len(report.read(path)) == 4


def record_gemini(path: Path) -> None:
    upstream = FakeGemini()
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="gemini",
            image_adapter_opts={"base_url": upstream_url, "api_key": GEMINI_KEY},
            cassettes=CassetteSettings(path=str(path), record_mode="once"),
        )
        with running_proxy(engine) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test-client", max_retries=0)
            client.images.generate(model="gemini-3-pro-image", prompt="a kestrel")
            client.images.generate(model=RETIRED_GEMINI, prompt="a heron")
    assert upstream.problems == []
    assert len(report.read(path)) == 2


@pytest.fixture(scope="module", params=[".json", ".yaml"])
def openai_cassette(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recorded") / f"openai{request.param}"
    record_openai(path)
    return path


@pytest.fixture(scope="module")
def gemini_cassette(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recorded") / "gemini.yaml"
    record_gemini(path)
    return path


@pytest.fixture
def cassette(openai_cassette: Path, tmp_path: Path) -> Path:
    """A copy of the recorded OpenAI cassette this test may change."""
    copy = tmp_path / openai_cassette.name
    copy.write_bytes(openai_cassette.read_bytes())
    return copy


@pytest.fixture
def drifted() -> Iterator[tuple[DriftedOpenAI, str]]:
    upstream = DriftedOpenAI()
    with upstream.serving() as url:
        yield upstream, url


def check(*args: str, env: dict[str, str] | None = None, answer: str | None = None) -> Result:
    """`allm-proxy cassettes check ARGS` with fake keys; `answer` is typed at the prompt, if one comes."""
    environment = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "GEMINI_API_KEY": GEMINI_KEY,
        "GOOGLE_API_KEY": "",
        "ALLM_PROXY_OPENAI_BASE_URL": "",
        "ALLM_PROXY_GEMINI_BASE_URL": "",
        **(env or {}),
    }
    return CliRunner().invoke(main, ["cassettes", "check", *args], env=environment, input=answer)


def lines(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if " #" in line]


# -- live against the same upstream ---------------------------------------------------------------


def test_a_cassette_checked_against_the_upstream_it_was_recorded_from_is_all_same(cassette: Path) -> None:
    upstream = FakeOpenAI()
    with upstream.serving() as url:
        result = check(str(cassette), "--live", "--yes", "--openai-base-url", url + "/v1")
    assert result.exit_code == 0, result.output
    assert [line.rsplit(": ", 1)[1] for line in lines(result)] == ["same"] * 4
    # Every recorded request arrived as the proxy once sent it: the key added, the upload's bytes intact.
    # (Sent several at once, so they arrive in any order.)
    assert sorted(r.path for r in upstream.requests) == ["/v1/images/edits"] + ["/v1/images/generations"] * 3
    assert {r.bearer for r in upstream.requests} == {OPENAI_KEY}
    edit = next(r for r in upstream.requests if r.path == "/v1/images/edits")
    assert edit.files("image")[0].data == png_bytes((16, 16))


def test_without_a_base_url_requests_go_to_the_host_they_were_recorded_from(tmp_path: Path) -> None:
    upstream = FakeOpenAI()
    path = tmp_path / "here.json"
    with upstream.serving() as url:
        engine = Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": url + "/v1", "api_key": OPENAI_KEY},
            cassettes=CassetteSettings(path=str(path), record_mode="once"),
        )
        with running_proxy(engine) as proxy_url:
            openai.OpenAI(base_url=proxy_url + "/v1", api_key="sk-test-c", max_retries=0).images.generate(
                model="gpt-image-1", prompt="a wren"
            )
        result = check(str(tmp_path), "--live", "--yes")
    assert result.exit_code == 0, result.output
    assert len(upstream.requests) == 2 and upstream.requests[1].bearer == OPENAI_KEY
    assert lines(result) == [f"{path} #0 POST /v1/images/generations model=gpt-image-1: same"]


# -- live against an upstream that drifted --------------------------------------------------------


def test_each_drift_is_named_and_the_check_exits_1(cassette: Path, drifted: tuple[DriftedOpenAI, str]) -> None:
    result = check(str(cassette), "--live", "--yes", "--openai-base-url", drifted[1] + "/v1")
    assert result.exit_code == 1, result.output
    generated, retired, edited, streamed = lines(result)
    for line in (generated, edited):
        assert "drift: " in line
        assert "output_format: gone" in line
        assert "format: new field" in line
        assert "data[0].revised_prompt: new field" in line
        assert "image 0 size 8x8 -> 16x12" in line
    assert retired.endswith(f"model={RETIRED_OPENAI}: drift: status 200 -> 404 model_not_found")
    assert "image 0 size 8x8 -> 16x12; image 1 size 8x8 -> 16x12" in streamed
    assert "events" not in streamed  # the same event types, in the same order


def test_update_rerecords_drifted_interactions_so_a_second_check_is_all_same(
    cassette: Path, drifted: tuple[DriftedOpenAI, str]
) -> None:
    before = report.read(cassette)
    first = check(str(cassette), "--live", "--yes", "--update", "--openai-base-url", drifted[1] + "/v1")
    assert first.exit_code == 1
    assert all(line.endswith("(updated)") for line in lines(first))
    assert OPENAI_KEY not in cassette.read_text()
    assert report.verify(cassette) == []
    after = report.read(cassette)
    # Requests stay as recorded (the proxy still matches them); only the answers are new.
    assert [e.request.uri for e in after] == [e.request.uri for e in before]
    assert [e.request.body for e in after] == [e.request.body for e in before]

    again = check(str(cassette), "--live", "--yes", "--openai-base-url", drifted[1] + "/v1")
    assert again.exit_code == 0, again.output
    assert all(line.endswith(": same") for line in lines(again))
    assert len(lines(again)) == 4

    # Plain vcrpy still reads and replays it, with the answers the drifted upstream gave.
    generated, retired = after[0], after[1]
    with (
        vcr.use_cassette(
            str(cassette),
            record_mode="none",
            serializer=SERIALIZERS[cassette.suffix],
            match_on=["method", "uri", "body"],
        ),
        httpx.Client() as client,
    ):
        answer = client.post(
            generated.request.uri, content=generated.request.body, headers={"content-type": "application/json"}
        )
        gone = client.post(
            retired.request.uri, content=retired.request.body, headers={"content-type": "application/json"}
        )
    assert answer.status_code == 200 and "format" in answer.json() and "output_format" not in answer.json()
    image = base64.b64decode(answer.json()["data"][0]["b64_json"])
    assert PILImage.open(io.BytesIO(image)).size == (16, 12)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"


def test_json_report_names_every_interaction_and_its_differences(
    cassette: Path, drifted: tuple[DriftedOpenAI, str]
) -> None:
    result = check(str(cassette), "--live", "--yes", "--json", "--openai-base-url", drifted[1] + "/v1")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["drifted"] is True
    assert data["counts"] == {"same": 0, "drift": 4, "error": 0, "skipped": 0}
    retired = data["interactions"][1]
    assert retired["index"] == 1 and retired["result"] == "drift"
    assert retired["differences"] == ["status 200 -> 404 model_not_found"]
    assert "data[0].revised_prompt: new field" in data["interactions"][0]["differences"]


# -- Gemini -----------------------------------------------------------------------------------------


def test_a_gemini_cassette_is_checked_the_same_way_and_updated(gemini_cassette: Path, tmp_path: Path) -> None:
    path = tmp_path / gemini_cassette.name
    path.write_bytes(gemini_cassette.read_bytes())
    same = FakeGemini()
    with same.serving() as url:
        result = check(str(path), "--live", "--yes", "--gemini-base-url", url)
    assert result.exit_code == 0, result.output
    assert [line.rsplit(": ", 1)[1] for line in lines(result)] == ["same", "same"]
    assert {r.headers["x-goog-api-key"] for r in same.requests} == {GEMINI_KEY}

    drifted = DriftedGemini()
    with drifted.serving() as url:
        result = check(str(path), "--live", "--yes", "--update", "--gemini-base-url", url)
        assert result.exit_code == 1, result.output
        current, retired = lines(result)
        assert "modelVersion: gone" in current and "model_version: new field" in current
        assert "serviceTier: new field" in current
        assert "image 0 size 128x128 -> 256x256" in current
        assert f"model={RETIRED_GEMINI}: drift: status 200 -> 404 NOT_FOUND" in retired
        again = check(str(path), "--live", "--yes", "--gemini-base-url", url)
    assert again.exit_code == 0, again.output
    assert GEMINI_KEY not in path.read_text()
    assert report.verify(path) == []


# -- two cassettes ------------------------------------------------------------------------------------


def test_old_new_compares_two_cassettes_of_the_same_calls(cassette: Path, tmp_path: Path) -> None:
    identical = check(str(cassette), str(cassette))
    assert identical.exit_code == 0 and len(lines(identical)) == 4

    newer = tmp_path / f"newer{cassette.suffix}"
    newer.write_bytes(cassette.read_bytes())
    upstream = DriftedOpenAI()
    with upstream.serving() as url:
        assert check(str(newer), "--live", "--yes", "--update", "--openai-base-url", url + "/v1").exit_code == 1
    result = check(str(cassette), str(newer))
    assert result.exit_code == 1
    assert "status 200 -> 404 model_not_found" in lines(result)[1]
    assert "data[0].revised_prompt: new field" in lines(result)[0]


def test_old_new_pairs_interactions_by_request_not_position(tmp_path: Path) -> None:
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:

        def record(path: Path, prompts: list[str]) -> None:
            engine = Engine(
                image_adapter="openai",
                image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY},
                cassettes=CassetteSettings(path=str(path), record_mode="once"),
            )
            with running_proxy(engine) as url:
                client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test-c", max_retries=0)
                for prompt in prompts:
                    model = RETIRED_OPENAI if prompt == "a heron" else "gpt-image-1"
                    client.images.generate(
                        model=model, prompt=prompt, response_format=None if model == "gpt-image-1" else "b64_json"
                    )

        record(tmp_path / "old.json", ["a kestrel", "a heron"])
        record(tmp_path / "new.json", ["a heron", "a kestrel"])
    result = check(str(tmp_path / "old.json"), str(tmp_path / "new.json"))
    assert result.exit_code == 0, result.output


def test_without_live_two_files_are_needed(cassette: Path) -> None:
    result = check(str(cassette))
    assert result.exit_code == 2
    assert "OLD NEW" in result.output


# -- asking before spending money ---------------------------------------------------------------------


def test_live_off_a_terminal_without_yes_sends_nothing_and_exits_2(cassette: Path) -> None:
    upstream = FakeOpenAI()
    with upstream.serving() as url:
        result = check(str(cassette), "--live", "--openai-base-url", url + "/v1")
    assert result.exit_code == 2
    assert "--yes" in result.output
    assert "4 requests to send live (openai 4); models: dall-e-3 x1, gpt-image-1 x3" in result.output
    assert upstream.requests == []


def test_live_without_a_key_is_a_usage_error_saying_how_to_set_one(cassette: Path) -> None:
    result = check(str(cassette), "--live", "--yes", env={"OPENAI_API_KEY": ""})
    assert result.exit_code == 2
    assert "OPENAI_API_KEY" in result.output


def test_an_unreachable_upstream_is_an_error_line_and_exit_1(cassette: Path) -> None:
    with FakeOpenAI().serving() as url:
        gone = url  # stopped below: nothing listens there any more
    result = check(str(cassette), "--live", "--yes", "--openai-base-url", gone + "/v1")
    assert result.exit_code == 1
    assert all(": error: could not reach 127.0.0.1" in line for line in lines(result))
    assert OPENAI_KEY not in result.output


@pytest.fixture
def at_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import allm_proxy.cli_cassettes

    monkeypatch.setattr(allm_proxy.cli_cassettes, "_on_terminal", lambda stream: True)


@pytest.mark.usefixtures("at_a_terminal")
def test_on_a_terminal_the_check_asks_and_no_means_nothing_is_sent(cassette: Path) -> None:
    upstream = FakeOpenAI()
    with upstream.serving() as url:
        result = check(str(cassette), "--live", "--openai-base-url", url + "/v1", answer="n\n")
    assert "Send them (image calls cost money)?" in result.output
    assert result.exit_code == 1 and "Aborted" in result.output
    assert upstream.requests == []


@pytest.mark.usefixtures("at_a_terminal")
def test_on_a_terminal_yes_sends_and_shows_progress(cassette: Path) -> None:
    upstream = FakeOpenAI()
    with upstream.serving() as url:
        result = check(str(cassette), "--live", "--openai-base-url", url + "/v1", answer="y\n")
    assert result.exit_code == 0, result.output
    assert len(upstream.requests) == 4
    assert [line for line in result.stderr.splitlines() if "/" in line and line[0].isdigit()] == [
        "1/4",
        "2/4",
        "3/4",
        "4/4",
    ]
