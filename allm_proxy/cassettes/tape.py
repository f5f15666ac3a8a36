"""One cassette in memory: its interactions, a hash index over them, replay cursors per session.

vcrpy's own `Cassette` keeps one play count for everybody and finds a
request by running every matcher against every recording; a Tape keeps the
same (vcrpy `Request`, response dict) pairs but looks requests up by their
normal form (`matchers.request_key`) in a dict, and gives each session
(header ``X-ALLM-Session``) its own cursor, so identical requests replay in
recorded order per session and parallel clients never steal each other's
answers.

Record modes mean what they mean in vcrpy: ``none`` replays only; ``once``
records a cassette that does not exist yet and replays one that does;
``new_episodes`` replays what matches and records the rest; ``all``
records everything, replacing the recordings it matches; ``off`` passes
through.

Thread- and asyncio-safe: state changes happen under a lock and never await;
file writes happen in a worker thread, one at a time per file, always of the
newest state, so a burst of recordings coalesces into few writes.

Several processes may record into one file (workers on one host): each
write holds an `flock` on a sidecar lock file and first merges what other
processes wrote since (read-merge-write), so no recording is lost and the
file order is the order of the answers. Replay cursors live in the state
store (`state.ReplayCursors`), shared by every worker when it is Redis.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcr.request import Request

from .. import errors
from ..config import RecordMode
from ..state.cursors import ReplayCursors, cassette_id
from ..state.memory import MemoryState
from .filters import SecretFilter
from .formats import format_for
from .matchers import Matcher, nearest, request_key
from .persister import file_lock, is_empty, remove_stale_temps, write_atomic
from .summary import summarize_request

Key = tuple[Hashable, ...]


@dataclass
class Interaction:
    request: Request
    response: dict[str, Any]
    key: Key
    loaded: bool = False
    chunk: str | None = None  # serialized once, then reused by every save
    saved: bool = False  # in the file already (loaded, or written by us)


@dataclass
class TapeStats:
    replayed: int = 0
    recorded: int = 0
    writes: int = 0
    # Matcher scans happen only to explain a miss; a replay is a dict lookup.
    scans: int = 0


@dataclass
class Tape:
    path: Path
    record_mode: RecordMode
    matchers: Sequence[Matcher]
    filter: SecretFilter
    allow_repeats: bool = False
    existed: bool = False
    stats: TapeStats = field(default_factory=TapeStats)
    # replay cursors in the state store (process memory unless the engine shares Redis)
    cursors: ReplayCursors = field(default_factory=lambda: ReplayCursors(MemoryState()))

    def __post_init__(self) -> None:
        self.record_mode = RecordMode(self.record_mode)  # a plain string is welcome too
        self.format = format_for(self.path)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._interactions: list[Interaction] = []
        self._index: dict[Key, list[int]] = {}
        self.ident = cassette_id(self.path.name, b"", shared=False)
        self._metadata: dict[str, Any] = {}
        self._version = 0
        self._saved_version = 0
        self._disk_state: tuple[int, int] | None = None

    # -- loading ---------------------------------------------------------------------

    def load(self) -> None:
        """Read the file (if any); a fresh start for every session. Blocking: call it off the event loop."""
        # The file's state before it is read: another process writing it meanwhile then shows as a change
        # at our next save, which merges its recordings (taken after the read, it would hide them).
        disk_state = _stat(self.path)
        existed = not is_empty(self.path)
        remove_stale_temps(self.path)
        interactions, metadata = self._read_file() if existed else ([], {})
        shared = self.cursors.store.shared
        content = self.path.read_bytes() if shared and existed else b""
        with self._lock:
            self._interactions = interactions
            self._metadata = metadata
            self._rebuild_index()
            self.ident = cassette_id(self.path.name, content, shared=shared)
            self.existed = existed
            self._version = self._saved_version = 0
            self._disk_state = disk_state

    def _read_file(self) -> tuple[list[Interaction], dict[str, Any]]:
        try:
            requests, responses, metadata = self.format.load(self.path)
        except (ValueError, KeyError, TypeError, OSError) as exc:  # a format error, or not a cassette
            raise errors.InvalidRequestError(
                f"The cassette {self.path} cannot be read ({exc}). Repair it, or delete it to record it again.",
                code="cassette_unreadable",
            ) from None
        interactions = []
        for request, response in zip(requests, responses, strict=True):
            # Cassettes recorded elsewhere (plain vcrpy) may still hold secrets:
            # filter them as recordings are filtered, so they also match alike.
            clean, secrets = self.filter.request(request)
            kept = self.filter.response(response, secrets)
            interactions.append(Interaction(clean, kept, request_key(clean, self.matchers), loaded=True, saved=True))
        return interactions, metadata

    def begin(self, record_mode: RecordMode) -> None:
        """A fresh use, as `vcr.use_cassette`: cursors rewound, the file re-read if it changed.

        With a shared store the rewind of every worker's cursors is `await tape.rewind()`.
        """
        if _stat(self.path) != self._disk_state:  # deleted or replaced since we read or wrote it
            self.load()
        with self._lock:
            self._interactions = self._persisted()
            for interaction in self._interactions:
                interaction.loaded = True
            self._rebuild_index()
            if not self.cursors.store.shared:
                self.ident = cassette_id(self.path.name, b"", shared=False)
            self.existed = not is_empty(self.path)
            self.record_mode = record_mode

    def _rebuild_index(self) -> None:
        self._index = {}
        for position, interaction in enumerate(self._interactions):
            self._index.setdefault(interaction.key, []).append(position)

    # -- replay and record -------------------------------------------------------------

    def key(self, request: Request) -> Key:
        return request_key(request, self.matchers)

    async def rewind(self) -> None:
        """Every session starts again from the first recording, on every worker sharing the store."""
        await self.cursors.rewind(self.ident)

    async def next_response(self, key: Key, session: str) -> Interaction | None:
        """The recorded answer this session gets next for `key`, or None (record it, or miss).

        The position comes from the state store, so it may raise `StateUnavailableError`:
        a store that does not answer is a 503, never a replay of the wrong recording. A key
        with one recording and repeats allowed has one answer whatever the position: it
        needs no store.
        """
        with self._lock:
            if self.record_mode in (RecordMode.ALL, RecordMode.OFF) or not (self.existed or self.allow_repeats):
                return None
            hits = list(self._index.get(key, ()))
            ident = self.ident
        if not hits:
            return None
        if self._alike(hits):
            # Every position gives this one recording: no cursor to count, so no state-store round trip
            # (which was 15-20% of a replayed small answer's cost with Redis).
            position = 0
        else:
            position = await self.cursors.take(ident, session, hits[0])
        if position >= len(hits):
            if not self.allow_repeats:
                return None
            position = len(hits) - 1
        with self._lock:
            self.stats.replayed += 1
            return self._interactions[hits[position]]

    def answers_alike(self, key: Key) -> bool:
        """Whether every request for `key` gets the same recording, whatever the session or position:
        one recording, repeats allowed (the server's answer cache keeps such answers)."""
        with self._lock:
            return self._alike(self._index.get(key, ()))

    def _alike(self, hits: Sequence[int]) -> bool:
        return len(hits) == 1 and self.allow_repeats

    @property
    def may_record(self) -> bool:
        mode = self.record_mode
        return mode in (RecordMode.NEW_EPISODES, RecordMode.ALL) or (mode == RecordMode.ONCE and not self.existed)

    async def record(self, interaction: Interaction, session: str) -> None:
        """Keep a new interaction and write the cassette before the caller sees the answer."""
        with self._lock:
            self._interactions.append(interaction)
            hits = self._index.setdefault(interaction.key, [])
            hits.append(len(self._interactions) - 1)
            first, count, ident = hits[0], len(hits), self.ident
            self._version += 1
            self.stats.recorded += 1
        await asyncio.to_thread(self.save)
        # This session has had this answer: its next identical request records again.
        await self.cursors.put(ident, session, first, count)

    # -- saving ----------------------------------------------------------------------------

    def save(self) -> None:
        """Write the newest state if it is not on disk yet. Blocking; safe from any thread and process."""
        with self._write_lock:
            with self._lock:
                if self._version == self._saved_version:
                    return
            with file_lock(self.path):
                if _stat(self.path) != self._disk_state and not is_empty(self.path):
                    self._merge_from_disk()
                with self._lock:
                    version = self._version
                    interactions = self._persisted()
                    metadata = dict(self._metadata)
                chunks = []
                for interaction in interactions:
                    if interaction.chunk is None:
                        interaction.chunk = self.format.dump_interaction(interaction.request, interaction.response)
                    chunks.append(interaction.chunk)
                write_atomic(self.path, self.format.document(chunks, metadata))
                with self._lock:
                    for interaction in interactions:
                        interaction.saved = True
                    self._saved_version = version
                    self._disk_state = _stat(self.path)
                    self.stats.writes += 1

    def _merge_from_disk(self) -> None:
        """Another process wrote the file since we read it: keep its interactions, then add ours not on disk.

        Called under the file lock. What is on disk comes first, in its order; our unsaved
        recordings follow in the order we answered them.
        """
        on_disk, metadata = self._read_file()
        with self._lock:
            unsaved = [i for i in self._interactions if not i.saved]
            self._interactions = on_disk + unsaved
            self._metadata = metadata or self._metadata
            self._rebuild_index()
            self.existed = True

    def _persisted(self) -> list[Interaction]:
        """What the file holds: in `all` mode, new recordings replace the loaded ones they match."""
        if self.record_mode != RecordMode.ALL:
            return list(self._interactions)
        fresh = {i.key for i in self._interactions if not i.loaded}
        return [i for i in self._interactions if not (i.loaded and i.key in fresh)]

    # -- misses ------------------------------------------------------------------------------

    def miss(self, request: Request, key: Key, session: str) -> errors.CassetteMissError:
        """The error for a request this cassette cannot answer, saying why and what is nearest."""
        with self._lock:
            hits = list(self._index.get(key, ()))
            recorded = [i.request for i in self._interactions]
            self.stats.scans += 1
        summary = summarize_request(request)
        what = summary.line()
        details: dict[str, Any] = {
            "cassette": str(self.path),
            "session": session,
            "record_mode": self.record_mode,
            "request": summary.as_data(),
            "replayed_all": bool(hits),
            "nearest": None,
            "differs": [],
        }
        where = (
            f"cassette {self.path} (record mode {self.record_mode}, {len(recorded)} recorded "
            f"interaction{'s' if len(recorded) != 1 else ''}, session {session!r})"
        )
        if hits:
            reason = (
                f"Cassette miss: {what} was recorded {len(hits)} time(s) in {where}, and session "
                f"{session!r} has already replayed every one. Identical requests replay in recorded "
                "order, once each: record the extra call (record mode new_episodes), use a new "
                "X-ALLM-Session per run, or set allow_playback_repeats."
            )
        else:
            reason = f"Cassette miss: {what} is not in {where}."
            best = nearest(request, recorded, self.matchers)
            if best is not None and best[1]:
                index, _, failed = best
                differs = "; ".join(f"{name} ({why})" if why else name for name, why in failed)
                closest_summary = summarize_request(recorded[index])
                closest = closest_summary.line()
                details["nearest"] = {"index": index, **closest_summary.as_data()}
                details["differs"] = [{"matcher": name, "why": why} for name, why in failed]
                reason += f" Nearest recorded request: #{index} {closest}; matchers that differ: {differs}."
        if not self.may_record:
            reason += _how_to_record(self.record_mode)
        error = errors.CassetteMissError(reason)
        error.details = details
        return error

    def __len__(self) -> int:
        return len(self._interactions)


def _how_to_record(mode: RecordMode) -> str:
    if mode == RecordMode.ONCE:
        return (
            " Record mode 'once' does not add to an existing cassette: delete it to record it again, "
            "or use record mode new_episodes."
        )
    return " Nothing is sent upstream in this record mode; use new_episodes to record new requests."


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)
