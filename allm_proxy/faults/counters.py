"""Per-session fault counters behind one tiny interface, so a shared store can replace them.

The state layer (memory or Redis, `allm_proxy/state/`) will provide the same
`incr`; until then this is the in-process implementation.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Counters(Protocol):
    """Atomic counters: `incr(key)` adds one and returns the new count (the first call gives 1)."""

    def incr(self, key: str) -> int: ...


class MemoryCounters:
    """`Counters` in this process's memory, safe across threads."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def incr(self, key: str) -> int:
        with self._lock:
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            return count
