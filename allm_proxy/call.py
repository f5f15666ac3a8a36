"""One image call: what the client sent in, where it goes, and what came of it.

A `Call` is made once per request (by the server from its headers, by the
library API from its keyword arguments) and handed down through the engine to
the adapter. Each group of fields has one writer:

- what the client sent in: set when the call is made;
- `route`, `api_key` and `delivery`: set once by the engine, before the adapter runs;
- `status`, `bytes_out` and `ended`: set once by whoever answers the client.

The layers under the adapters (the cassette transport) see only the narrow
`CallScope` (session, cassette, secrets), set once by the engine around the
whole call, delivery and streaming included.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .capabilities import ModelFamily

if TYPE_CHECKING:
    from .faults import FaultDecision
    from .types import Usage

T = TypeVar("T")


# Request ids' own generator, seeded from os.urandom: a request id names a request and guards
# nothing, and uuid4's getrandom() was a syscall on every request. Not the `random` module's shared
# generator, which a test (or Hypothesis, for every example) reseeds, and the pytest plugin serves in
# the test's process: ids would repeat, and the journal keys its entries by them. A Mersenne
# Twister: whoever sees enough ids can predict the next, so nothing secret may come from it.
_request_ids = random.Random()
os.register_at_fork(after_in_child=_request_ids.seed)  # a forked child gets its own sequence


def new_request_id() -> str:
    return f"req_{_request_ids.getrandbits(128):032x}"


@dataclass(frozen=True)
class Route:
    """Where a request goes: provider, provider model, and the rules it follows.

    `model` is None when the client named no model and the provider applies its own
    default (OpenAI pass-through); the proxy then sends none.
    """

    provider: str
    model: str | None
    requested_model: str | None
    family: ModelFamily

    @property
    def label(self) -> str:
        """The model as error messages and logs name it."""
        return self.requested_model or "(none named; the provider's default)"


@dataclass(frozen=True)
class Delivery:
    """How the answer reaches the client, planned once by the engine before the adapter runs.

    `format` is the `response_format` the client gets (None: whatever the provider chose).
    `relay` lets the adapter hand back a big answer as a `RawBody` that streams through
    untouched, because nothing in it needs converting.
    """

    format: Literal["url", "b64_json"] | None
    relay: bool = False
    materialize_urls: bool = False


@dataclass(frozen=True)
class CallScope:
    """What the layers under an adapter may know of the call: which cassette, which replay
    session, and which values are secrets to keep out of recordings."""

    session: str = "default"
    cassette: str | None = None
    secrets: tuple[str, ...] = ()
    # The call's own list of upstream calls, for the layers under the adapter to note theirs in.
    upstream: list[dict[str, Any]] | None = None


# The `httpx.Request.extensions` key of the note each upstream call gets (a dict, also in `Call.upstream`):
# the layers under the adapter add what they know of it (the cassette layer: hit, miss or recorded).
UPSTREAM_NOTE = "allm_upstream_note"

current_scope: ContextVar[CallScope | None] = ContextVar("allm_proxy_call_scope", default=None)


@contextmanager
def scope(value: CallScope) -> Iterator[None]:
    """Make `value` the scope of the code inside (per task: concurrent calls never mix)."""
    token = current_scope.set(value)
    try:
        yield
    finally:
        current_scope.reset(token)


async def scoped(value: CallScope, events: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate `events` inside `value`: a stream is read later, by whoever answers the client."""
    with scope(value):
        async for event in events:
            yield event


@dataclass
class Call:
    """One image call. See the module docstring for who writes which field."""

    # -- what the client sent in ------------------------------------------------------------
    request_id: str = field(default_factory=new_request_id)
    session: str = "default"
    cassette: str | None = None
    # A key for this call only: the X-ALLM-Api-Key header, or `api_key=` in the library API.
    client_key: str | None = None
    # The client's own `Authorization: Bearer` token, the last resort for a provider key.
    client_bearer: str | None = None
    # Client headers the provider should see (OpenAI-Organization, OpenAI-Project).
    forward_headers: dict[str, str] = field(default_factory=dict)
    # Where hosted images are served (``http://127.0.0.1:8400/v1``); None in-process: data: URLs.
    public_base_url: str | None = None
    # True when the caller can pass a provider's answer through as it arrives (the server).
    can_relay: bool = False
    # The X-ALLM-Fault header as sent: faults for this request only.
    fault_header: str | None = None
    started: float = field(default_factory=time.perf_counter)

    # -- set once by the engine ------------------------------------------------------------------
    route: Route | None = None
    api_key: str | None = None
    delivery: Delivery | None = None
    # The fault injected into this call, if any (decided before the adapter, by `faults.intercept`).
    fault: FaultDecision | None = None

    # -- produced while it runs: each upstream call (method, redacted URL, status, ms, source) ---------
    upstream: list[dict[str, Any]] = field(default_factory=list)

    # -- set by whoever answers the client: the outcome, once; what the answer held, as it goes out --
    status: int | None = None
    bytes_out: int = 0
    ended: float | None = None
    images: int = 0
    usage: Usage | None = None
    cost_usd: float | None = None  # None: no price applies (the fake, an unknown model)

    @property
    def model(self) -> str | None:
        """The provider model to send (an alias resolved); None: let the provider choose."""
        return self._route().model

    @property
    def requested_model(self) -> str | None:
        """The name the client used, which answers echo."""
        return self._route().requested_model

    @property
    def family(self) -> ModelFamily:
        return self._route().family

    @property
    def relay(self) -> bool:
        return self.delivery is not None and self.delivery.relay

    def scope(self) -> CallScope:
        secrets = tuple(v for v in (self.api_key, *self.forward_headers.values()) if v)
        return CallScope(session=self.session, cassette=self.cassette, secrets=secrets, upstream=self.upstream)

    def finish(self, status: int) -> None:
        """Record the outcome once; later calls (a stream's cleanup after an error) change nothing."""
        if self.ended is None:
            self.status = status
            self.ended = time.perf_counter()

    @property
    def source(self) -> str | None:
        """Who answered: `fault`, `fake`, `upstream` or `cassette`; None when the proxy itself did
        (a bad request, a missing key). The journal and the metrics both read it."""
        if self.fault is not None and self.fault.replaces_answer:
            return "fault"
        if self.route is not None and self.route.provider == "fake":
            return "fake"
        sources = {note.get("source") for note in self.upstream}
        if "upstream" in sources:
            return "upstream"
        if "cassette" in sources:
            return "cassette"
        return None

    @property
    def upstream_seconds(self) -> float | None:
        """Time spent waiting on the provider itself (replays and faults take none)."""
        waited = [note["ms"] for note in self.upstream if note.get("source") == "upstream" and note.get("ms")]
        return sum(waited) / 1000 if waited else None

    @property
    def ms(self) -> float:
        return ((self.ended or time.perf_counter()) - self.started) * 1000

    def _route(self) -> Route:
        if self.route is None:
            raise RuntimeError("the call has no route yet: the engine routes it before the adapter runs")
        return self.route
