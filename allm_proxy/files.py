"""Images the proxy hosts for clients that asked for `response_format=url`.

Ids are 256-bit random tokens, so URLs cannot be guessed; entries expire
after `ttl` seconds (OpenAI's URLs last 60 minutes) and the store is bounded
in bytes, dropping the oldest first.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class HostedFile:
    data: bytes
    mime_type: str
    expires_at: float


class HostedFiles:
    def __init__(self, *, ttl: float = 3600.0, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, HostedFile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, data: bytes, mime_type: str) -> str:
        """Store the bytes; return the id to put in `/v1/images/files/{id}`."""
        file_id = "img_" + secrets.token_urlsafe(32)
        with self._lock:
            self._evict(time.monotonic())
            self._files[file_id] = HostedFile(data, mime_type, time.monotonic() + self.ttl)
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._files) > 1:
                self._drop_oldest()
        return file_id

    def get(self, file_id: str) -> HostedFile | None:
        with self._lock:
            self._evict(time.monotonic())
            return self._files.get(file_id)

    def __len__(self) -> int:
        return len(self._files)

    def _evict(self, now: float) -> None:
        while self._files:
            oldest = next(iter(self._files.values()))
            if oldest.expires_at > now:
                return
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, dropped = self._files.popitem(last=False)
        self._bytes -= len(dropped.data)
