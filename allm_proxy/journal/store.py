"""The journal store: every answered image request, bounded in count and in image bytes.

    journal = MemoryJournal(JournalSettings(max_entries=100))
    journal.append(record)
    journal.list(session="checkout", status="error")    # oldest first
    journal.get("req_...")                              # one entry, or None
    journal.blob("req_...", "images", 0)                # (bytes, MIME type), or None
    journal.clear(session="checkout")
    async with journal.subscribe() as feed:             # ids of new entries as they are appended
        entry = journal.get(await feed.get())

`Journal` is the interface the server, the inspector and the pytest plugin
use; `MemoryJournal` keeps it in this process. A Redis-backed store can take
its place behind the same methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..config import JournalSettings
from .record import Record

BlobKind = str  # "inputs" or "images"
FEED_DEPTH = 256  # entries a live subscriber may fall behind before it loses some


class Journal(Protocol):
    """What every journal store offers."""

    settings: JournalSettings

    def append(self, record: Record) -> None: ...

    def list(
        self,
        *,
        session: str | None = None,
        status: str | int | None = None,
        operation: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...

    def get(self, entry_id: str) -> dict[str, Any] | None: ...

    def blob(self, entry_id: str, kind: BlobKind, index: int) -> tuple[bytes, str] | None: ...

    def clear(self, session: str | None = None) -> int: ...

    def subscribe(self) -> contextlib.AbstractAsyncContextManager[Feed]: ...


class Feed:
    """A live subscriber's queue of the ids of new entries. Bounded: a slow reader loses entries
    (counted in `missed`) instead of making the journal hold them. Ids, not entries, so that
    appending never describes (hashes) images: the reader does, off its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = FEED_DEPTH) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[str] = asyncio.Queue(depth)
        self.missed = 0

    def offer(self, entry_id: str) -> None:
        """Queue `entry_id`; called on the feed's own loop."""
        try:
            self.queue.put_nowait(entry_id)
        except asyncio.QueueFull:
            self.missed += 1

    async def get(self) -> str:
        return await self.queue.get()


def matches(entry: dict[str, Any], *, session: str | None, status: str | int | None, operation: str | None) -> bool:
    """The list filters: exact session and operation; status a number, or ``error`` for any 4xx/5xx."""
    if session is not None and entry.get("session") != session:
        return False
    if operation is not None and entry.get("operation") != operation:
        return False
    if status is not None:
        code = entry.get("status") or 0
        if str(status) == "error":
            return code >= 400
        return str(code) == str(status)
    return True


class MemoryJournal:
    """The journal in this process's memory; safe to use from several threads and event loops."""

    def __init__(self, settings: JournalSettings | None = None) -> None:
        self.settings = settings or JournalSettings()
        self.max_bytes = int(self.settings.max_image_mb * 1024 * 1024)
        self._records: OrderedDict[str, Record] = OrderedDict()
        # The records that may still hold bytes, oldest first: shedding starts where it stopped,
        # instead of walking every entry whose bytes are long gone on every append.
        self._holding: deque[Record] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._feeds: list[Feed] = []

    def __len__(self) -> int:
        return len(self._records)

    @property
    def held_bytes(self) -> int:
        """Image bytes kept right now."""
        return self._bytes

    def append(self, record: Record) -> None:
        """Keep `record` as the newest entry, dropping the oldest past the bounds; tell live feeds."""
        with self._lock:
            self._records[record.id] = record
            self._records.move_to_end(record.id)
            self._bytes += record.held_bytes
            if record.held_bytes:
                self._holding.append(record)
            while len(self._records) > self.settings.max_entries:
                _, gone = self._records.popitem(last=False)
                self._bytes -= gone.held_bytes
            while self._holding and self._records.get(self._holding[0].id) is not self._holding[0]:
                self._holding.popleft()  # evicted whole: nothing of it is held any more
            self._shed_bytes()
            feeds = list(self._feeds)
        for feed in feeds:
            _deliver(feed, record.id)

    def _shed_bytes(self) -> None:
        """Drop image bytes, oldest entries first, until within `max_image_mb` (the entries stay)."""
        while self._bytes > self.max_bytes and self._holding:
            record = self._holding[0]
            if self._records.get(record.id) is not record:  # evicted whole already (max_entries)
                self._holding.popleft()
                continue
            if record.pending_bytes:
                # A relayed body nobody read goes unparsed: parsing megabytes to drop them is what
                # made the journal cost half of a large pass-through's CPU.
                self._bytes -= record.drop_pending()
                continue
            for blob in (*record.inputs, *record.images):
                self._bytes -= blob.drop()
                if self._bytes <= self.max_bytes:
                    return
            self._holding.popleft()

    def list(
        self,
        *,
        session: str | None = None,
        status: str | int | None = None,
        operation: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Entries oldest first; `limit` keeps the newest that many."""
        with self._lock:
            records = list(self._records.values())
        entries = [self._read(r) for r in records]
        chosen = [e for e in entries if matches(e, session=session, status=status, operation=operation)]
        return chosen[-limit:] if limit is not None and limit >= 0 else chosen

    def get(self, entry_id: str) -> dict[str, Any] | None:
        """The entry with this id, or whose answer carried this x-request-id (the newest such)."""
        record = self._find(entry_id)
        return self._read(record) if record is not None else None

    def blob(self, entry_id: str, kind: BlobKind, index: int) -> tuple[bytes, str] | None:
        """The bytes of upload or image `index` of an entry, with its MIME type; None when gone."""
        record = self._find(entry_id)
        if record is None:
            return None
        with self._lock:
            before = record.held_bytes
            record.settle()
            blobs = record.inputs if kind == "inputs" else record.images
            found = 0 <= index < len(blobs)
            if found:
                data, info = blobs[index].data(), blobs[index].describe()
            self._bytes += record.held_bytes - before
        if not found or data is None:
            return None
        return data, str(info.get("mime_type") or "application/octet-stream")

    def clear(self, session: str | None = None) -> int:
        """Forget every entry, or one session's; how many went."""
        with self._lock:
            gone = [k for k, r in self._records.items() if session is None or r.fields.get("session") == session]
            for key in gone:
                self._bytes -= self._records.pop(key).held_bytes
            self._holding = deque(r for r in self._holding if self._records.get(r.id) is r)
        return len(gone)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Feed]:
        """A feed of the entries appended from now on, while the block runs."""
        feed = Feed(asyncio.get_running_loop())
        with self._lock:
            self._feeds.append(feed)
        try:
            yield feed
        finally:
            with self._lock:
                self._feeds.remove(feed)

    def _find(self, entry_id: str) -> Record | None:
        with self._lock:
            record = self._records.get(entry_id)
            if record is None:
                record = next(
                    (r for r in reversed(self._records.values()) if r.fields.get("upstream_request_id") == entry_id),
                    None,
                )
            return record

    def _read(self, record: Record) -> dict[str, Any]:
        # Describing images hashes them: done once per blob, under the lock so a drop cannot race it.
        with self._lock:
            before = record.held_bytes
            entry = record.to_dict()
            self._bytes += record.held_bytes - before
            return entry


def _deliver(feed: Feed, entry_id: str) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is feed.loop:
        feed.offer(entry_id)
    elif not feed.loop.is_closed():
        feed.loop.call_soon_threadsafe(feed.offer, entry_id)
