"""`RedisJournal`: the journal in the state store's Redis, one for every worker and proxy on it.

Under the state prefix (`allm:` by default), `journal:` holds:

    ids                  a list of entry ids, oldest first, capped at `[state] journal_max`
    e:{id}               the entry: its fields and, per upload/image, size, part, MIME type, a key
    b:{id}:{kind}:{k}    the bytes of upload or image k, as they came (a provider's base64 stays base64)
    b:{id}:raw           a relayed answer, unparsed
    holding, held        the byte keys oldest first with their sizes, and their total: `max_image_mb`
    feed                 the pub/sub channel new entry ids are published on

An append is one Lua script (one round trip): the entry, its bytes, the caps
(the oldest entries go whole past the cap, the oldest bytes go past
`max_image_mb`; the entries stay) and the publish. It runs in a task after the
answer is reported, so a slow or absent Redis never slows a client's request;
an entry that cannot be written is lost, counted in `lost` and logged. Nothing
is decoded or hashed to append: the first reader (any worker) works out each
image's type, size and sha256, and a relayed answer's images, and writes that
back into the entry. Reads that cannot reach Redis raise `StateUnavailableError`
(the routes' 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from ..config import JournalSettings
from ..errors import StateUnavailableError
from ..state.redis_store import RedisState
from ..types import b64decode_lenient
from .record import Blob, ChunkSink, Record
from .store import BlobKind, Feed, select

log = logging.getLogger("allm_proxy.journal")

MAX_PENDING_WRITES = 64  # appends waiting for Redis before new ones are dropped (a Redis that hangs)
FEED_POLL_SECONDS = 1.0  # how long one wait for a published id lasts (the client's socket timeout is longer)
GROUPS = ("inputs", "images")
# (id, the stored entry, whether each of its bodies is still kept: the read script's answer)
Found = tuple[str, dict[str, Any], str]
Entries = list[dict[str, Any]]  # (`list` is a method name in the classes below)


class RedisJournal:
    """The `Journal` interface over `RedisState`; safe from any event loop (one client per loop)."""

    def __init__(self, state: RedisState, settings: JournalSettings | None = None) -> None:
        self.state = state
        self.settings = settings or JournalSettings()
        self.max_bytes = int(self.settings.max_image_mb * 1024 * 1024)
        self.max_entries = state.journal_max
        self.lost = 0  # entries that could not be written (Redis down, or too many waiting)
        # Told the reason of each loss ("unavailable" or "backlog"): the server's metrics count them.
        self.on_lost: list[Callable[[str], None]] = []
        self._writes: set[asyncio.Task[None]] = set()
        self._ids = state.key("journal:ids")
        self._holding = state.key("journal:holding")
        self._held = state.key("journal:held")
        self._entries = state.key("journal:e:")
        self._channel = state.key("journal:feed")

    # -- writing ---------------------------------------------------------------------------------

    def body_sink(self) -> ChunkSink:
        """A relayed answer is kept as its chunks until it is written to Redis with its entry."""
        return ChunkSink()

    async def append(self, record: Record) -> None:
        """Queue `record`'s write (one round trip, in a task): the caller never waits for Redis."""
        if len(self._writes) >= MAX_PENDING_WRITES:
            self._lose(record.id, "too many entries waiting for Redis", reason="backlog")
            return
        record.settle_fields()  # its fields: the request is not around for a later reader
        stored, byte_args = self._stored(record)
        args = [self._entries, record.id, json.dumps(stored), self.max_entries, self.max_bytes, self._channel]
        task = asyncio.get_running_loop().create_task(self._write(record.id, args + byte_args))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, entry_id: str, args: list[Any]) -> None:
        try:
            await self.state.script("writing the journal", _APPEND, [self._ids, self._holding, self._held], args)
        except StateUnavailableError:
            self._lose(entry_id, "Redis did not answer", reason="unavailable")

    def _lose(self, entry_id: str, why: str, *, reason: str) -> None:
        self.lost += 1
        for tell in self.on_lost:
            tell(reason)
        if self.lost == 1 or self.lost % 100 == 0:
            log.warning("journal: entry %s not kept (%s); %d lost so far", entry_id, why, self.lost)

    def _stored(self, record: Record) -> tuple[dict[str, Any], list[Any]]:
        """The entry as Redis keeps it, and the (key, bytes, size) triples of its bytes; no decoding."""
        keep = record.held_bytes <= self.max_bytes
        stored: dict[str, Any] = {"fields": dict(record.fields)}
        byte_args: list[Any] = []
        for kind in GROUPS:
            metas = []
            for index, blob in enumerate(getattr(record, kind)):
                meta: dict[str, Any] = {"size": blob.size}
                if blob.part is not None:
                    meta["part"] = blob.part
                if blob.declared_mime is not None:
                    meta["mime"] = blob.declared_mime
                found = blob.pieces()
                if found is not None and keep:
                    meta["key"] = self._blob_key(record.id, f"{kind}:{index}")
                    meta["b64"] = found[1]
                    byte_args += [meta["key"], b"".join(found[0]), blob.size]
                elif found is not None:
                    meta["dropped"] = True
                metas.append(meta)
            stored[kind] = metas
        relayed = record.relayed
        if relayed is not None:
            found = relayed.pieces()
            if found is not None and keep:
                key = self._blob_key(record.id, "raw")
                stored["relayed"] = {"key": key, "size": relayed.size, "mime": relayed.declared_mime}
                byte_args += [key, b"".join(found[0]), relayed.size]
            else:
                stored["fields"]["images_dropped"] = True
        return stored, byte_args

    def _blob_key(self, entry_id: str, what: str) -> str:
        return self.state.key(f"journal:b:{entry_id}:{what}")

    async def _flush(self) -> None:
        """Wait for this loop's own appends, so a process reads what it just wrote."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._writes if t.get_loop() is loop]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)

    # -- reading ---------------------------------------------------------------------------------

    async def list(
        self,
        *,
        session: str | None = None,
        status: str | int | None = None,
        operation: str | None = None,
        limit: int | None = None,
    ) -> Entries:
        """Entries oldest first, from every worker; `limit` keeps the newest that many."""
        found = await self._read([])
        chosen = select(
            found, lambda f: f[1]["fields"], session=session, status=status, operation=operation, limit=limit
        )
        return await self._entries_of(chosen)

    async def get(self, entry_id: str) -> dict[str, Any] | None:
        """The entry with this id, or whose answer carried this x-request-id (the newest such)."""
        found = await self._find(entry_id)
        return (await self._entries_of([found]))[0] if found is not None else None

    async def blob(self, entry_id: str, kind: BlobKind, index: int) -> tuple[bytes, str] | None:
        """The bytes of upload or image `index` of an entry, with its MIME type; None when gone."""
        found = await self._find(entry_id)
        if found is None:
            return None
        entry = (await self._entries_of([found]))[0]
        described = entry[kind][index] if 0 <= index < len(entry[kind]) else None
        if described is None or described["bytes_dropped"]:
            return None
        stored = found[1]
        meta = stored[kind][index]
        if "raw" in meta:  # an image of a relayed answer: parsed again from the answer
            raw = stored.get("relayed", {}).get("key")
            body = await self._get_bytes(raw) if raw else None
            if body is None:
                return None
            record = Record({}, relayed=Blob(body, len(body), declared_mime=stored["relayed"].get("mime")))
            await asyncio.to_thread(record.settle)
            data = record.images[meta["raw"]].data() if meta["raw"] < len(record.images) else None
        else:
            data = await self._get_bytes(meta["key"]) if "key" in meta else None
            if data is not None and meta.get("b64"):
                data = b64decode_lenient(data.decode("ascii", "replace"))
        if data is None:
            return None
        return data, str(described.get("mime_type") or "application/octet-stream")

    async def clear(self, session: str | None = None) -> int:
        """Forget every entry, or one session's, for every worker; how many went."""
        await self._flush()
        args = [self._entries, session or "", "1" if session is not None else ""]
        gone = await self.state.script("clearing the journal", _CLEAR, [self._ids, self._holding, self._held], args)
        return int(gone)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Feed]:
        """A feed of the entries any worker appends from now on, while the block runs (Redis pub/sub)."""
        feed = Feed(asyncio.get_running_loop())

        async def subscribed(client: Redis) -> PubSub:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self._channel)
            return pubsub

        pubsub = await self.state.call("subscribing to the journal", subscribed)
        reader = asyncio.get_running_loop().create_task(_relay(pubsub, feed))
        try:
            yield feed
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8

    async def aclose(self) -> None:
        """Let this loop's pending appends finish."""
        await self._flush()

    # -- the stored form -------------------------------------------------------------------------

    async def _read(self, ids: Sequence[str]) -> Sequence[Found]:
        """(id, stored entry, presence flags) of `ids`, or of every entry, oldest first."""
        await self._flush()
        flat = await self.state.script("reading the journal", _READ, [self._ids], [self._entries, *ids])
        return [(_text(flat[i]), json.loads(flat[i + 1]), _text(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def _find(self, entry_id: str) -> Found | None:
        found = await self._read([entry_id])
        if found:
            return found[0]
        every = await self._read([])
        newest_first = reversed(every)
        return next((f for f in newest_first if f[1]["fields"].get("upstream_request_id") == entry_id), None)

    async def _entries_of(self, found: Sequence[Found]) -> Entries:
        """The entries as the API answers them; what nobody described yet is described now and written back."""
        wanted = [key for _, stored, flags in found for key in _undescribed_keys(stored, flags)]
        fetched: dict[str, bytes | None] = dict(zip(wanted, await self._mget(wanted), strict=True)) if wanted else {}
        rebuilt = await asyncio.to_thread(lambda: [_described(stored, flags, fetched) for _, stored, flags in found])
        updates = {
            self._entries + entry_id: json.dumps(new)
            for (entry_id, _, _), (_, new) in zip(found, rebuilt, strict=True)
            if new is not None
        }
        if updates:

            async def write_back(client: Redis) -> Any:
                async with client.pipeline(transaction=False) as pipe:
                    for key, value in updates.items():
                        pipe.set(key, value, xx=True)  # never brings back an entry cleared meanwhile
                    return await pipe.execute()

            await self.state.call("describing journal entries", write_back)
        return [entry for entry, _ in rebuilt]

    async def _mget(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        async def run(client: Redis) -> Any:
            return await client.mget(keys)

        return [bytes(v) if v is not None else None for v in await self.state.call("reading the journal", run)]

    async def _get_bytes(self, key: str) -> bytes | None:
        return (await self._mget([key]))[0]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flags(stored: dict[str, Any], flags: str) -> tuple[list[bool], list[bool], bool]:
    """Which bytes are still in Redis: per upload, per image, and the relayed body (the script's flags)."""
    counts = [len(stored.get(kind, [])) for kind in GROUPS]
    present = [c == "1" for c in flags]
    inputs, images = present[: counts[0]], present[counts[0] : counts[0] + counts[1]]
    relayed = bool(present[counts[0] + counts[1] :] and present[-1])
    images = [relayed if "raw" in m else p for m, p in zip(stored.get("images", []), images, strict=True)]
    return inputs, images, relayed


def _undescribed_keys(stored: dict[str, Any], flags: str) -> list[str]:
    inputs, images, relayed = _flags(stored, flags)
    keys = [
        meta["key"]
        for kind, present in zip(GROUPS, (inputs, images), strict=True)
        for meta, here in zip(stored.get(kind, []), present, strict=True)
        if here and "info" not in meta and "key" in meta
    ]
    if relayed and not stored.get("parsed") and "relayed" in stored:
        keys.append(stored["relayed"]["key"])
    return keys


def _described(
    stored: dict[str, Any], flags: str, fetched: dict[str, bytes | None]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The entry as the API answers it, and the stored form to write back when something new was worked out."""
    inputs, images, relayed_here = _flags(stored, flags)
    record = Record(dict(stored["fields"]))
    record.inputs = [_blob(m, here, fetched) for m, here in zip(stored.get("inputs", []), inputs, strict=True)]
    record.images = [_blob(m, here, fetched) for m, here in zip(stored.get("images", []), images, strict=True)]
    relayed = stored.get("relayed")
    if relayed is not None and not stored.get("parsed"):
        body = fetched.get(relayed["key"]) if relayed_here else None
        record.relayed = Blob(body, relayed["size"], declared_mime=relayed.get("mime"))
    changed = any(b.info is None for b in (*record.inputs, *record.images)) or record.relayed is not None
    parsed = record.relayed is not None
    entry = record.to_dict()
    if not changed:
        return entry, None
    new = dict(stored, fields=record.fields)
    if parsed:
        new["parsed"] = True
        new["images"] = [{"raw": i, "size": b.size, "info": b.info} for i, b in enumerate(record.images)]
    else:
        new["images"] = [dict(m, info=b.info) for m, b in zip(stored.get("images", []), record.images, strict=True)]
    new["inputs"] = [dict(m, info=b.info) for m, b in zip(stored.get("inputs", []), record.inputs, strict=True)]
    return entry, new


def _blob(meta: dict[str, Any], here: bool, fetched: dict[str, bytes | None]) -> Blob:
    """A blob of a stored entry: its bytes when fetched to be described, else only what is known."""
    data = fetched.get(meta["key"]) if here and "key" in meta else None
    if data is not None and meta.get("b64"):
        data = b64decode_lenient(data.decode("ascii", "replace"))
    gone = bool(meta.get("dropped")) or (("key" in meta or "raw" in meta) and not here)
    part, mime, info = meta.get("part"), meta.get("mime"), meta.get("info")
    return Blob(data, meta["size"], part=part, declared_mime=mime, info=info, dropped=gone)


async def _relay(pubsub: PubSub, feed: Feed) -> None:
    """Published ids into `feed` until the subscription breaks (then the feed ends)."""
    try:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=FEED_POLL_SECONDS)
            if message is not None and message.get("type") == "message":
                feed.offer(_text(message["data"]))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # Redis went away: the SSE feed ends, and the browser reconnects
        log.warning("journal: the live feed from Redis broke (%s)", type(exc).__name__)
        feed.end()


# KEYS: ids, holding, held. ARGV: entry prefix, id, entry JSON, max entries, max bytes, channel, then
# (key, bytes, size) per kept body. The holding list's items are "owner size key", oldest first.
_APPEND = """
local prefix, id = ARGV[1], ARGV[2]
local max_entries, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('SET', prefix .. id, ARGV[3])
redis.call('RPUSH', KEYS[1], id)
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
for i = 7, #ARGV, 3 do
  redis.call('SET', ARGV[i], ARGV[i + 1])
  redis.call('RPUSH', KEYS[2], id .. ' ' .. ARGV[i + 2] .. ' ' .. ARGV[i])
  total = total + tonumber(ARGV[i + 2])
end
while redis.call('LLEN', KEYS[1]) > max_entries do
  redis.call('DEL', prefix .. redis.call('LPOP', KEYS[1]))
end
while true do
  local item = redis.call('LINDEX', KEYS[2], 0)
  if not item then break end
  local owner, size, key = string.match(item, '^(%S+) (%d+) (.+)$')
  if total <= max_bytes and redis.call('EXISTS', prefix .. owner) == 1 then break end
  redis.call('LPOP', KEYS[2])
  if redis.call('DEL', key) == 1 then total = total - tonumber(size) end
end
redis.call('SET', KEYS[3], total)
redis.call('PUBLISH', ARGV[6], id)
return total
"""

# KEYS: ids. ARGV: entry prefix, then the ids to read (none: every entry). Returns id, entry JSON and
# one '1'/'0' per upload, image and relayed body: whether its bytes are still kept.
_READ = """
local prefix = ARGV[1]
local ids = {}
if #ARGV > 1 then
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('LRANGE', KEYS[1], 0, -1)
end
local out = {}
for _, id in ipairs(ids) do
  local raw = redis.call('GET', prefix .. id)
  if raw then
    local entry = cjson.decode(raw)
    local flags = {}
    for _, group in ipairs({'inputs', 'images'}) do
      for _, meta in ipairs(entry[group] or {}) do
        flags[#flags + 1] = (meta.key and redis.call('EXISTS', meta.key) == 1) and '1' or '0'
      end
    end
    if entry.relayed then
      flags[#flags + 1] = redis.call('EXISTS', entry.relayed.key) == 1 and '1' or '0'
    end
    out[#out + 1] = id
    out[#out + 1] = raw
    out[#out + 1] = table.concat(flags)
  end
end
return out
"""

# KEYS: ids, holding, held. ARGV: entry prefix, session, '1' when only that session goes.
# Returns how many entries went.
_CLEAR = """
local prefix, session, one_session = ARGV[1], ARGV[2], ARGV[3] == '1'
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
local keep, gone = {}, 0
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local raw = redis.call('GET', prefix .. id)
  if raw then
    local entry = cjson.decode(raw)
    if one_session and entry.fields.session ~= session then
      keep[#keep + 1] = id
    else
      local bodies = {}
      for _, group in ipairs({'inputs', 'images'}) do
        for _, meta in ipairs(entry[group] or {}) do
          if meta.key then bodies[#bodies + 1] = meta end
        end
      end
      if entry.relayed then bodies[#bodies + 1] = entry.relayed end
      for _, body in ipairs(bodies) do
        if redis.call('DEL', body.key) == 1 then total = total - tonumber(body.size) end
      end
      redis.call('DEL', prefix .. id)
      gone = gone + 1
    end
  end
end
redis.call('DEL', KEYS[1])
for i = 1, #keep, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
end
if not one_session then
  redis.call('DEL', KEYS[2])
  total = 0
end
redis.call('SET', KEYS[3], total)
return gone
"""
