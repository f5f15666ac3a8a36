"""`RedisState`: the state store every worker and replica shares, in Redis (`redis.asyncio`).

Hosted images are strings with a Redis TTL, counters are INCR (+ EXPIRE in
the same transaction); the journal (`journal.redis_journal`) uses `call` and
`script` for its capped list, its image bytes and its feed. A Redis that
stops answering turns into `StateUnavailableError` (503, retryable) within
about `timeout` seconds, never a guess; redis-py reconnects by itself, so the
proxy recovers as soon as Redis is back.

One client per event loop: redis-py's asyncio connections belong to the loop
that opened them, and an engine may run on more than one (the sync API's
background loop, `serve`'s start-up check).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry  # the asyncio one: redis-py 8 warns when given the sync Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from .. import errors
from .base import DEFAULT_JOURNAL_MAX, DEFAULT_PREFIX, StateStore

T = TypeVar("T")


class RedisState(StateStore):
    """Redis behind the `StateStore` interface.

    store = RedisState("redis://127.0.0.1:6379/0", prefix="allm:")
    """

    shared = True

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, journal_max: int = DEFAULT_JOURNAL_MAX, timeout: float = 2.0
    ) -> None:
        super().__init__(prefix=prefix, journal_max=journal_max)
        self.url = url
        self.timeout = timeout
        self._clients: dict[asyncio.AbstractEventLoop, Redis] = {}
        self._scripts: dict[tuple[int, str], Any] = {}  # the registered Lua scripts, per client
        self._lock = threading.Lock()

    def _client(self) -> Redis:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = Redis.from_url(
                    self.url,
                    socket_timeout=self.timeout,
                    socket_connect_timeout=self.timeout,
                    # One quick retry: the first command after a Redis restart meets a dead pooled connection.
                    retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
                    health_check_interval=0,
                )
                self._clients[loop] = client
            return client

    async def call(self, what: str, action: Callable[[Redis], Awaitable[T]]) -> T:
        """`action` with this loop's client; `StateUnavailableError` (saying `what` failed) when Redis fails."""
        try:
            return await action(self._client())
        except (RedisError, OSError, TimeoutError) as exc:
            raise errors.StateUnavailableError(
                f"The proxy's shared state store ({self.describe()}) did not answer while {what} "
                f"({type(exc).__name__}). Retry in a moment; if it persists, check that Redis is running "
                "and reachable at the proxy's --state-url."
            ) from None

    async def get(self, name: str) -> bytes | None:
        async def run(client: Redis) -> Any:
            return await client.get(self.key(name))

        value = await self.call("reading", run)
        return bytes(value) if value is not None else None

    async def set(self, name: str, value: bytes, *, ttl: float | None = None) -> None:
        async def run(client: Redis) -> Any:
            return await client.set(self.key(name), value, px=_ms(ttl) if ttl is not None else None)

        await self.call("writing", run)

    async def incr(self, name: str, *, ttl: float | None = None) -> int:
        key = self.key(name)

        async def run(client: Redis) -> Any:
            async with client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                if ttl is not None:
                    pipe.pexpire(key, _ms(ttl))
                return (await pipe.execute())[0]

        return int(await self.call("counting", run))

    async def incr_in_generation(self, generation: str, name: str, *, ttl: float | None = None) -> int:
        """One round trip (a Lua script) instead of a GET and a MULTI: a replay asks this once per request."""
        keys = [self.key(generation)]
        return int(await self.script("counting", _INCR_IN_GENERATION, keys, [self.key(name), _ms(ttl) if ttl else 0]))

    async def script(self, what: str, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run the Lua script `source` in one round trip (registered once per client: EVALSHA after)."""

        async def run(client: Redis) -> Any:
            script = self._scripts.get((id(client), source))
            if script is None:
                script = self._scripts[(id(client), source)] = client.register_script(source)
            return await script(keys=keys, args=args)

        return await self.call(what, run)

    async def delete(self, name: str) -> None:
        async def run(client: Redis) -> Any:
            return await client.delete(self.key(name))

        await self.call("deleting", run)

    async def ping(self) -> None:
        async def run(client: Redis) -> Any:
            return await client.ping()

        await self.call("answering a ping", run)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    def describe(self) -> str:
        parts = urlsplit(self.url)
        return f"redis://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


# `incr_in_generation` in one call. The counter's key is built in the script from the generation it
# reads, so a standalone Redis is assumed (a cluster would want the keys declared up front).
_INCR_IN_GENERATION = """
local generation = redis.call('GET', KEYS[1]) or '0'
local key = ARGV[1] .. '@' .. generation
local count = redis.call('INCR', key)
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', key, ARGV[2]) end
return count
"""
