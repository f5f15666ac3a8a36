"""The one state interface: everything that must be the same across workers and replicas.

Hosted images, replay cursors, fake-script cursors, fault counters and the
journal live behind `StateStore`, in process memory (`MemoryState`) or in
Redis (`RedisState`). Keys are plain strings; each store puts its namespace
prefix (``[state] prefix``, default ``allm:``) in front, so several proxies
can share one Redis. Every method may raise `errors.StateUnavailableError`
(a 503 the SDKs retry) when the store does not answer; nothing here ever
guesses an answer instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

DEFAULT_PREFIX = "allm:"
DEFAULT_JOURNAL_MAX = 1000


def generation_key(name: str, generation: int) -> str:
    """Where counter `name` lives in one generation (see `StateStore.incr_in_generation`)."""
    return f"{name}@{generation}"


class StateStore(ABC):
    """Async key/value and counters, namespaced by `prefix` (`journal_max`: the journal's cap there).

    store = MemoryState()
    await store.set("file:img_1", b"...", ttl=3600)
    n = await store.incr("fault:slow:times", ttl=60)      # 1, 2, 3 ...
    """

    #: True when other processes see the same state (Redis); False for process memory.
    shared: bool = False

    def __init__(self, *, prefix: str = DEFAULT_PREFIX, journal_max: int = DEFAULT_JOURNAL_MAX) -> None:
        self.prefix = prefix
        self.journal_max = journal_max

    def key(self, name: str) -> str:
        """The namespaced key `name` is stored under."""
        return self.prefix + name

    @abstractmethod
    async def get(self, name: str) -> bytes | None:
        """The value stored under `name`, or None (never set, deleted or expired)."""

    @abstractmethod
    async def set(self, name: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store `value`; it expires after `ttl` seconds when given."""

    @abstractmethod
    async def incr(self, name: str, *, ttl: float | None = None) -> int:
        """Add one to the counter `name` (0 when absent) and return the new value; `ttl` restarts its expiry."""

    async def incr_in_generation(self, generation: str, name: str, *, ttl: float | None = None) -> int:
        """`incr` of counter `name` in the current generation of counter `generation` (0 when absent):
        bumping the generation starts every such counter again. A store may do it in one round trip."""
        current = await self.get(generation)
        return await self.incr(generation_key(name, int(current or 0)), ttl=ttl)

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Forget `name`."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; `StateUnavailableError` otherwise (what `/readyz` asks)."""

    async def aclose(self) -> None:  # noqa: B027 - a store without connections has nothing to close
        """Close this event loop's connections (the store stays usable; it reconnects when used)."""

    def describe(self) -> str:
        """Where the state lives, for the `serve` banner (never with a password)."""
        return "memory"
