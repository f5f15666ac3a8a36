"""`MemoryState`: the state store of one process (the default without a state URL).

Expiry is checked when a key is read and swept now and then while writing;
stored bytes are bounded (`max_bytes`), the oldest values going first, so a
busy proxy hosting big images cannot grow without end.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from .base import DEFAULT_JOURNAL_MAX, DEFAULT_PREFIX, StateStore

_SWEEP_EVERY = 256  # writes between sweeps of expired keys


class MemoryState(StateStore):
    """Process memory behind the `StateStore` interface; safe from any thread and event loop."""

    shared = False

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        journal_max: int = DEFAULT_JOURNAL_MAX,
        max_bytes: int = 512 * 1024 * 1024,
    ) -> None:
        super().__init__(prefix=prefix, journal_max=journal_max)
        self.max_bytes = max_bytes
        # key -> (value, expires_at or None); insertion order is age order for eviction.
        self._values: OrderedDict[str, tuple[bytes | int, float | None]] = OrderedDict()
        self._bytes = 0
        self._writes = 0
        self._lock = threading.Lock()

    async def get(self, name: str) -> bytes | None:
        with self._lock:
            found = self._live(self.key(name))
            if found is None:
                return None
            return found if isinstance(found, bytes) else str(found).encode()

    async def set(self, name: str, value: bytes, *, ttl: float | None = None) -> None:
        with self._lock:
            self._store(self.key(name), bytes(value), ttl)
            while self._bytes > self.max_bytes and len(self._values) > 1:
                self._drop(next(iter(self._values)))

    async def incr(self, name: str, *, ttl: float | None = None) -> int:
        with self._lock:
            key = self.key(name)
            current = self._live(key)
            value = (int(current) if current is not None else 0) + 1
            self._store(key, value, ttl)
            return value

    async def delete(self, name: str) -> None:
        with self._lock:
            self._drop(self.key(name))

    async def ping(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._values)

    # -- under the lock ----------------------------------------------------------------------

    def _live(self, key: str) -> bytes | int | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= time.monotonic():
            self._drop(key)
            return None
        return value

    def _store(self, key: str, value: bytes | int, ttl: float | None) -> None:
        self._drop(key)
        self._values[key] = (value, time.monotonic() + ttl if ttl is not None else None)
        if isinstance(value, bytes):
            self._bytes += len(value)
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep()

    def _drop(self, key: str) -> None:
        entry = self._values.pop(key, None)
        if entry is not None and isinstance(entry[0], bytes):
            self._bytes -= len(entry[0])

    def _sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, expires) in self._values.items() if expires is not None and expires <= now]:
            self._drop(key)
