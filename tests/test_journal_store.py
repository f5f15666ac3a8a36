"""The journal store on its own: bounds, filters, lazily described images, live feeds."""

from __future__ import annotations

import asyncio
import base64
import hashlib

from allm_proxy.config import JournalSettings
from allm_proxy.journal import Blob, MemoryJournal, Record
from allm_proxy.journal.recorder import PARAM_FIELDS, params_of
from allm_proxy.types import Image, ImageRequest, InputFile
from tests.support.images import png_bytes


def record(n: int, *, session: str = "s", status: int = 200, image: bytes | None = None) -> Record:
    fields = {
        "id": f"req_{n}",
        "session": session,
        "status": status,
        "operation": "generate",
        "params": {"prompt": f"p{n}"},
    }
    images = [Blob(image, len(image))] if image is not None else []
    return Record(fields, images=images)


def test_oldest_entries_go_first_past_max_entries() -> None:
    journal = MemoryJournal(JournalSettings(max_entries=2))
    for n in range(4):
        journal.append(record(n))
    assert [e["id"] for e in journal.list()] == ["req_2", "req_3"]
    assert journal.get("req_0") is None


def test_image_bytes_past_the_budget_are_dropped_oldest_first_and_the_entry_says_so() -> None:
    picture = png_bytes((64, 64))
    budget_mb = (len(picture) * 2.5) / 2**20  # room for two images' bytes
    journal = MemoryJournal(JournalSettings(max_image_mb=budget_mb))
    for n in range(3):
        journal.append(record(n, image=picture))
    oldest, middle, newest = journal.list()
    assert oldest["images"][0]["bytes_dropped"] is True
    assert oldest["images"][0]["sha256"] == hashlib.sha256(picture).hexdigest()  # described before the drop
    assert (oldest["images"][0]["width"], oldest["images"][0]["height"]) == (64, 64)
    assert middle["images"][0]["bytes_dropped"] is False and newest["images"][0]["bytes_dropped"] is False
    assert journal.blob("req_0", "images", 0) is None
    assert journal.blob("req_2", "images", 0) == (picture, "image/png")
    assert journal.held_bytes == 2 * len(picture)


def test_base64_images_are_decoded_only_when_read() -> None:
    picture = png_bytes((8, 8))
    image = Image(b64_json=base64.b64encode(picture).decode())
    journal = MemoryJournal()
    journal.append(Record({"id": "req_b"}, images=[Blob(image, len(image._b64 or "") * 3 // 4)]))
    assert image._data is None  # appending did not decode
    assert journal.get("req_b")["images"][0]["bytes"] == len(picture)  # type: ignore[index]


def test_filters_by_session_status_operation_and_limit() -> None:
    journal = MemoryJournal()
    journal.append(record(1, session="a"))
    journal.append(record(2, session="b", status=400))
    journal.append(record(3, session="a", status=502))
    assert [e["id"] for e in journal.list(session="a")] == ["req_1", "req_3"]
    assert [e["id"] for e in journal.list(status="error")] == ["req_2", "req_3"]
    assert [e["id"] for e in journal.list(status=400)] == ["req_2"]
    assert [e["id"] for e in journal.list(limit=1)] == ["req_3"]
    assert journal.list(operation="edit") == []
    assert journal.clear(session="a") == 2
    assert [e["id"] for e in journal.list()] == ["req_2"]


def test_an_entry_is_also_found_by_the_upstream_request_id_its_client_saw() -> None:
    journal = MemoryJournal()
    journal.append(Record({"id": "req_own", "upstream_request_id": "req_up_1"}))
    assert journal.get("req_up_1")["id"] == "req_own"  # type: ignore[index]


async def test_a_slow_subscriber_loses_entries_instead_of_growing_a_queue() -> None:
    journal = MemoryJournal()
    async with journal.subscribe() as fast, journal.subscribe() as slow:
        slow.queue = asyncio.Queue(2)
        for n in range(5):
            journal.append(record(n))
        assert [await fast.get() for _ in range(5)] == [f"req_{n}" for n in range(5)]
        assert slow.queue.qsize() == 2 and slow.missed == 3
    journal.append(record(9))  # nobody listens any more: nothing is queued anywhere
    assert fast.queue.qsize() == 0


def test_params_are_every_request_field_but_the_file_bytes() -> None:
    request = ImageRequest(
        operation="edit", prompt="p", images=[InputFile(b"x")], mask=InputFile(b"m"), extra=[("quality_hint", "max")]
    )
    params = params_of(request)
    assert set(params) == set(PARAM_FIELDS)
    assert {"images", "mask", "extra_files"}.isdisjoint(params)
    assert params["prompt"] == "p" and params["extra"] == {"quality_hint": "max"}


def test_unread_base64_images_and_relayed_bodies_are_dropped_without_decoding() -> None:
    picture = png_bytes((64, 48))
    image = Image(b64_json=base64.b64encode(picture).decode())
    relayed_ran: list[bool] = []
    journal = MemoryJournal(JournalSettings(max_image_mb=(len(picture) * 1.5) / 2**20))
    journal.append(Record({"id": "req_b64"}, images=[Blob(image, len(picture))]))
    relayed = Record(
        {"id": "req_relayed"}, pending=lambda r, relayed=True: relayed_ran.append(relayed), pending_bytes=len(picture)
    )
    journal.append(relayed)
    journal.append(record(9, image=picture))  # over the budget: the two older ones let their bytes go
    assert image._data is None  # never decoded
    described = journal.get("req_b64")["images"][0]  # type: ignore[index]
    assert described["bytes_dropped"] is True and described["sha256"] is None
    assert (described["mime_type"], described["width"], described["height"]) == ("image/png", 64, 48)
    assert relayed_ran == [False]  # the relayed body was let go unparsed
    assert journal.get("req_relayed")["images_dropped"] is True  # type: ignore[index]
