"""Images the proxy hosts for clients that asked for `response_format=url`, kept in the state store.

Ids are 256-bit random tokens, so URLs cannot be guessed; entries expire
after `ttl` seconds (OpenAI's URLs last 60 minutes). In process memory the
store is bounded in bytes, dropping the oldest first; in Redis the entry is
one key with a Redis TTL, so a URL one worker issued is served by every
worker and replica on the same Redis.

    files = HostedFiles(MemoryState(), ttl=3600)
    file_id = await files.put(png, "image/png")
    hosted = await files.get(file_id)          # HostedFile(data, mime_type, expires_at) or None
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from .state.base import StateStore
from .state.memory import MemoryState


@dataclass(frozen=True)
class HostedFile:
    data: bytes
    mime_type: str
    expires_at: float  # wall-clock seconds (time.time()): workers on several hosts agree on it


class HostedFiles:
    """Hosted images in a `StateStore` (process memory unless given one)."""

    def __init__(
        self, state: StateStore | None = None, *, ttl: float = 3600.0, max_bytes: int = 512 * 1024 * 1024
    ) -> None:
        self.ttl = ttl
        self.state = state if state is not None else MemoryState(max_bytes=max_bytes)
        self.stored = 0  # images hosted by this process: an answer that hosted one is an answer of its own

    async def put(self, data: bytes, mime_type: str) -> str:
        """Store the bytes; return the id to put in `/v1/images/files/{id}`."""
        file_id = "img_" + secrets.token_urlsafe(32)
        head = json.dumps({"mime": mime_type, "expires_at": time.time() + self.ttl}).encode()
        await self.state.set(f"file:{file_id}", head + b"\n" + data, ttl=self.ttl)
        self.stored += 1
        return file_id

    async def get(self, file_id: str) -> HostedFile | None:
        """The hosted image, or None when unknown or expired."""
        raw = await self.state.get(f"file:{file_id}")
        if raw is None:
            return None
        head, _, data = raw.partition(b"\n")
        meta = json.loads(head)
        if float(meta["expires_at"]) <= time.time():
            return None
        return HostedFile(data, str(meta["mime"]), float(meta["expires_at"]))

    def __bool__(self) -> bool:
        return True  # a store is a store, empty or not
