"""Replay cursors and fake-script cursors, kept in the state store so every worker sees one count.

The k-th identical request of a session gets the k-th recording whichever
worker answers it: a cursor is one atomic counter per (cassette, session,
request) in the store. A cassette is named by its file name and a digest of
its content as loaded, so workers that load the same file count together,
and a cassette recorded anew starts fresh cursors instead of stale ones.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from .base import StateStore, generation_key

DEFAULT_CURSOR_TTL = 86400.0


class ReplayCursors:
    """Per-session replay positions of cassettes, in a `StateStore`.

    `rewind` starts every session of a cassette from its first recording, on
    every worker (a generation counter in the store). `local_epoch` lets a
    process rewind on its own where it cannot wait for the store (a sync
    `activate`, in memory).
    """

    def __init__(self, store: StateStore, *, ttl: float = DEFAULT_CURSOR_TTL) -> None:
        self.store = store
        self.ttl = ttl

    async def take(self, cassette: str, session: str, request: int) -> int:
        """The 0-based position this session takes next among the recordings of `request`."""
        name = self._name(cassette, session, request)
        if not self.store.shared:  # in memory a rewind changes the cassette's id instead of a generation
            return await self.store.incr(generation_key(name, 0), ttl=self.ttl) - 1
        return await self.store.incr_in_generation(f"cassette-gen:{cassette}", name, ttl=self.ttl) - 1

    async def put(self, cassette: str, session: str, request: int, position: int) -> None:
        """Set the session's next position (after recording, the next identical request records again)."""
        await self.store.set(await self._key(cassette, session, request), str(position).encode(), ttl=self.ttl)

    async def rewind(self, cassette: str) -> None:
        """Every session of `cassette` starts again from its first recording."""
        await self.store.incr(f"cassette-gen:{cassette}", ttl=self.ttl)

    async def _key(self, cassette: str, session: str, request: int) -> str:
        generation = 0
        if self.store.shared:
            # Only a shared store needs the generation: in memory a rewind changes the cassette's id instead.
            raw = await self.store.get(f"cassette-gen:{cassette}")
            generation = int(raw) if raw is not None else 0
        return generation_key(self._name(cassette, session, request), generation)

    @staticmethod
    def _name(cassette: str, session: str, request: int) -> str:
        return f"cursor:{cassette}:{_digest(session)}:{request}"


def cassette_id(name: str, content: bytes, *, shared: bool) -> str:
    """The id cursors of a cassette are kept under.

    Shared: name and content digest, so every worker holding the same file
    agrees. Memory: a fresh id every load, so a re-load (a rewind) starts over.
    """
    if not shared:
        return uuid.uuid4().hex
    return hashlib.sha256(name.encode() + b"\0" + content).hexdigest()[:24]


class ScriptCursors:
    """Fake-script positions per session in a shared store; None from `take` means "count locally".

    In memory the script's own cursors serve (and `FakeScript.remaining`,
    `reset` keep working); with a shared store every worker walks one list.
    """

    def __init__(
        self, store: StateStore | None, replies: Sequence[object], source: str, *, ttl: float = DEFAULT_CURSOR_TTL
    ) -> None:
        self.store = store if store is not None and store.shared else None
        self.ttl = ttl
        self._script = hashlib.sha256(f"{source}\0{replies!r}".encode()).hexdigest()[:24]

    async def take(self, session: str) -> int | None:
        if self.store is None:
            return None
        return await self.store.incr(f"script:{self._script}:{_digest(session)}", ttl=self.ttl) - 1


def _digest(session: str) -> str:
    """Session names come from clients: hashed, so any text is a safe key part."""
    return hashlib.sha256(session.encode()).hexdigest()[:16]
