"""The journal store: every answered image request, bounded in count and in image bytes.

    journal = open_journal(JournalSettings(max_entries=100), state)   # memory, or Redis with a state URL (`opening`)
    await journal.append(record)
    await journal.list(session="checkout", status="error")    # oldest first
    await journal.get("req_...")                              # one entry, or None
    await journal.blob("req_...", "images", 0)                # (bytes, MIME type), or None
    await journal.clear(session="checkout")
    async with journal.subscribe() as feed:                   # ids of new entries as they are appended
        entry = await journal.get(await feed.get())

`Journal` is the interface the server, the inspector and the pytest plugin
use; `MemoryJournal` keeps it in this process (the image bytes in files of a
private directory, see `spool`), `RedisJournal` (`redis_journal`) in the
state store's Redis, shared by every worker and proxy on it. The methods are
async: Redis needs it, and the memory store does its hashing in a thread.
From sync code, `engine.run_sync(engine.journal.list())`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from ..config import JournalSettings
from .record import Blob, Record
from .spool import Spool

T = TypeVar("T")
BlobKind = str  # "inputs" or "images"
Entries = list[dict[str, Any]]  # (`list` is a method name in the classes below)
FEED_DEPTH = 256  # entries a live subscriber may fall behind before it loses some


class BodySink(Protocol):
    """Where a relayed answer goes while it streams to the client (`Journal.body_sink`)."""

    size: int

    def write(self, chunk: bytes) -> None: ...

    def blob(self, content_type: str) -> Blob:
        """The body, as the relayed blob of its entry."""
        ...

    def abandon(self) -> None:
        """Too big to keep, or the request went wrong: forget what was written."""
        ...


class ResidentBody:
    """A relayed answer already whole in memory (the answer cache's): its entry shares the bytes."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.size = len(body)

    def write(self, chunk: bytes) -> None:
        raise TypeError("a resident body is whole already")

    def blob(self, content_type: str) -> Blob:
        return Blob(self.body, self.size, declared_mime=content_type)

    def abandon(self) -> None:
        self.size = 0


class Journal(Protocol):
    """What every journal store offers."""

    settings: JournalSettings
    # Told the reason ("unavailable", "backlog") of every entry the store could not keep.
    on_lost: list[Callable[[str], None]]

    def body_sink(self) -> BodySink: ...

    async def append(self, record: Record) -> None: ...

    async def list(
        self,
        *,
        session: str | None = None,
        status: str | int | None = None,
        operation: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...

    async def get(self, entry_id: str) -> dict[str, Any] | None: ...

    async def blob(self, entry_id: str, kind: BlobKind, index: int) -> tuple[bytes, str] | None: ...

    async def clear(self, session: str | None = None) -> int: ...

    def subscribe(self) -> contextlib.AbstractAsyncContextManager[Feed]: ...

    async def aclose(self) -> None:
        """Finish this event loop's pending work; a memory store also removes its files."""


class Feed:
    """A live subscriber's queue of the ids of new entries. Bounded: a slow reader loses entries
    (counted in `missed`) instead of making the journal hold them. Ids, not entries, so that
    appending never describes (hashes) images: the reader does, off its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = FEED_DEPTH) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(depth)
        self.missed = 0
        self.ended = False

    def offer(self, entry_id: str) -> None:
        """Queue `entry_id`; called on the feed's own loop."""
        try:
            self.queue.put_nowait(entry_id)
        except asyncio.QueueFull:
            self.missed += 1

    def end(self) -> None:
        """No more entries will come (the store's feed broke): `get` answers None once drained."""
        self.ended = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    async def get(self) -> str | None:
        """The next new entry's id; None when the feed has ended."""
        if self.ended and self.queue.empty():
            return None
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


def select(
    items: Sequence[T],
    fields_of: Callable[[T], dict[str, Any]],
    *,
    session: str | None,
    status: str | int | None,
    operation: str | None,
    limit: int | None,
) -> list[T]:
    """The items whose fields pass the list filters, oldest first; `limit` keeps the newest that many."""
    chosen = [i for i in items if matches(fields_of(i), session=session, status=status, operation=operation)]
    if limit is None or limit < 0:
        return chosen
    return chosen[len(chosen) - limit :] if limit else []


class MemoryJournal:
    """The journal of this process; safe to use from several threads and event loops.

    The entries are in memory; the image bytes they keep are in files of a private directory
    (`Spool`), so `max_image_mb` of images costs disk, not heap.
    """

    def __init__(self, settings: JournalSettings | None = None) -> None:
        self.settings = settings or JournalSettings()
        self.max_bytes = int(self.settings.max_image_mb * 1024 * 1024)
        self.spool = Spool(self.max_bytes)
        self._records: OrderedDict[str, Record] = OrderedDict()
        # The records that may still hold bytes, oldest first: shedding starts where it stopped,
        # instead of walking every entry whose bytes are long gone on every append.
        self._holding: deque[Record] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._feeds: list[Feed] = []
        # Never told: here an entry goes only when the bounds push it out.
        self.on_lost: list[Callable[[str], None]] = []

    def __len__(self) -> int:
        return len(self._records)

    @property
    def held_bytes(self) -> int:
        """Image bytes kept right now."""
        return self._bytes

    def body_sink(self) -> BodySink:
        """A relayed answer goes straight to a file as it streams (no request holds it in memory)."""
        return self.spool.sink()

    async def append(self, record: Record) -> None:
        """Keep `record` as the newest entry, dropping the oldest past the bounds; tell live feeds."""
        held = record.held_bytes  # a spill moves bytes to a file; it does not change what is held
        if not record.resident and held <= self.max_bytes:  # past the budget they'd go at once
            for blob in record.blobs():
                await self.spool.spill(blob, relayed=record.relayed)
        entry_id = record.id
        with self._lock:
            self._records[entry_id] = record
            self._records.move_to_end(entry_id)
            self._bytes += held
            if held:
                self._holding.append(record)
            while len(self._records) > self.settings.max_entries:
                _, gone = self._records.popitem(last=False)
                self._bytes -= gone.held_bytes
                gone.discard()
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

    async def list(
        self,
        *,
        session: str | None = None,
        status: str | int | None = None,
        operation: str | None = None,
        limit: int | None = None,
    ) -> Entries:
        """Entries oldest first; `limit` keeps the newest that many."""
        return await asyncio.to_thread(self._list, session, status, operation, limit)

    async def get(self, entry_id: str) -> dict[str, Any] | None:
        """The entry with this id, or whose answer carried this x-request-id (the newest such)."""
        return await asyncio.to_thread(self._get, entry_id)

    async def blob(self, entry_id: str, kind: BlobKind, index: int) -> tuple[bytes, str] | None:
        """The bytes of upload or image `index` of an entry, with its MIME type; None when gone."""
        return await asyncio.to_thread(self._blob, entry_id, kind, index)

    async def clear(self, session: str | None = None) -> int:
        """Forget every entry, or one session's; how many went."""
        with self._lock:
            gone = [
                k for k, r in self._records.items() if session is None or _settled(r).fields.get("session") == session
            ]
            for key in gone:
                record = self._records.pop(key)
                self._bytes -= record.held_bytes
                record.discard()  # under the lock: its files may be reused at once (see Spool)
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

    async def aclose(self) -> None:
        """Remove the files of the bytes kept; the entries stay, described, their bytes gone."""
        self.spool.close()

    # -- in a thread -----------------------------------------------------------------------

    def _list(self, session: str | None, status: str | int | None, operation: str | None, limit: int | None) -> Entries:
        with self._lock:
            records = list(self._records.values())
        entries = [self._read(r) for r in records]
        return select(entries, dict, session=session, status=status, operation=operation, limit=limit)

    def _get(self, entry_id: str) -> dict[str, Any] | None:
        record = self._find(entry_id)
        return self._read(record) if record is not None else None

    def _blob(self, entry_id: str, kind: BlobKind, index: int) -> tuple[bytes, str] | None:
        record = self._find(entry_id)
        if record is None:
            return None
        with self._lock:
            self._settle(record)
            blobs = record.inputs if kind == "inputs" else record.images
            found = 0 <= index < len(blobs)
            if found:
                data, info = blobs[index].data(), blobs[index].describe()
        if not found or data is None:
            return None
        return data, str(info.get("mime_type") or "application/octet-stream")

    def _find(self, entry_id: str) -> Record | None:
        with self._lock:
            record = self._records.get(entry_id)
            if record is None:
                record = next(
                    (
                        r
                        for r in reversed(self._records.values())
                        if _settled(r).fields.get("upstream_request_id") == entry_id
                    ),
                    None,
                )
            return record

    def _read(self, record: Record) -> dict[str, Any]:
        # Describing images hashes them: done once per blob, under the lock so a drop cannot race it.
        with self._lock:
            self._settle(record)
            return record.to_dict()

    def _settle(self, record: Record) -> None:
        """Parse a relayed body (under the lock); the images it held go to files like any other."""
        before = record.held_bytes
        relayed = record.relayed is not None
        record.settle()
        if self._records.get(record.id) is not record:
            return  # evicted meanwhile: its bytes are no longer counted
        if relayed:
            for blob in record.images:
                self.spool.spill_now(blob)
        self._bytes += record.held_bytes - before


def _settled(record: Record) -> Record:
    """`record` with its fields written (the cheap part of settling: no image is touched)."""
    record.settle_fields()
    return record


def _deliver(feed: Feed, entry_id: str) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is feed.loop:
        feed.offer(entry_id)
    elif not feed.loop.is_closed():
        feed.loop.call_soon_threadsafe(feed.offer, entry_id)
