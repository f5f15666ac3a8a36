"""The journal store on its own: bounds, filters, lazily described images, live feeds."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from allm_proxy.config import JournalSettings
from allm_proxy.journal import Blob, MemoryJournal, OnDisk, Record
from allm_proxy.journal.recorder import PARAM_FIELDS, params_of
from allm_proxy.journal.spool import remove_orphans
from allm_proxy.scratch import MEMORY_ROOT, scratch_dir
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


async def test_oldest_entries_go_first_past_max_entries() -> None:
    journal = MemoryJournal(JournalSettings(max_entries=2))
    for n in range(4):
        await journal.append(record(n))
    assert [e["id"] for e in await journal.list()] == ["req_2", "req_3"]
    assert await journal.get("req_0") is None


async def test_image_bytes_past_the_budget_are_dropped_oldest_first_and_the_entry_says_so() -> None:
    picture = png_bytes((64, 64))
    budget_mb = (len(picture) * 2.5) / 2**20  # room for two images' bytes
    journal = MemoryJournal(JournalSettings(max_image_mb=budget_mb))
    for n in range(3):
        await journal.append(record(n, image=picture))
    oldest, middle, newest = await journal.list()
    assert oldest["images"][0]["bytes_dropped"] is True
    assert oldest["images"][0]["sha256"] == hashlib.sha256(picture).hexdigest()  # described before the drop
    assert (oldest["images"][0]["width"], oldest["images"][0]["height"]) == (64, 64)
    assert middle["images"][0]["bytes_dropped"] is False and newest["images"][0]["bytes_dropped"] is False
    assert await journal.blob("req_0", "images", 0) is None
    assert await journal.blob("req_2", "images", 0) == (picture, "image/png")
    assert journal.held_bytes == 2 * len(picture)


async def test_base64_images_are_decoded_only_when_read() -> None:
    picture = png_bytes((8, 8))
    image = Image(b64_json=base64.b64encode(picture).decode())
    journal = MemoryJournal()
    await journal.append(Record({"id": "req_b"}, images=[Blob(image, len(image._b64 or "") * 3 // 4)]))
    assert image._data is None  # appending did not decode
    assert (await journal.get("req_b"))["images"][0]["bytes"] == len(picture)  # type: ignore[index]


async def test_filters_by_session_status_operation_and_limit() -> None:
    journal = MemoryJournal()
    await journal.append(record(1, session="a"))
    await journal.append(record(2, session="b", status=400))
    await journal.append(record(3, session="a", status=502))
    assert [e["id"] for e in await journal.list(session="a")] == ["req_1", "req_3"]
    assert [e["id"] for e in await journal.list(status="error")] == ["req_2", "req_3"]
    assert [e["id"] for e in await journal.list(status=400)] == ["req_2"]
    assert [e["id"] for e in await journal.list(limit=1)] == ["req_3"]
    assert await journal.list(operation="edit") == []
    assert await journal.clear(session="a") == 2
    assert [e["id"] for e in await journal.list()] == ["req_2"]


async def test_an_entry_is_also_found_by_the_upstream_request_id_its_client_saw() -> None:
    journal = MemoryJournal()
    await journal.append(Record({"id": "req_own", "upstream_request_id": "req_up_1"}))
    assert (await journal.get("req_up_1"))["id"] == "req_own"  # type: ignore[index]


async def test_a_slow_subscriber_loses_entries_instead_of_growing_a_queue() -> None:
    journal = MemoryJournal()
    async with journal.subscribe() as fast, journal.subscribe() as slow:
        slow.queue = asyncio.Queue(2)
        for n in range(5):
            await journal.append(record(n))
        assert [await fast.get() for _ in range(5)] == [f"req_{n}" for n in range(5)]
        assert slow.queue.qsize() == 2 and slow.missed == 3
    await journal.append(record(9))  # nobody listens any more: nothing is queued anywhere
    assert fast.queue.qsize() == 0


def test_params_are_every_request_field_but_the_file_bytes() -> None:
    request = ImageRequest(
        operation="edit", prompt="p", images=[InputFile(b"x")], mask=InputFile(b"m"), extra=[("quality_hint", "max")]
    )
    params = params_of(request)
    assert set(params) == set(PARAM_FIELDS)
    assert {"images", "mask", "extra_files"}.isdisjoint(params)
    assert params["prompt"] == "p" and params["extra"] == {"quality_hint": "max"}


async def test_unread_base64_images_and_relayed_bodies_are_dropped_without_decoding() -> None:
    picture = png_bytes((64, 48))
    image = Image(b64_json=base64.b64encode(picture).decode())
    journal = MemoryJournal(JournalSettings(max_image_mb=(len(picture) * 1.5) / 2**20))
    await journal.append(Record({"id": "req_b64"}, images=[Blob(image, len(picture))]))
    body = json.dumps({"data": [{"b64_json": base64.b64encode(picture).decode()}]}).encode()
    relayed = Record({"id": "req_relayed"}, relayed=Blob((body,), len(body), declared_mime="application/json"))
    with mock.patch.object(Record, "_settle_relayed") as parse:
        await journal.append(relayed)
        await journal.append(record(9, image=picture))  # over the budget: the two older ones let their bytes go
        assert image._data is None  # never decoded
        described = (await journal.get("req_b64"))["images"][0]  # type: ignore[index]
        assert described["bytes_dropped"] is True and described["sha256"] is None
        assert (described["mime_type"], described["width"], described["height"]) == ("image/png", 64, 48)
        entry = await journal.get("req_relayed")
    parse.assert_not_called()  # the relayed body was let go unparsed
    assert entry is not None and entry["images_dropped"] is True and entry["images"] == []


async def test_kept_bytes_live_in_files_of_a_private_directory_not_in_the_heap() -> None:
    picture = png_bytes((32, 24))
    upload = png_bytes((16, 16))
    body = json.dumps({"data": [{"b64_json": base64.b64encode(picture).decode()}], "usage": {"total_tokens": 7}})
    journal = MemoryJournal()
    entry = Record(
        {"id": "req_disk"},
        inputs=[Blob(upload, len(upload), part="image")],
        relayed=Blob((body[:10].encode(), body[10:].encode()), len(body), declared_mime="application/json"),
    )
    await journal.append(entry)
    assert isinstance(entry.inputs[0].source, OnDisk) and isinstance(entry.relayed.source, OnDisk)  # type: ignore[union-attr]
    directory = journal.spool.directory
    assert directory is not None and stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert await journal.blob("req_disk", "inputs", 0) == (upload, "image/png")
    # The relayed body, parsed by the first reader: its image goes to a file too, the body's file goes.
    assert await journal.blob("req_disk", "images", 0) == (picture, "image/png")
    assert isinstance(entry.images[0].source, OnDisk) and entry.relayed is None
    assert entry.fields["usage"] == {"total_tokens": 7}
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        Path(b.source.path).name for b in (*entry.inputs, *entry.images) if isinstance(b.source, OnDisk)
    )
    assert journal.held_bytes == len(upload) + len(picture)
    await journal.aclose()
    assert not directory.exists()
    assert await journal.blob("req_disk", "inputs", 0) is None  # closed: the entry stays, its bytes are gone


async def test_evicted_and_cleared_entries_give_their_files_back_for_the_next_bytes() -> None:
    picture = png_bytes((8, 8))
    journal = MemoryJournal(JournalSettings(max_entries=2))
    for n in range(3):
        await journal.append(record(n, image=picture))
    directory = journal.spool.directory
    assert directory is not None
    assert await journal.blob("req_0", "images", 0) is None  # evicted whole
    assert await journal.clear() == 2 and journal.held_bytes == 0
    files = sorted(directory.iterdir())
    assert len(files) == 3  # kept for reuse, not deleted
    other = png_bytes((9, 9))
    await journal.append(record(7, image=other))
    assert sorted(directory.iterdir()) == files  # a file of dropped bytes took the new ones
    assert await journal.blob("req_7", "images", 0) == (other, "image/png")  # cut to their size


async def test_an_upload_dropped_unread_keeps_its_sha256() -> None:
    upload = png_bytes((20, 10))
    journal = MemoryJournal(JournalSettings(max_image_mb=(len(upload) * 1.5) / 2**20))
    await journal.append(Record({"id": "req_up"}, inputs=[Blob(upload, len(upload), part="image")]))
    await journal.append(Record({"id": "req_next"}, inputs=[Blob(upload, len(upload), part="image")]))
    described = (await journal.get("req_up"))["inputs"][0]  # type: ignore[index]
    assert described["bytes_dropped"] is True
    assert described["sha256"] == hashlib.sha256(upload).hexdigest()
    assert (described["width"], described["height"], described["part"]) == (20, 10, "image")


async def test_a_relayed_answer_goes_to_a_file_as_it_streams_and_an_abandoned_one_leaves_none() -> None:
    body = json.dumps({"data": [{"b64_json": base64.b64encode(png_bytes((12, 12))).decode()}]}).encode()
    journal = MemoryJournal()
    sink = journal.body_sink()
    for start in range(0, len(body), 100):
        sink.write(body[start : start + 100])
    directory = journal.spool.directory
    assert directory is not None and [p.read_bytes() for p in directory.iterdir()] == [body]  # on disk already
    blob = sink.blob("application/json")
    assert isinstance(blob.source, OnDisk) and blob.size == len(body) and blob.data() == body
    other = journal.body_sink()
    other.write(b"too big, say")
    other.abandon()
    assert journal.spool.new_path() == str(directory / "1.bin")  # the abandoned file, for the next bytes


def _mounted_tmpfs(path: str) -> bool:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(line.split()[1:3] == [path, "tmpfs"] for line in mounts)


def test_the_spool_goes_to_memory_when_dev_shm_has_room_for_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TMPDIR", raising=False)
    if not _mounted_tmpfs(MEMORY_ROOT):
        pytest.skip(f"{MEMORY_ROOT} is not a tmpfs on this machine")
    assert scratch_dir(1024) == MEMORY_ROOT
    assert scratch_dir(2**60) is None  # no room for the whole budget: the system temp directory
    monkeypatch.setenv("TMPDIR", "/var/tmp")
    assert scratch_dir(1024) is None  # TMPDIR chose the place


def test_the_spool_never_goes_to_a_disk_directory_named_as_its_memory_root(tmp_path: Path) -> None:
    assert scratch_dir(1, root=str(tmp_path)) is None


async def test_a_killed_proxys_spool_directory_is_removed_by_the_next(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = tmp_path / f"allm-journal-{gone.pid}-abc"
    live = tmp_path / "allm-journal-1-def"  # pid 1 is alive (another user's, or ours: kept either way)
    mine = tmp_path / f"allm-journal-{os.getpid()}-ghi"
    for directory in (orphan, live, mine):
        directory.mkdir()
        (directory / "0.bin").write_bytes(b"x")
    remove_orphans(tmp_path)
    assert not orphan.exists() and live.exists() and mine.exists()
