"""The journal through the official SDK: what /allm/requests says about each kind of call."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import openai
import pytest

from allm_proxy import Engine, ProxyConfig
from allm_proxy.config import CassetteSettings, JournalSettings
from allm_proxy.journal import MemoryJournal
from tests.support.asgi_server import running_proxy
from tests.support.images import half_transparent_mask, png_bytes
from tests.upstreams.openai_upstream import FakeOpenAI

UPSTREAM_KEY = "sk-test-jnl-up-0123"
CLIENT_KEY = "sk-test-jnl-cl-9876"
ACCESS_TOKEN = "sk-test-jnl-tok-555"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def client(url: str, key: str = CLIENT_KEY, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, default_headers=headers or None)


def entries(url: str, **params: str) -> list[dict]:
    answer = httpx.get(url + "/allm/requests", params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "list"
    return list(body["data"])


def test_fake_generate_edit_variation_and_bad_request_are_journaled_with_their_images() -> None:
    image, mask = png_bytes((64, 64)), half_transparent_mask((64, 64))
    with running_proxy(Engine()) as url:
        sdk = client(url, **{"X-ALLM-Session": "tour"})
        generated = sdk.images.generate(prompt="a kestrel", size="256x256", response_format="b64_json", n=2)
        edited = sdk.images.edit(
            image=("in.png", image, "image/png"),
            mask=("mask.png", mask, "image/png"),
            prompt="add a hat",
            size="256x256",
            response_format="b64_json",
        )
        varied = sdk.images.create_variation(
            image=("in.png", image, "image/png"), size="256x256", response_format="b64_json"
        )
        with pytest.raises(openai.BadRequestError) as bad:
            sdk.images.generate(prompt="x", size="13x13")
        got = entries(url)

    assert [e["operation"] for e in got] == ["generate", "edit", "variation", "generate"]
    gen, edit, var, wrong = got
    for entry, answer in ((gen, generated), (edit, edited), (var, varied)):
        assert entry["status"] == 200 and entry["source"] == "fake" and entry["provider"] == "fake"
        assert entry["session"] == "tour" and entry["method"] == "POST"
        client_bytes = [base64.b64decode(d.b64_json or "") for d in answer.data or []]
        assert [i["sha256"] for i in entry["images"]] == [sha(b) for b in client_bytes]
        assert [i["bytes"] for i in entry["images"]] == [len(b) for b in client_bytes]
        assert all((i["width"], i["height"], i["mime_type"]) == (256, 256, "image/png") for i in entry["images"])
    assert gen["params"]["prompt"] == "a kestrel" and gen["params"]["n"] == 2 and gen["params"]["size"] == "256x256"
    assert gen["path"] == "/v1/images/generations" and gen["inputs"] == []
    assert [(i["part"], i["sha256"], i["width"]) for i in edit["inputs"]] == [
        ("image", sha(image), 64),
        ("mask", sha(mask), 64),
    ]
    assert [i["part"] for i in var["inputs"]] == ["image"]
    assert "images" not in edit["params"] and "mask" not in edit["params"]
    assert wrong["status"] == 400 and wrong["images"] == []
    assert wrong["error"]["error"] == bad.value.body
    assert wrong["error"]["error"]["param"] == "size"


def test_entry_blob_routes_return_the_bytes_the_client_sent_and_got() -> None:
    image, mask = png_bytes((32, 32)), half_transparent_mask((32, 32))
    with running_proxy(Engine()) as url:
        answer = client(url).images.edit(
            image=("in.png", image, "image/png"),
            mask=("m.png", mask, "image/png"),
            prompt="p",
            size="256x256",
            response_format="url",
        )
        assert answer.data
        served = httpx.get(answer.data[0].url or "").content  # a hosted URL: the journal keeps its bytes
        entry = entries(url)[-1]
        one = httpx.get(f"{url}/allm/requests/{entry['id']}").json()
        mask_back = httpx.get(f"{url}/allm/requests/{entry['id']}/inputs/1")
        image_back = httpx.get(f"{url}/allm/requests/{entry['id']}/images/0")
        missing = httpx.get(f"{url}/allm/requests/{entry['id']}/images/5")
        unknown = httpx.get(f"{url}/allm/requests/req_nope")
    assert one == entry
    assert (mask_back.content, mask_back.headers["content-type"]) == (mask, "image/png")
    assert image_back.content == served and entry["images"][0]["sha256"] == sha(served)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "journal_bytes_gone"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "journal_entry_not_found"


def test_session_filter_status_filter_limit_and_delete_of_one_session() -> None:
    with running_proxy(Engine()) as url:
        for session in ("a", "b", "a"):
            client(url, **{"X-ALLM-Session": session}).images.generate(prompt=session, size="256x256")
        with pytest.raises(openai.BadRequestError):
            client(url, **{"X-ALLM-Session": "b"}).images.generate(prompt="x", size="1x1")
        assert [e["params"]["prompt"] for e in entries(url, session="a")] == ["a", "a"]
        assert [e["status"] for e in entries(url, session="b")] == [200, 400]
        assert [e["session"] for e in entries(url, status="error")] == ["b"]
        assert [e["params"]["prompt"] for e in entries(url, limit="2")] == ["a", "x"]
        assert entries(url, operation="edit") == []
        deleted = httpx.delete(url + "/allm/requests", params={"session": "a"}).json()
        assert deleted["deleted"] == 2
        assert [e["session"] for e in entries(url)] == ["b", "b"]
        bad_filter = httpx.get(url + "/allm/requests", params={"colour": "red"})
        assert bad_filter.status_code == 400 and bad_filter.json()["error"]["param"] == "colour"
        httpx.delete(url + "/allm/requests")
        assert entries(url) == []


def test_the_journal_keeps_only_the_newest_max_entries() -> None:
    engine = Engine(journal=MemoryJournal(JournalSettings(max_entries=3)))
    with running_proxy(engine) as url:
        for n in range(5):
            client(url).images.generate(prompt=f"p{n}", size="256x256")
        assert [e["params"]["prompt"] for e in entries(url)] == ["p2", "p3", "p4"]


def test_no_journal_means_no_entries_and_no_journal_routes() -> None:
    with running_proxy(Engine(journal=False)) as url:
        client(url).images.generate(prompt="p", size="256x256")
        answer = httpx.get(url + "/allm/requests")
        info = httpx.get(url + "/allm/info").json()
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_url"
    assert info["journal"] is False


def test_every_allm_route_needs_the_access_token_when_one_is_set() -> None:
    with running_proxy(Engine(), ProxyConfig(access_token=ACCESS_TOKEN)) as url:
        client(url, key=ACCESS_TOKEN).images.generate(prompt="p", size="256x256")
        for path in ("/allm/", "/allm/requests", "/allm/info", "/allm/static/app.js", "/allm/requests/stream"):
            refused = httpx.get(url + path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "invalid_api_key"
        allowed = httpx.get(url + "/allm/requests", headers={"authorization": f"Bearer {ACCESS_TOKEN}"})
        # The page passes the token in its URL, since a browser cannot add it to page loads or EventSource.
        page = httpx.get(url + "/allm/", params={"access_token": ACCESS_TOKEN})
        wrong = httpx.get(url + "/allm/requests", params={"access_token": "wrong"})
        not_for_v1 = httpx.get(url + "/v1/models", params={"access_token": ACCESS_TOKEN})
    assert allowed.status_code == 200 and len(allowed.json()["data"]) == 1
    assert page.status_code == 200 and wrong.status_code == 401 and not_for_v1.status_code == 401


def test_cassette_record_hit_and_miss_are_told_apart_and_no_key_appears(tmp_path: Path) -> None:
    cassette = tmp_path / "journal.json"
    upstream = FakeOpenAI()

    def engine(mode: str) -> Engine:
        return Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": UPSTREAM_KEY},
            cassettes=CassetteSettings(path=str(cassette), record_mode=mode),
        )

    with upstream.serving() as upstream_url, running_proxy(engine("once")) as url:
        recorded = client(url).images.generate(model="gpt-image-1", prompt="a heron", size="1024x1024")
        first = entries(url)[-1]
    with running_proxy(engine("none")) as url:
        replayed = client(url).images.generate(model="gpt-image-1", prompt="a heron", size="1024x1024")
        with pytest.raises(openai.BadRequestError):
            client(url).images.generate(model="gpt-image-1", prompt="a heron, at night", size="1024x1024")
        hit, miss = entries(url)
        raw = [httpx.get(url + "/allm/requests").text, httpx.get(f"{url}/allm/requests/{miss['id']}").text]

    assert first["source"] == "upstream" and hit["source"] == "cassette" and miss["source"] == "cassette"
    assert first["cassette"] == str(cassette.resolve())
    assert [(u["method"], u["status"], u["source"]) for u in first["upstream"]] == [("POST", 200, "upstream")]
    assert first["upstream"][0]["url"] == upstream_url + "/v1/images/generations"
    assert hit["upstream"][0]["source"] == "cassette"
    assert replayed.data and recorded.data
    assert replayed.data[0].b64_json == recorded.data[0].b64_json
    assert hit["images"][0]["sha256"] == sha(base64.b64decode(replayed.data[0].b64_json or ""))
    assert hit["usage"] is not None and hit["usage"]["total_tokens"] == (
        replayed.usage.total_tokens if replayed.usage else None
    )
    assert miss["status"] == 400 and miss["error"]["error"]["code"] == "cassette_miss"
    assert miss["miss"]["request"]["prompt"] == "a heron, at night"
    assert miss["miss"]["nearest"]["prompt"] == "a heron" and miss["miss"]["nearest"]["index"] == 0
    assert [d["matcher"] for d in miss["miss"]["differs"]] == ["body"]
    assert miss["upstream"][0]["error"] == "cassette_miss"
    for text in raw:
        assert UPSTREAM_KEY not in text and CLIENT_KEY not in text
        assert "Bearer" not in text and "authorization" not in text.lower()
    assert json.loads(raw[1])["id"] == miss["id"]


def test_upstream_urls_lose_their_key_query_parameter() -> None:
    from allm_proxy.journal.recorder import redact_url

    cleaned = redact_url(
        "https://example.test/v1beta/models/m:generateContent?alt=sse&key=AIzaNOTREAL123456", {"sk-test-journal-secret"}
    )
    assert "key=" not in cleaned and "AIza" not in cleaned and "alt=sse" in cleaned
    assert redact_url("http://h/x/sk-test-journal-secret/y", {"sk-test-journal-secret"}) == "http://h/x/<redacted>/y"


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.test/v1/images/generations",
        "http://h/x/sk-test-journal-secret/y",
        "http://h/short/sk-t/y",
        "https://g.test/v1beta/models/m:generateContent?alt=sse&key=AIzaNOTREAL123456",
        "https://g.test/p?api_key=sk-test-journal-secret&x=1",
    ],
)
def test_url_redaction_is_the_request_filters_own(url: str) -> None:
    from vcr.request import Request

    from allm_proxy.cassettes.filters import SecretFilter

    secrets = {"sk-test-journal-secret", "sk-t", None}
    clean, _ = SecretFilter().request(Request("GET", url, b"", {}), secrets)
    assert SecretFilter().url(url, secrets) == str(clean.uri)


def test_unread_entries_are_found_by_upstream_id_cleared_by_session_and_hold_no_key() -> None:
    # An entry's fields are written by its first reader (`EntryFacts.fill`): these are the readers
    # that look at a field before any listing has written them.
    upstream = FakeOpenAI()
    journal = MemoryJournal(JournalSettings())
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": UPSTREAM_KEY},
            journal=journal,
        )
        with running_proxy(engine) as url:
            seen = []
            for session in ("a", "b", "a"):
                raw = client(url, **{"X-ALLM-Session": session}).images.with_raw_response.generate(
                    model="gpt-image-1", prompt=f"for {session}", size="1024x1024"
                )
                seen.append(raw.headers["x-request-id"])
            with pytest.raises(openai.BadRequestError):
                client(url, **{"X-ALLM-Session": "b"}).images.generate(prompt="x", size="1x1")

            unread = [r.pending.__self__ for r in journal._records.values()]  # type: ignore[union-attr]
            held = repr([[getattr(facts, name) for name in facts.__slots__] for facts in unread])
            assert len(unread) == 4 and UPSTREAM_KEY not in held and CLIENT_KEY not in held

            upstream_ids = [seen_id for seen_id in seen if seen_id.startswith("req_up_")]
            assert len(upstream_ids) == 3, seen
            found = httpx.get(f"{url}/allm/requests/{upstream_ids[1]}").json()
            assert found["upstream_request_id"] == upstream_ids[1] and found["session"] == "b"
            assert found["params"]["prompt"] == "for b" and found["time"] and found["status"] == 200

            assert httpx.delete(url + "/allm/requests", params={"session": "a"}).json()["deleted"] == 2
            left = entries(url)
    assert [(e["session"], e["status"]) for e in left] == [("b", 200), ("b", 400)]
    assert left[1]["error"]["error"]["param"] == "size" and left[1]["params"]["prompt"] == "x"
    assert CLIENT_KEY not in json.dumps(left) and UPSTREAM_KEY not in json.dumps(left)
